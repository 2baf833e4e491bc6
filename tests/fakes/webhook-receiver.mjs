// A partner's webhook receiver for the tests (docs/webhooks.md): it checks every delivery with the
// Standard Webhooks' own JavaScript library (npm `standardwebhooks`, an implementation independent
// of the core's), and answers as told.
//
//   node tests/fakes/webhook-receiver.mjs PORT
//
//   PUT  /control   {"secret": "whsec_…", "fail_next": 2, "fail_status": 500, "fail_body": "…"}   what to
//                   verify with, how many deliveries to refuse next (after checking them), and with what
//                   ("delay_ms": each delivery answered that much later)
//   GET  /received  every delivery so far: {id, timestamp, signature, type, verified, error, answered, body}
//   GET  /stats     {"max_in_flight": the most deliveries it was answering at once}
//   POST any other path: a delivery. Not verified: 400. Verified, and a failure is asked for: that
//                   status. Otherwise 200.
import http from 'node:http';
import { Webhook } from 'standardwebhooks';

const port = Number(process.argv[2]);
let secret = null;
let failNext = 0;
let failStatus = 500;
let failBody = null;
let delayMs = 0;
let inFlight = 0;
let maxInFlight = 0;
const received = [];

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function answer(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

const server = http.createServer(async (req, res) => {
  const body = await readBody(req);
  if (req.url === '/control' && req.method === 'PUT') {
    const c = JSON.parse(body);
    if ('secret' in c) secret = c.secret;
    if ('fail_next' in c) failNext = c.fail_next;
    if ('fail_status' in c) failStatus = c.fail_status;
    if ('fail_body' in c) failBody = c.fail_body;
    if ('delay_ms' in c) delayMs = c.delay_ms;
    return answer(res, 200, { ok: true });
  }
  if (req.url === '/received' && req.method === 'GET') {
    return answer(res, 200, received);
  }
  if (req.url === '/stats' && req.method === 'GET') {
    return answer(res, 200, { max_in_flight: maxInFlight });
  }
  inFlight += 1;
  maxInFlight = Math.max(maxInFlight, inFlight);
  if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
  inFlight -= 1;
  const record = {
    path: req.url,
    id: req.headers['webhook-id'] ?? null,
    timestamp: req.headers['webhook-timestamp'] ?? null,
    signature: req.headers['webhook-signature'] ?? null,
    content_type: req.headers['content-type'] ?? null,
    type: null,
    verified: false,
    error: null,
    answered: 0,
    body,
  };
  received.push(record);
  try {
    if (!secret) throw new Error('no secret configured');
    const payload = new Webhook(secret).verify(body, req.headers);
    record.verified = true;
    record.type = payload.type;
  } catch (e) {
    record.error = String(e && e.message ? e.message : e);
    record.answered = 400;
    return answer(res, 400, { error: record.error });
  }
  if (failNext > 0) {
    failNext -= 1;
    record.answered = failStatus;
    if (failBody !== null) {
      res.writeHead(failStatus, { 'content-type': 'text/plain' });
      return res.end(failBody);
    }
    return answer(res, failStatus, { error: 'asked to fail' });
  }
  record.answered = 200;
  return answer(res, 200, { received: record.id });
});

server.listen(port, '127.0.0.1', () => console.log(`webhook receiver on ${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
