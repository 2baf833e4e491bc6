// Bounds and headers at the edge, in workerd: bodies over a route's limit are refused before they
// are read (declared length) or as they pass it (streamed); the core's routes refuse an unsigned
// call unread; pages carry a Content-Security-Policy that runs only the edge's asset files and cannot be framed;
// no answer can be sniffed into another type.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startEdge, newKey, keyBindings, coreClient, inventory, admit, coreSignature } from './harness.mjs';

const edgeKey = newKey('edge-test');
const coreKey = newKey('core-test');
let mf, url, core, publish;
before(async () => {
  mf = await startEdge(keyBindings(edgeKey, coreKey), { host: '127.0.0.1', port: 0 });
  url = (await mf.ready).toString().replace(/\/$/, '');
  ({ core, publish } = coreClient(mf, coreKey));
});
after(async () => { await mf.dispose(); });

async function problem(res) {
  assert.equal(res.headers.get('content-type'), 'application/problem+json');
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  return res.json();
}

// Declares a body of `size` bytes but sends only the first kilobyte and waits: an answer proves the
// edge decided without reading the body (had it tried, it would wait for the rest).
function send(method, path, headers, size) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, {
      method, headers: { ...headers, 'content-length': String(size), 'user-agent': 'workerd-tests/1' },
    }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => { req.destroy(); resolve({ status: res.statusCode, headers: res.headers, body }); });
    });
    req.on('error', () => {});
    setTimeout(() => { req.destroy(); reject(new Error('no answer: the edge waited for the body')); }, 10_000).unref();
    req.write(Buffer.alloc(1024));
  });
}

// POSTs `count` chunks of `size` bytes with Transfer-Encoding: chunked (no declared length); the
// edge may answer and close before it has them all.
function chunked(path, headers, count, size) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, {
      method: 'POST', headers: { ...headers, 'content-type': 'application/json', 'user-agent': 'workerd-tests/1' },
    }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', () => {});
    setTimeout(() => reject(new Error('no answer')), 10_000).unref();
    for (let i = 0; i < count; i++) req.write(Buffer.alloc(size, 32));
    req.end();
  });
}

test('oversized bodies are refused with 413, declared or streamed, and unsigned core calls unread', async () => {
  // 40 MB declared to the core's inventory route, with a well-formed fresh header of the core's key
  // (its signature can only be checked over the body, which is never read).
  const path = '/internal/v1/events/e1/inventory';
  const big = await send('PUT', path, { 'x-core-signature': coreSignature(coreKey, 'PUT', path, 'x') }, 40 * 1024 * 1024);
  assert.equal(big.status, 413);
  assert.equal(big.headers['content-type'], 'application/problem+json');
  assert.equal(JSON.parse(big.body).limit_bytes, 32 * 1024 * 1024);
  // A made-up header (another key, or stale) is refused before the body: nothing is read.
  for (const [header, reason] of [
    [coreSignature(newKey('someone'), 'PUT', path, 'x'), 'unknown-key'],
    [coreSignature(coreKey, 'PUT', path, 'x', { ts: Math.floor(Date.now() / 1000) - 3600 }), 'stale'],
    ['kid=x, ts=1, nonce=n, sig=s', 'malformed-signature'],
  ]) {
    const forged = await send('PUT', path, { 'x-core-signature': header }, 40 * 1024 * 1024);
    assert.equal(forged.status, 401);
    assert.equal(JSON.parse(forged.body).reason, reason);
  }
  // Unsigned: refused before the body is read, whatever its size.
  const unsigned = await mf.dispatchFetch('http://edge/internal/v1/events/e1/stats', { method: 'GET' });
  assert.equal(unsigned.status, 401);
  assert.equal((await problem(unsigned)).reason, 'unsigned');
  // A hold body streamed without a length: cut off as it passes 16 KiB.
  await publish(inventory('e-limits'));
  const { token } = await admit(mf, core, 'e-limits');
  const streamed = await chunked('/api/v1/events/e-limits/holds', { authorization: `Bearer ${token}` }, 64, 1024);
  assert.equal(streamed.status, 413);
  assert.equal(streamed.headers['content-type'], 'application/problem+json');
  assert.equal(JSON.parse(streamed.body).limit_bytes, 16 * 1024);
  const checkout = await mf.dispatchFetch('http://edge/api/v1/checkout', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(17 * 1024),
  });
  assert.equal(checkout.status, 413);
});

test('pages run only the edge\'s own asset files (no inline script or style) and cannot be framed', async () => {
  await publish(inventory('e-csp'));
  await core('PUT', '/internal/v1/events/e-csp/waiting-room', { version: 1, mode: 'fifo', bot: { check: { kind: 'proof_of_work', difficulty: 8 } } });
  const assets = new Set();
  for (const path of ['/events/e-csp', '/orders/00000000-0000-0000-0000-000000000001', '/transfers/00000000-0000-0000-0000-000000000001']) {
    const res = await mf.dispatchFetch(`http://edge${path}`, { headers: { accept: 'text/html', 'user-agent': 'Mozilla/5.0' } });
    const html = await res.text();
    const csp = res.headers.get('content-security-policy');
    assert.ok(csp, path);
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /style-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /default-src 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|nonce-/);
    assert.equal(res.headers.get('x-frame-options'), 'DENY');
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.doesNotMatch(html, /<style|style=/, `${path}: no inline style`);
    const scripts = html.match(/<script[^>]*>/g) ?? [];
    assert.ok(scripts.length >= 1, path);
    for (const tag of scripts) assert.match(tag, /src="\/assets\/[a-z]+\.[0-9a-f]{12}\.js"/, `${path}: ${tag}`);
    assert.doesNotMatch(html, /<script[^>]*>[^<]/, `${path}: no inline script`);
    for (const [, href] of html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)) assets.add(href);
  }
  // Each file is served immutable under its hash; an older hash still gets today's file, uncached.
  assert.ok(assets.size >= 4, [...assets].join(' '));
  for (const href of assets) {
    const res = await mf.dispatchFetch(`http://edge${href}`);
    assert.equal(res.status, 200, href);
    assert.match(res.headers.get('content-type'), href.endsWith('.css') ? /^text\/css/ : /^text\/javascript/);
    assert.match(res.headers.get('cache-control'), /immutable/);
    assert.ok((await res.text()).length > 50, href);
    const stale = await mf.dispatchFetch(`http://edge${href.replace(/\.[0-9a-f]{12}\./, '.000000000000.')}`);
    assert.equal(stale.status, 200);
    assert.equal(stale.headers.get('cache-control'), 'no-cache');
    await stale.text();
  }
  const missing = await mf.dispatchFetch('http://edge/assets/nothing.000000000000.js');
  assert.equal(missing.status, 404);
  assert.match(missing.headers.get('content-type'), /problem\+json/);
});
