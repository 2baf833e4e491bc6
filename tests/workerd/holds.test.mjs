// The edge's hold routes in workerd: buyers with admission tokens, the core with signed requests,
// sharded stadiums. Tokens and signatures are made here with node:crypto, independently of the
// Rust code, so these tests also prove the wire formats.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startEdge, newKey, keyBindings, admissionToken, signToken, readToken, coreSignature, inventory, coreClient, admit } from './harness.mjs';

const edgeKey = newKey('edge-test');
const coreKey = newKey('core-test');
let mf;
let core, publish;
before(async () => {
  mf = await startEdge(keyBindings(edgeKey, coreKey));
  ({ core, publish } = coreClient(mf, coreKey));
});
after(async () => { await mf.dispose(); });

async function buyer(method, path, token, body, headers = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  const res = await mf.dispatchFetch(`http://edge${path}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, type: res.headers.get('content-type'), body: await res.json() };
}


test('the core publishes an inventory with a signed request; unsigned, forged, stale and replayed ones are refused', async () => {
  const inv = inventory('evt-pub');
  const path = '/internal/v1/events/evt-pub/inventory';
  const unsigned = await core('PUT', path, inv, { signature: '' });
  assert.equal(unsigned.status, 401);
  assert.equal(unsigned.type, 'application/problem+json');
  assert.equal(unsigned.body.reason, 'unsigned');
  assert.equal((await core('PUT', path, inv, { signedBody: '{"other":1}' })).body.reason, 'bad-signature');
  assert.equal((await core('PUT', path, inv, { ts: Math.floor(Date.now() / 1000) - 600 })).body.reason, 'stale');
  const stranger = newKey('core-test');
  const forged = coreSignature(stranger, 'PUT', path, JSON.stringify(inv));
  assert.equal((await core('PUT', path, inv, { signature: forged })).body.reason, 'bad-signature');
  assert.equal((await buyer('GET', '/api/v1/events/evt-pub/availability')).status, 404, 'nothing was published');

  const signature = coreSignature(coreKey, 'PUT', path, JSON.stringify(inv));
  assert.equal((await core('PUT', path, inv, { signature })).status, 200);
  const replay = await core('PUT', path, inv, { signature });
  assert.equal(replay.status, 401);
  assert.equal(replay.body.reason, 'replayed');
  // A fresh push of the same version is an idempotent retry.
  assert.equal((await core('PUT', path, inv)).status, 200);
  const bad = inventory('evt-pub', { version: 2 });
  bad.seat_map.zones[0].price.currency = 'usd';
  const invalid = await core('PUT', path, bad);
  assert.equal(invalid.status, 400, JSON.stringify(invalid.body));
});

test('a buyer with an admission token holds seats and gets a hold token the core can verify offline', async () => {
  await publish(inventory('evt-buy'));
  const { token, visitor } = await admit(mf, core, 'evt-buy');
  const r = await buyer('POST', '/api/v1/events/evt-buy/holds', token, { kind: 'seats', seats: ['S0-0-3', 'S0-0-4'] }, { 'idempotency-key': 'k-1' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const { ok, header, claims } = readToken(r.body.hold_token, edgeKey.pub);
  assert.ok(ok, 'the hold token verifies with the edge public key');
  assert.deepEqual(header, { alg: 'EdDSA', kid: 'edge-test', typ: 'hold' });
  assert.equal(claims.aud, 'evt-buy');
  assert.equal(claims.sub, visitor);
  assert.equal(claims.jti, r.body.hold.id);
  assert.deepEqual(claims.seats, ['S0-0-3', 'S0-0-4']);
  assert.equal(claims.exp, Math.ceil(r.body.hold.expires_at / 1000));
  // A retry with the same key is the same hold; another body under it is a conflict.
  const retry = await buyer('POST', '/api/v1/events/evt-buy/holds', token, { kind: 'seats', seats: ['S0-0-3', 'S0-0-4'] }, { 'idempotency-key': 'k-1' });
  assert.equal(retry.status, 200);
  assert.equal(retry.body.hold.id, r.body.hold.id);
  const conflict = await buyer('POST', '/api/v1/events/evt-buy/holds', token, { kind: 'seats', seats: ['S0-0-5'] }, { 'idempotency-key': 'k-1' });
  assert.equal(conflict.status, 409);
  const availability = await buyer('GET', '/api/v1/events/evt-buy/availability');
  assert.equal(availability.body.seats.slice(3, 5), 'hh');
});

test('a seat hold names its seated tier and the hold token carries it; a tier the event does not sell seats under is refused', async () => {
  const inv = inventory('evt-tiers');
  const price = (amount_minor) => ({ amount_minor, currency: 'EUR' });
  inv.seat_map.seated_tiers = [
    { id: 'adult', name: 'Adult', prices: [{ zone: 'std', price: price(4500) }], capacity: 10 },
    { id: 'child', name: 'Child', prices: [{ zone: 'std', price: price(2000) }], capacity: 2 },
  ];
  await publish(inv);
  const { token } = await admit(mf, core, 'evt-tiers');
  const child = await buyer('POST', '/api/v1/events/evt-tiers/holds', token, { kind: 'seats', seats: ['S0-0-1'], tier: 'child' });
  assert.equal(child.status, 201, JSON.stringify(child.body));
  assert.equal(child.body.hold.seated_tier, 'child');
  assert.equal(readToken(child.body.hold_token, edgeKey.pub).claims.seated_tier, 'child');
  const best = await buyer('POST', '/api/v1/events/evt-tiers/holds', token, { kind: 'best_available', quantity: 1 });
  assert.equal(readToken(best.body.hold_token, edgeKey.pub).claims.seated_tier, 'adult', 'the first tier by default');
  for (const tier of ['floor', 'nope']) {
    const bad = await buyer('POST', '/api/v1/events/evt-tiers/holds', token, { kind: 'seats', seats: ['S0-0-5'], tier });
    assert.equal(bad.status, 422, JSON.stringify(bad.body));
    assert.equal(bad.type, 'application/problem+json');
  }
  // Two child seats in all: a third is refused, and the snapshot says what each tier has left.
  const more = await buyer('POST', '/api/v1/events/evt-tiers/holds', token, { kind: 'seats', seats: ['S0-0-6', 'S0-0-7'], tier: 'child' });
  assert.equal(more.status, 409, JSON.stringify(more.body));
  assert.equal(more.body.available, 1);
  const counts = await buyer('GET', '/api/v1/events/evt-tiers/availability?counts');
  assert.equal(counts.body.seats, '', 'counts only: no character per seat');
  assert.deepEqual(Object.fromEntries(counts.body.seated_tiers.map(([t, c]) => [t, c.available])), { adult: 8, child: 1 });
});

test('the seat map: every shard\'s seats in the snapshot\'s order, compact, with each seated tier\'s prices by zone', async () => {
  const inv = inventory('evt-map', { sections: 3, rows: 2, seats: 4, sharding: 'by_section' });
  inv.seat_map.sections[1].rows[0].seats[0].accessibility = ['wheelchair', 'hearing_loop'];
  inv.seat_map.sections[1].rows[0].seats[1].aisle_after = true;
  await publish(inv);
  const map = await buyer('GET', '/api/v1/events/evt-map/seatmap');
  assert.equal(map.status, 200, JSON.stringify(map.body));
  assert.deepEqual(map.body.sections.map((s) => s.id), ['S0', 'S1', 'S2']);
  assert.equal(map.body.sectioned, true);
  assert.deepEqual(map.body.sections[1].rows[0].seats[0], ['S1-0-0', '0', 0, 0, 0, 1 | 8]);
  assert.deepEqual(map.body.sections[1].rows[0].seats[1], ['S1-0-1', '1', 1, 0, 0, 32]);
  assert.deepEqual(map.body.seated_tiers, [{ id: null, name: 'Seat', prices: [4500] }], 'no seated tiers: the zones\' prices');
  assert.deepEqual(map.body.ga_tiers, [{ id: 'floor', name: 'Floor', price_minor: 3000, capacity: 5 }]);
  const seats = map.body.sections.flatMap((s) => s.rows.flatMap((r) => r.seats.map((x) => x[0])));
  const availability = await buyer('GET', '/api/v1/events/evt-map/availability');
  assert.equal(availability.body.seats.length, seats.length, 'one character of the snapshot per seat of the map');
  assert.equal((await buyer('GET', '/api/v1/events/nothing-here/seatmap')).status, 404);
});

test('forged, expired, wrong-event, wrong-kind and missing admission tokens are refused and change nothing', async () => {
  await publish(inventory('evt-tok'));
  const path = '/api/v1/events/evt-tok/holds';
  const body = { kind: 'seats', seats: ['S0-0-1'] };
  const cases = [
    [undefined, 'missing'],
    ['not.a.token', 'malformed'],
    [admissionToken(newKey('edge-test'), 'evt-tok', 'v'), 'bad-signature'],
    [admissionToken(newKey('edge-other'), 'evt-tok', 'v'), 'unknown-key'],
    [admissionToken(edgeKey, 'evt-tok', 'v', { iat: Math.floor(Date.now() / 1000) - 700 }), 'expired'],
    [admissionToken(edgeKey, 'evt-other', 'v'), 'wrong-event'],
    [signToken(edgeKey, 'hold', { iss: 'edge', aud: 'evt-tok', sub: 'v', iat: 0, exp: 9e9, jti: 'x' }), 'wrong-kind'],
    [admissionToken(edgeKey, 'evt-tok', 'v'), 'malformed'],
    [signToken(edgeKey, 'admission', { iss: 'edge', aud: 'evt-tok', sub: 'v', iat: Math.floor(Date.now() / 1000), exp: 9e9, jti: 'no-such-session', shard: 0, seq: 1, max_tickets: 6 }), 'session-ended'],
  ];
  for (const [token, reason] of cases) {
    const r = await buyer('POST', path, token, body);
    assert.equal(r.status, 401, reason);
    assert.equal(r.type, 'application/problem+json');
    assert.equal(r.body.reason, reason);
  }
  const availability = await buyer('GET', '/api/v1/events/evt-tok/availability');
  assert.equal(availability.body.version, 0, 'no refused request changed anything');
  const malformed = await buyer('POST', path, (await admit(mf, core, 'evt-tok')).token, { kind: 'seats', seats: 'S0-0-1' });
  assert.equal(malformed.status, 400);
});

test("a buyer releases their own hold, never another visitor's; the core confirms with a signed call", async () => {
  await publish(inventory('evt-rel'));
  const mine = (await admit(mf, core, 'evt-rel')).token;
  const theirs = (await admit(mf, core, 'evt-rel')).token;
  const a = (await buyer('POST', '/api/v1/events/evt-rel/holds', mine, { kind: 'seats', seats: ['S0-0-1'] })).body.hold;
  const b = (await buyer('POST', '/api/v1/events/evt-rel/holds', mine, { kind: 'seats', seats: ['S0-0-2'] })).body.hold;
  assert.equal((await buyer('DELETE', `/api/v1/events/evt-rel/holds/${a.id}`, theirs)).status, 404);
  assert.equal((await buyer('DELETE', `/api/v1/events/evt-rel/holds/${a.id}`, mine)).body.state, 'released');
  const unsigned = await buyer('POST', `/internal/v1/events/evt-rel/holds/${b.id}/confirm`, mine);
  assert.equal(unsigned.status, 401, 'a buyer cannot call the core routes');
  const confirmed = await core('POST', `/internal/v1/events/evt-rel/holds/${b.id}/confirm`);
  assert.equal(confirmed.body.state, 'sold');
  const again = await core('POST', `/internal/v1/events/evt-rel/holds/${b.id}/confirm`);
  assert.equal(again.body.state, 'sold', 'a duplicate confirmation changes nothing');
  assert.equal((await core('GET', `/internal/v1/events/evt-rel/holds/${b.id}`)).body.state, 'sold');
});

test('a stadium of 80,000 seats in 20 sections, sharded by section, with statistics summed across shards', async () => {
  const inv = inventory('stadium', { sections: 20, rows: 40, seats: 100, ga: 10000, sharding: 'by_section' });
  const published = await publish(inv);
  assert.equal(published.shards.length, 21);
  const { token } = await admit(mf, core, 'stadium');
  const path = '/api/v1/events/stadium/holds';
  const seats = await buyer('POST', path, token, { kind: 'seats', seats: ['S7-0-10', 'S7-0-11'], section: 'S7' });
  assert.equal(seats.status, 201, JSON.stringify(seats.body));
  assert.match(seats.body.hold.id, /^h7-/, 'the hold id names its shard');
  const best = await buyer('POST', path, token, { kind: 'best_available', quantity: 2, section: 'S12' });
  assert.equal(best.status, 201);
  assert.deepEqual(best.body.hold.seats, ['S12-0-49', 'S12-0-50']);
  const ga = await buyer('POST', path, token, { kind: 'general_admission', tier: 'floor', quantity: 3 });
  assert.equal(ga.status, 201);
  const unrouted = await buyer('POST', path, token, { kind: 'seats', seats: ['S3-0-1'] });
  assert.equal(unrouted.status, 422, 'a sectioned event needs the section');
  const wrongSection = await buyer('POST', path, token, { kind: 'seats', seats: ['S3-0-1'], section: 'S4' });
  assert.equal(wrongSection.status, 422);

  assert.equal((await buyer('DELETE', `/api/v1/events/stadium/holds/${best.body.hold.id}`, token)).body.state, 'released');
  await core('POST', `/internal/v1/events/stadium/holds/${seats.body.hold.id}/confirm`);
  const stats = await core('GET', '/internal/v1/events/stadium/stats');
  assert.equal(stats.status, 200);
  assert.deepEqual(stats.body.totals, { capacity: 90000, held: 3, sold: 2, available: 89995 });
  assert.equal(stats.body.stats.holds_placed, 3);
  assert.equal(stats.body.stats.holds_released, 1);
  assert.equal(stats.body.shards.length, 21);
  const availability = await buyer('GET', '/api/v1/events/stadium/availability');
  assert.equal(availability.body.seats.length, 80000);
  assert.equal(availability.body.seats[7 * 4000 + 10], 's');
});

test("the admission's ticket limit applies to holds: the smaller of it and the event's", async () => {
  await publish(inventory('evt-cap'));
  const { token } = await admit(mf, core, 'evt-cap', { max_tickets_per_buyer: 2 });
  const path = '/api/v1/events/evt-cap/holds';
  const three = await buyer('POST', path, token, { kind: 'seats', seats: ['S0-0-1', 'S0-0-2', 'S0-0-3'] });
  assert.equal(three.status, 409, JSON.stringify(three.body));
  assert.equal(three.body.limit, 2, 'the admission allows two, the event eight');
  assert.equal((await buyer('POST', path, token, { kind: 'seats', seats: ['S0-0-1', 'S0-0-2'] })).status, 201);
  const third = await buyer('POST', path, token, { kind: 'seats', seats: ['S0-0-3'] });
  assert.equal(third.status, 409);
  assert.equal(third.body.current, 2);
});

test('ten thousand refused holds under fresh keys leave the object bounded: rate-limited, few answers kept', async () => {
  await publish(inventory('evt-flood'));
  const { token } = await admit(mf, core, 'evt-flood');
  const before = (await core('GET', '/internal/v1/events/evt-flood/stats')).body.shards[0].stats;
  const statuses = {};
  let retryAfter;
  const started = Date.now();
  for (let batch = 0; batch < 100; batch++) {
    const answers = await Promise.all(Array.from({ length: 100 }, async (_, i) => {
      const res = await mf.dispatchFetch('http://edge/api/v1/events/evt-flood/holds', {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'idempotency-key': `flood-${batch}-${i}`, 'content-type': 'application/json' },
        body: JSON.stringify({ kind: 'seats', seats: ['no-such-seat'] }),
      });
      if (res.status === 429) retryAfter = res.headers.get('retry-after');
      await res.arrayBuffer();
      return res.status;
    }));
    for (const s of answers) statuses[s] = (statuses[s] ?? 0) + 1;
  }
  // 30 a minute: a slow machine whose flood spans a second window lets that window's 30 through too.
  const windows = 1 + Math.floor((Date.now() - started) / 60_000);
  const allowed = statuses[422];
  assert.ok(allowed >= 30 && allowed <= 30 * windows, `the visitor's rate over ${windows} window(s): ${JSON.stringify(statuses)}`);
  assert.equal(statuses[429], 10_000 - allowed);
  assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 60, retryAfter);
  const after = (await core('GET', '/internal/v1/events/evt-flood/stats')).body.shards[0].stats;
  assert.ok(after.remembered_answers <= 32, `answers kept: ${after.remembered_answers}`);
  assert.equal(after.rate_windows, 1);
  assert.ok(after.storage_bytes - before.storage_bytes < 64 * 1024, `storage grew ${after.storage_bytes - before.storage_bytes} B`);
  assert.ok(after.wasm_memory_bytes - before.wasm_memory_bytes <= 2 * 1024 * 1024, 'memory stays put');
  assert.ok(after.next_wake > Date.now(), 'the alarm is armed to forget them, with no hold live');
  assert.equal(after.next_expiry, null);
});
