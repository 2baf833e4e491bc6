// The edge's /healthz and the HealthProbe Durable Object, run in workerd (miniflare). The core is
// played by loopback peers that answer correctly, wrongly, or never, so that every branch of the
// edge's judgement runs in the real runtime. The real core is covered by tests/tests/health_chain.rs.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEdge, startPeer, coreHealth } from './harness.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

async function edgeWithCore(handler, bindings = {}) {
  const peer = await startPeer(handler);
  const mf = await startEdge({ CORE_URL: peer.url, ...bindings });
  cleanups.push(() => peer.close(), () => mf.dispose());
  return mf;
}

const json = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

test('all tiers ok: 200, tiers front to back, the database migration reported', async () => {
  const mf = await edgeWithCore((req, res) => {
    assert.equal(req.url, '/healthz');
    json(res, 200, coreHealth('ok'));
  });
  const res = await mf.dispatchFetch('http://edge/healthz');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('cache-control'), 'no-store');
  const report = await res.json();
  assert.equal(report.status, 'ok');
  assert.deepEqual(report.failing, []);
  assert.deepEqual(report.tiers.map((t) => t.tier), ['edge', 'durable_object', 'core', 'database']);
  assert.ok(report.tiers.every((t) => t.status === 'ok' && typeof t.latency_ms === 'number'));
  assert.equal(report.tiers[3].migration_version, 20261121000001);
});

test('the Durable Object writes a row and reads the same value back, keeping only the last 16', async () => {
  const mf = await startEdge();
  cleanups.push(() => mf.dispose());
  const ns = await mf.getDurableObjectNamespace('HEALTH_PROBE');
  const stub = ns.get(ns.idFromName('healthz'));
  let last;
  for (let i = 0; i < 20; i++) {
    const nonce = `n-${i}-${Math.random()}`;
    const res = await stub.fetch('https://probe/probe', { method: 'POST', body: JSON.stringify({ nonce, at_ms: Date.now() }) });
    assert.equal(res.status, 200);
    const read = await res.json();
    assert.equal(read.nonce, nonce);
    if (last) assert.equal(read.id, last.id + 1);
    last = read;
  }
  assert.equal(last.rows, 16);
});

test('the Durable Object refuses malformed probes and wrong methods with problem+json', async () => {
  const mf = await startEdge();
  cleanups.push(() => mf.dispose());
  const ns = await mf.getDurableObjectNamespace('HEALTH_PROBE');
  const stub = ns.get(ns.idFromName('healthz'));
  const bad = await stub.fetch('https://probe/probe', { method: 'POST', body: '{"nonce": 5' });
  assert.equal(bad.status, 400);
  assert.equal(bad.headers.get('content-type'), 'application/problem+json');
  assert.equal((await bad.json()).type, 'https://errors.ticketing.dev/malformed-request');
  const get = await stub.fetch('https://probe/probe');
  assert.equal(get.status, 405);
  // The refused probe wrote nothing: the next good one continues the row sequence by one.
  const a = await (await stub.fetch('https://probe/probe', { method: 'POST', body: '{"nonce":"a","at_ms":1}' })).json();
  const b = await (await stub.fetch('https://probe/probe', { method: 'POST', body: '{"nonce":"b","at_ms":2}' })).json();
  assert.equal(b.id, a.id + 1);
});

test('a core that never answers: 503 within the timeout, naming the core', async () => {
  const mf = await edgeWithCore(() => { /* accept and hang */ }, { HEALTH_TIMEOUT_MS: '300' });
  const started = Date.now();
  const res = await mf.dispatchFetch('http://edge/healthz');
  const report = await res.json();
  assert.equal(res.status, 503);
  assert.deepEqual(report.failing, ['core', 'database']);
  assert.match(report.tiers[2].detail, /no answer within 300 ms/);
  assert.equal(report.tiers[3].status, 'unknown');
  assert.ok(Date.now() - started < 5000, 'must not hang');
});

test('nothing listening on the core port: 503 naming the core', async () => {
  const peer = await startPeer(() => {});
  const url = peer.url;
  await peer.close();
  const mf = await startEdge({ CORE_URL: url });
  cleanups.push(() => mf.dispose());
  const res = await mf.dispatchFetch('http://edge/healthz');
  const report = await res.json();
  assert.equal(res.status, 503);
  assert.deepEqual(report.failing, ['core', 'database']);
  assert.equal(report.tiers[1].status, 'ok', 'the Durable Object is still fine');
});

test('a core whose database is down: 503 naming only the database', async () => {
  const mf = await edgeWithCore((req, res) => json(res, 503, coreHealth('down')));
  const res = await mf.dispatchFetch('http://edge/healthz');
  const report = await res.json();
  assert.equal(res.status, 503);
  assert.deepEqual(report.failing, ['database']);
  assert.match(report.tiers[3].detail, /ConnectionRefused/);
});

test('something else on the core port (not a health document): 503 naming the core', async () => {
  const mf = await edgeWithCore((req, res) => { res.writeHead(200); res.end('<html>hello</html>'); });
  const res = await mf.dispatchFetch('http://edge/healthz');
  const report = await res.json();
  assert.equal(res.status, 503);
  assert.deepEqual(report.failing, ['core', 'database']);
  assert.match(report.tiers[2].detail, /without a valid health document/);
});

test('unknown routes and wrong methods answer problem+json', async () => {
  const mf = await startEdge();
  cleanups.push(() => mf.dispose());
  const missing = await mf.dispatchFetch('http://edge/nope');
  assert.equal(missing.status, 404);
  assert.equal(missing.headers.get('content-type'), 'application/problem+json');
  const problem = await missing.json();
  assert.equal(problem.type, 'https://errors.ticketing.dev/not-found');
  assert.equal(problem.instance, '/nope');
  const post = await mf.dispatchFetch('http://edge/healthz', { method: 'POST' });
  assert.equal(post.status, 405);
});
