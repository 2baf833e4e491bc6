// Sends N requests to a local edge, each on a new connection (`new`) or over 16 kept-alive ones
// (`keep`), 16 at a time, and prints what came back ({"sent", "errors", "statuses"}): the
// experiment behind docs/reliability.md's finding that workerd's memory grows with the requests
// it has served, whatever they touch, and the soak's warm-up past that growth.
//   node loadtest/requests.mjs <port> <count> new|keep [path]
import http from 'node:http';
const [port, n, mode, path] = [process.argv[2], Number(process.argv[3]), process.argv[4], process.argv[5] ?? '/'];
if (!Number.isInteger(n) || n < 0 || !['new', 'keep'].includes(mode)) {
  console.error('usage: node loadtest/requests.mjs <port> <count> new|keep [path]');
  process.exit(2);
}
const agent = mode === 'keep' ? new http.Agent({ keepAlive: true, maxSockets: 16 }) : false;
let sent = 0;
let errors = 0;
const statuses = {};
function one() {
  return new Promise((resolve) => {
    const q = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
      res.resume();
      res.on('end', resolve);
    });
    q.on('error', () => { errors++; resolve(); });
  });
}
const workers = Array.from({ length: 16 }, async () => { while (sent < n) { sent++; await one(); } });
await Promise.all(workers);
console.log(JSON.stringify({ sent, errors, statuses }));
process.exit(0);
