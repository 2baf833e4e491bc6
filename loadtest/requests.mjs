// Sends N requests to a local edge, each on a new connection (`new`) or over 16 kept-alive ones
// (`keep`), 16 at a time: the experiment behind docs/reliability.md's finding that workerd's
// memory grows with the requests it has served, whatever they touch.
//   node loadtest/requests.mjs <port> <count> new|keep [path]
import http from 'node:http';
const [port, n, mode, path] = [process.argv[2], Number(process.argv[3]), process.argv[4], process.argv[5] ?? '/'];
const agent = mode === 'keep' ? new http.Agent({ keepAlive: true, maxSockets: 16 }) : false;
let done = 0;
async function one() { return new Promise((r) => { const q = http.get({ host: '127.0.0.1', port, path, agent }, (res) => { res.resume(); res.on('end', r); }); q.on('error', r); }); }
const workers = Array.from({ length: 16 }, async () => { while (done < n) { done++; await one(); } });
await Promise.all(workers); process.exit(0);
