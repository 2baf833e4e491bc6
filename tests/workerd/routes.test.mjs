// The edge's routing against its OpenAPI document (docs/edge-openapi.json), in workerd: the edge
// serves that very document; every documented operation is routed (never `404 no such route` or
// `405`); every other method on a documented path is `405` with an `Allow` naming exactly the
// documented ones; paths no route has are `404`. The answers themselves are checked against the
// document by schemathesis (tests/tests/api_fuzz.rs).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, startEdge, newKey, keyBindings } from './harness.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];
const document = JSON.parse(fs.readFileSync(path.join(ROOT, 'docs/edge-openapi.json'), 'utf8'));
const fill = (template) => template.replace('{event}', 'evt-routes').replace('{hold}', 'h0-0123abcd');

async function edge() {
  const mf = await startEdge(keyBindings(newKey('edge-1'), newKey('core-1')));
  cleanups.push(() => mf.dispose());
  return mf;
}

test('the edge serves its document from docs/, as JSON that may be cached', async () => {
  const mf = await edge();
  const res = await mf.dispatchFetch('http://edge/api/v1/openapi.json');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/json');
  assert.deepEqual(await res.json(), document);
  assert.equal(document.openapi, '3.1.0');
  assert.ok(Object.keys(document.paths).length >= 10);
});

test('every documented operation is routed, and every other method on its path is 405 with Allow', async () => {
  const mf = await edge();
  for (const [template, item] of Object.entries(document.paths)) {
    const documented = METHODS.filter((m) => item[m.toLowerCase()]);
    assert.ok(documented.length > 0, template);
    const url = `http://edge${fill(template)}`;
    for (const method of METHODS) {
      const res = await mf.dispatchFetch(url, { method, headers: { 'user-agent': 'routes-test/1' } });
      const body = await res.text();
      if (documented.includes(method)) {
        assert.notEqual(res.status, 405, `${method} ${template}: ${body}`);
        assert.ok(!(res.status === 404 && body.includes('no such route')), `${method} ${template} is not routed`);
      } else {
        assert.equal(res.status, 405, `${method} ${template} answered ${res.status}: ${body}`);
        assert.equal(res.headers.get('content-type'), 'application/problem+json');
        const allow = res.headers.get('allow').split(', ').filter((m) => m !== 'HEAD');
        assert.deepEqual(allow.sort(), [...documented].sort(), `${template}: Allow ${res.headers.get('allow')}`);
        assert.equal(JSON.parse(body).type, 'https://errors.ticketing.dev/method-not-allowed');
      }
    }
  }
});

test('the pages and forwarded routes name their methods too; a path no route has is 404', async () => {
  const mf = await edge();
  const cases = [
    ['/', 'POST', 'GET, HEAD'],
    ['/events/evt-routes/join', 'GET', 'POST'],
    ['/events/evt-routes/buy', 'DELETE', 'GET, HEAD'],
    ['/api/v1/checkout', 'GET', 'POST'],
    ['/api/v1/orders/ord-1/tickets', 'POST', 'GET'],
    ['/api/v1/orders/ord-1/tickets/t-1/transfer/cancel', 'GET', 'POST'],
    ['/api/v1/transfers/tr-1/qr.svg', 'PUT', 'GET'],
    ['/my-tickets', 'POST', 'GET, HEAD'],
    ['/series/s-1', 'DELETE', 'GET, HEAD'],
    ['/api/v1/buyer/sign-in', 'GET', 'POST'],
    ['/api/v1/buyer/orders', 'DELETE', 'GET'],
  ];
  for (const [p, method, allow] of cases) {
    const res = await mf.dispatchFetch(`http://edge${p}`, { method });
    assert.equal(res.status, 405, `${method} ${p}`);
    assert.equal(res.headers.get('allow'), allow, p);
  }
  // A method the runtime does not know (worker-rs would read it as GET) is no route's.
  for (const [p, allow] of [['/api/v1/events/evt-routes/availability', 'GET'], ['/healthz', 'GET, HEAD']]) {
    const res = await mf.dispatchFetch(`http://edge${p}`, { method: 'QUERY' });
    assert.equal(res.status, 405, `QUERY ${p}`);
    assert.equal(res.headers.get('allow'), allow);
  }
  for (const p of ['/nope', '/api/v1/orders/ord-1/nope', '/api/v1/events/evt-routes/nope', '/events/evt-routes/nope', '/api/v1/transfers']) {
    for (const method of ['GET', 'POST']) {
      const res = await mf.dispatchFetch(`http://edge${p}`, { method });
      assert.equal(res.status, 404, `${method} ${p}`);
      assert.equal((await res.json()).type, 'https://errors.ticketing.dev/not-found');
    }
  }
});
