// The buyer's checkout as the edge forwards it to the core, in workerd: the edge extends the
// buyer's hold for payment on the way and hands the core a hold token signed again that says so
// (the core then starts the payment without a call of its own to the edge); a quote, a body the
// core could not take, and a hold that is gone go on as they came. The core is a loopback peer
// that records what it is sent. Tokens are read here with node:crypto, independently of the Rust
// code.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startEdge, startPeer, newKey, keyBindings, readToken, inventory, coreClient, admit } from './harness.mjs';

const edgeKey = newKey('edge-test');
const coreKey = newKey('core-test');
let mf, peer, core, publish;
const sent = [];

before(async () => {
  peer = await startPeer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      sent.push({ method: req.method, url: req.url, body: body ? JSON.parse(body) : null });
      res.writeHead(req.url.startsWith('/api/v1/checkout') ? 201 : 200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  mf = await startEdge({ ...keyBindings(edgeKey, coreKey), CORE_URL: peer.url });
  ({ core, publish } = coreClient(mf, coreKey));
});
after(async () => { await mf.dispose(); await peer.close(); });

async function post(path, body, headers = {}) {
  const res = await mf.dispatchFetch(`http://edge${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res.status;
}

// A buyer of a fresh event holding one seat: its hold token and the hold as the edge answered it.
async function holding(event) {
  await publish(inventory(event));
  const { token } = await admit(mf, core, event);
  const place = () => mf.dispatchFetch(`http://edge/api/v1/events/${event}/holds`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': 'place-1' },
    body: JSON.stringify({ kind: 'seats', seats: [`S0-0-1`] }),
  });
  const res = await place();
  const held = await res.json();
  assert.equal(res.status, 201, JSON.stringify(held));
  return { ...held, place };
}

const holdAt = async (event, hold) => (await core('GET', `/internal/v1/events/${event}/holds/${hold}`)).body;

test('a checkout extends the buyer\'s hold once on its way and hands the core a token signed again that says so', async () => {
  const event = 'co-extend';
  const held = await holding(event);
  const before = readToken(held.hold_token, edgeKey.pub).claims;
  assert.equal(before.extended, undefined, 'a new hold is not extended');
  const body = { hold_token: held.hold_token, email: 'b@example.test' };
  assert.equal(await post('/api/v1/checkout', body, { 'idempotency-key': 'k1' }), 201);
  const forwarded = sent.at(-1);
  assert.equal(forwarded.url, '/api/v1/checkout');
  assert.equal(forwarded.body.email, 'b@example.test', 'the rest of the body as sent');
  const token = readToken(forwarded.body.hold_token, edgeKey.pub);
  assert.ok(token.ok, 'signed by the edge');
  assert.equal(token.header.kid, 'edge-test');
  assert.equal(token.claims.extended, true);
  assert.equal(token.claims.jti, before.jti);
  assert.equal(token.claims.expires_at_ms, held.hold.expires_at + 60_000, 'extended by the event\'s extension_seconds');
  assert.equal(token.claims.exp, Math.ceil(token.claims.expires_at_ms / 1000));
  const hold = await holdAt(event, held.hold.id);
  assert.equal(hold.extended, true);
  assert.equal(hold.expires_at, token.claims.expires_at_ms);

  // A retry: the hold is not extended again, and the core gets the same expiry.
  assert.equal(await post('/api/v1/checkout', body, { 'idempotency-key': 'k1' }), 201);
  const again = readToken(sent.at(-1).body.hold_token, edgeKey.pub).claims;
  assert.equal(again.extended, true);
  assert.equal(again.expires_at_ms, token.claims.expires_at_ms);
  assert.equal((await holdAt(event, held.hold.id)).expires_at, token.claims.expires_at_ms);

  // The buyer never holds a token that says `extended`: the core trusts it to mean the hold was
  // live when signed. A replay of the placement answers the extended hold with a plain token.
  const replayed = await (await held.place()).json();
  assert.equal(replayed.replayed, true);
  assert.equal(replayed.hold.extended, true);
  const plain = readToken(replayed.hold_token, edgeKey.pub).claims;
  assert.equal(plain.extended, undefined);
});

test('a quote, a checkout the core could not take, and a released hold go on as they came, extending nothing', async () => {
  const event = 'co-asis';
  const held = await holding(event);
  assert.equal(await post('/api/v1/checkout/quote', { hold_token: held.hold_token }), 201);
  assert.equal(sent.at(-1).body.hold_token, held.hold_token, 'a quote extends nothing');
  assert.equal(await post('/api/v1/checkout', { hold_token: held.hold_token, email: 'nope' }, { 'idempotency-key': 'k2' }), 201);
  assert.equal(sent.at(-1).body.hold_token, held.hold_token, 'no e-mail address: the core refuses it');
  assert.equal(await post('/api/v1/checkout', { hold_token: held.hold_token, email: 'b@example.test' }), 201);
  assert.equal(sent.at(-1).body.hold_token, held.hold_token, 'no Idempotency-Key: the core refuses it');
  assert.equal((await holdAt(event, held.hold.id)).extended, false);

  // Released: the token goes on unchanged, and the core says why it cannot sell.
  const { token } = await admit(mf, core, event);
  const other = await mf.dispatchFetch(`http://edge/api/v1/events/${event}/holds`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ kind: 'seats', seats: ['S0-0-2'] }),
  });
  const theirs = await other.json();
  const released = await mf.dispatchFetch(`http://edge/api/v1/events/${event}/holds/${theirs.hold.id}`, {
    method: 'DELETE', headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(released.status, 200);
  assert.equal(await post('/api/v1/checkout', { hold_token: theirs.hold_token, email: 'c@example.test' }, { 'idempotency-key': 'k3' }), 201);
  assert.equal(sent.at(-1).body.hold_token, theirs.hold_token);
  assert.equal((await holdAt(event, theirs.hold.id)).state, 'released');
});

test('an order\'s long poll reaches the core with its query', async () => {
  const res = await mf.dispatchFetch('http://edge/api/v1/orders/0b5c1f2e-3c8a-4a57-9a54-8d8f3f2b8a10?wait=20&while=awaiting_payment,confirming', {
    headers: { authorization: 'Bearer x' },
  });
  await res.arrayBuffer();
  assert.equal(res.status, 200);
  assert.equal(sent.at(-1).url, '/api/v1/orders/0b5c1f2e-3c8a-4a57-9a54-8d8f3f2b8a10?wait=20&while=awaiting_payment,confirming');
});
