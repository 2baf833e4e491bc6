// The box office's holds in workerd (docs/box-office.md): the core places a hold for a walk-up
// buyer with a signed request, without the line or an admission; the inventory takes it only for a
// box-office visitor, routes it to the shard its section names, answers a retry with its key the
// same hold, lets a group past the per-buyer limit (not past the largest hold), and the seats are
// then as any hold's: taken from sale, confirmed by the core, released.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startEdge, newKey, keyBindings, inventory, coreClient, admit } from './harness.mjs';

const edgeKey = newKey('edge-test');
const coreKey = newKey('core-test');
let mf;
let core, publish;
before(async () => {
  mf = await startEdge(keyBindings(edgeKey, coreKey));
  ({ core, publish } = coreClient(mf, coreKey));
});
after(async () => { await mf.dispose(); });

const place = (event, body) => core('POST', `/internal/v1/events/${event}/holds`, body);
const clerk = (n) => `box-office_${String(n).padStart(8, '0')}`;

test('the core holds seats for the box office without the line; a retry with its key is the same hold', async () => {
  await publish(inventory('evt-bo', { seats: 10 }));
  const request = { kind: 'seats', seats: ['S0-0-1', 'S0-0-2'] };
  const r = await place('evt-bo', { visitor: clerk(1), request, idempotency_key: 'desk-1' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal(r.body.replayed, false);
  assert.equal(r.body.hold.state, 'held');
  assert.deepEqual(r.body.hold.seats, ['S0-0-1', 'S0-0-2']);
  assert.equal(r.body.hold.visitor, clerk(1));
  const again = await place('evt-bo', { visitor: clerk(1), request, idempotency_key: 'desk-1' });
  assert.equal(again.status, 200);
  assert.equal(again.body.replayed, true);
  assert.equal(again.body.hold.id, r.body.hold.id);

  // The seats are off sale for buyers now.
  const avail = await (await mf.dispatchFetch('http://edge/api/v1/events/evt-bo/availability')).json();
  const { token } = await admit(mf, core, 'evt-bo');
  const taken = await mf.dispatchFetch('http://edge/api/v1/events/evt-bo/holds', {
    method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ kind: 'seats', seats: ['S0-0-2'] }),
  });
  assert.equal(taken.status, 409);
  assert.equal((await taken.json()).reason, 'seats_unavailable');
  assert.ok(avail.version >= 1);

  // The core reads it and sells it, as any hold.
  const hold = r.body.hold.id;
  const read = await core('GET', `/internal/v1/events/evt-bo/holds/${hold}`);
  assert.equal(read.status, 200);
  assert.equal(read.body.visitor, clerk(1));
  const sold = await core('POST', `/internal/v1/events/evt-bo/holds/${hold}/confirm`, {});
  assert.equal(sold.status, 200, JSON.stringify(sold.body));
  assert.equal(sold.body.state, 'sold');

  // Another hold, released by the core: its seat is for sale again.
  const other = await place('evt-bo', { visitor: clerk(2), request: { kind: 'best_available', quantity: 1 } });
  assert.equal(other.status, 201, JSON.stringify(other.body));
  const released = await core('POST', `/internal/v1/events/evt-bo/holds/${other.body.hold.id}/release`);
  assert.equal(released.status, 200, JSON.stringify(released.body));
  assert.equal(released.body.state, 'released');
});

test('only a box-office visitor, a well-formed request, and a group up to the largest hold', async () => {
  await publish(inventory('evt-bo-rules', { seats: 60, ga: 100 }));
  const buyerLike = await place('evt-bo-rules', { visitor: 'v0123456789abcdef', request: { kind: 'general_admission', tier: 'floor', quantity: 1 } });
  assert.equal(buyerLike.status, 422, JSON.stringify(buyerLike.body));
  assert.equal(buyerLike.type, 'application/problem+json');
  const malformed = await place('evt-bo-rules', { visitor: clerk(3), request: { kind: 'teleport' } });
  assert.equal(malformed.status, 400, JSON.stringify(malformed.body));
  const noVisitor = await place('evt-bo-rules', { request: { kind: 'general_admission', tier: 'floor', quantity: 1 } });
  assert.equal(noVisitor.status, 400);

  // A school's group of 20 (the per-buyer limit is 8); never more than the largest hold (50).
  const group = await place('evt-bo-rules', { visitor: clerk(4), request: { kind: 'general_admission', tier: 'floor', quantity: 20 } });
  assert.equal(group.status, 201, JSON.stringify(group.body));
  assert.deepEqual(group.body.hold.ga, { tier: 'floor', quantity: 20 });
  const tooMany = await place('evt-bo-rules', { visitor: clerk(5), request: { kind: 'general_admission', tier: 'floor', quantity: 51 } });
  assert.equal(tooMany.status, 422, JSON.stringify(tooMany.body));
  assert.equal(tooMany.body.reason, 'bad_quantity');

  // No hold rate for the core's holds (a buyer's is 30 a minute): a clerk's are bounded by the core.
  for (let i = 0; i < 35; i++) {
    const r = await place('evt-bo-rules', { visitor: clerk(6), request: { kind: 'general_admission', tier: 'floor', quantity: 1 } });
    assert.equal(r.status, 201, `hold ${i}: ${JSON.stringify(r.body)}`);
  }

  // Unsigned, it is not the core's.
  const unsigned = await core('POST', '/internal/v1/events/evt-bo-rules/holds', { visitor: clerk(7), request: { kind: 'general_admission', tier: 'floor', quantity: 1 } }, { signature: '' });
  assert.equal(unsigned.status, 401);
});

test('a box-office hold of a stadium sold by section goes to its section\'s shard', async () => {
  await publish(inventory('evt-bo-shards', { sections: 3, seats: 4, sharding: 'by_section' }));
  const r = await place('evt-bo-shards', { visitor: clerk(8), request: { kind: 'seats', section: 'S2', seats: ['S2-0-1'] } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const hold = r.body.hold.id;
  const read = await core('GET', `/internal/v1/events/evt-bo-shards/holds/${hold}`);
  assert.equal(read.status, 200);
  assert.deepEqual(read.body.seats, ['S2-0-1']);
  const unnamed = await place('evt-bo-shards', { visitor: clerk(9), request: { kind: 'seats', seats: ['S1-0-1'] } });
  assert.equal(unnamed.status, 422, 'a sectioned event needs the section');
});
