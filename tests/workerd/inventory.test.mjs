// The InventoryObject Durable Object in workerd (miniflare), called directly as the edge Worker
// calls it (with the x-caller header the edge sets after authenticating). Invariants under real
// concurrency, alarm-driven expiry, and a restart of the runtime with persisted storage.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEdge } from './harness.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

function inventory({ event = 'evt1', version = 1, holdSeconds = 600, seats = 10, ga = 5, limit = 8 } = {}) {
  const zone = 'std';
  return {
    event, version, currency: 'EUR',
    seat_map: {
      sections: [{ id: 'A', name: 'Section A', rows: [{ label: '1', seats: Array.from({ length: seats }, (_, n) => ({ id: `A-1-${n}`, label: `${n}`, x: n, y: 0, zone })) }] }],
      zones: [{ id: zone, name: 'Standard', price: { amount_minor: 4500, currency: 'EUR' } }],
      ga_tiers: ga ? [{ id: 'floor', name: 'Floor', capacity: ga, price: { amount_minor: 3000, currency: 'EUR' } }] : [],
    },
    settings: { hold_seconds: holdSeconds, extension_seconds: 60, max_tickets_per_visitor: limit },
  };
}

// Storage that outlives the runtime: `start(bindings)` starts workerd on it, again after a
// `dispose()` (a restart); the directory goes when the tests end.
function persisted(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return { dir, start: (bindings = {}) => startEdge(bindings, { durableObjectsPersist: dir }) };
}

async function objectFor(mf, name) {
  const ns = await mf.getDurableObjectNamespace('INVENTORY');
  const stub = ns.get(ns.idFromName(name));
  const call = async (method, p, caller, body, nonce) => {
    const headers = caller ? { 'x-caller': caller } : {};
    // The edge passes the core request's nonce along; the object refuses to see one twice.
    if (caller === 'core' && method !== 'GET') headers['x-core-nonce'] = nonce ?? `n-${Math.random()}`;
    const res = await stub.fetch(`https://inventory${p}`, { method, headers, body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)) });
    const text = await res.text();
    let json; try { json = JSON.parse(text); } catch { json = text; }
    return { status: res.status, type: res.headers.get('content-type'), body: json };
  };
  return call;
}

async function freshObject(name, inv) {
  const mf = await startEdge();
  cleanups.push(() => mf.dispose());
  const call = await objectFor(mf, name);
  const put = await call('PUT', '/inventory', 'core', inv);
  assert.equal(put.status, 200, JSON.stringify(put.body));
  return { mf, call };
}

const hold = (seats, key) => ({ request: { kind: 'seats', seats }, ...(key ? { idempotency_key: key } : {}) });

test('only the core may set the inventory; a bad one is refused naming the field, and changes nothing', async () => {
  const mf = await startEdge();
  cleanups.push(() => mf.dispose());
  const call = await objectFor(mf, 'evt-auth');
  assert.equal((await call('PUT', '/inventory', undefined, inventory())).status, 401);
  const asVisitor = await call('PUT', '/inventory', 'visitor v1', inventory());
  assert.equal(asVisitor.status, 403);
  const bad = inventory();
  bad.seat_map.sections[0].rows[0].seats[3].zone = 'nope';
  const refused = await call('PUT', '/inventory', 'core', bad);
  assert.equal(refused.status, 422);
  assert.equal(refused.type, 'application/problem+json');
  assert.equal(refused.body.errors[0].field, 'seat_map.sections[0].rows[0].seats[3].zone');
  assert.equal((await call('GET', '/availability', 'visitor v1')).status, 404, 'nothing was stored');
  assert.equal((await call('PUT', '/inventory', 'core', '{"event":')).status, 400);
});

test('many concurrent buyers racing for the same seats: exactly one wins each seat', async () => {
  const { call } = await freshObject('evt-race', inventory({ seats: 6 }));
  const racers = 40;
  const results = await Promise.all(Array.from({ length: racers }, (_, i) =>
    call('POST', '/holds', `visitor r${i}`, hold(i % 2 ? ['A-1-1', 'A-1-2'] : ['A-1-2', 'A-1-3']))));
  const won = results.filter((r) => r.status === 201);
  assert.equal(won.length, 1, `winners: ${won.length}`);
  for (const r of results.filter((r) => r.status !== 201)) {
    assert.equal(r.status, 409);
    assert.equal(r.body.reason, 'seats_unavailable');
  }
  // And for GA places: 5 of capacity, 30 racers for one each.
  const ga = await Promise.all(Array.from({ length: 30 }, (_, i) =>
    call('POST', '/holds', `visitor g${i}`, { request: { kind: 'general_admission', tier: 'floor', quantity: 1 } })));
  assert.equal(ga.filter((r) => r.status === 201).length, 5);
  const availability = (await call('GET', '/availability', 'visitor x')).body;
  assert.equal(availability.tiers[0][1].available, 0);
  assert.equal(availability.seats.split('').filter((c) => c === 'h').length, 2);
});

test('an idempotency key gives the same answer to a retry and a conflict to another body', async () => {
  const { call } = await freshObject('evt-idem', inventory());
  const first = await call('POST', '/holds', 'visitor v1', hold(['A-1-4'], 'key-1'));
  assert.equal(first.status, 201);
  const retry = await call('POST', '/holds', 'visitor v1', hold(['A-1-4'], 'key-1'));
  assert.equal(retry.status, 200);
  assert.equal(retry.body.replayed, true);
  assert.equal(retry.body.hold.id, first.body.hold.id);
  const other = await call('POST', '/holds', 'visitor v1', hold(['A-1-5'], 'key-1'));
  assert.equal(other.status, 409);
  assert.equal(other.body.reason, 'idempotency_conflict');
  const stats = (await call('GET', '/stats', 'core')).body;
  assert.equal(stats.stats.holds_placed, 1);
});

test('malformed bodies and wrong callers are refused with problem+json and change nothing', async () => {
  const { call } = await freshObject('evt-bad', inventory());
  const before = (await call('GET', '/availability', 'visitor v1')).body.version;
  for (const body of ['{"request":', '{"request":{"kind":"seats","seats":"A-1-1"}}', '[]', '{"request":{"kind":"teleport"}}']) {
    const r = await call('POST', '/holds', 'visitor v1', body);
    assert.equal(r.status, 400, body);
    assert.equal(r.type, 'application/problem+json');
  }
  const unknown = await call('POST', '/holds', 'visitor v1', hold(['Z-9-9']));
  assert.equal(unknown.status, 422);
  assert.equal(unknown.body.reason, 'unknown_seat');
  const placed = await call('POST', '/holds', 'visitor v1', hold(['A-1-1']));
  assert.equal((await call('POST', `/holds/${placed.body.hold.id}/confirm`, 'visitor v1')).status, 403, 'only the core confirms');
  assert.equal((await call('DELETE', `/holds/${placed.body.hold.id}`, 'visitor v2')).status, 404, "another visitor's hold is not found");
  assert.equal((await call('GET', '/availability', 'visitor v1')).body.version, before + 1, 'only the one good hold changed anything');
});

test('the core extends, confirms (twice, harmlessly) and returns; a sold seat is never held again', async () => {
  const { call } = await freshObject('evt-sell', inventory());
  const placed = (await call('POST', '/holds', 'visitor v1', hold(['A-1-1', 'A-1-2']))).body.hold;
  const extended = await call('POST', `/holds/${placed.id}/extend`, 'core');
  assert.equal(extended.body.expires_at, placed.expires_at + 60_000);
  assert.equal((await call('POST', `/holds/${placed.id}/extend`, 'core')).body.reason, 'already_extended');
  assert.equal((await call('POST', `/holds/${placed.id}/confirm`, 'core')).body.state, 'sold');
  assert.equal((await call('POST', `/holds/${placed.id}/confirm`, 'core')).body.state, 'sold');
  assert.equal((await call('POST', '/holds', 'visitor v2', hold(['A-1-2']))).status, 409);
  const returned = await call('POST', `/holds/${placed.id}/return`, 'core', { seats: ['A-1-2'] });
  assert.deepEqual(returned.body.returned_seats, ['A-1-2']);
  assert.equal((await call('POST', '/holds', 'visitor v2', hold(['A-1-2']))).status, 201);
});

test('a hold expires by alarm, with no client request, and its seats return within a second', async () => {
  const { call } = await freshObject('evt-expiry', inventory({ holdSeconds: 1 }));
  const placed = (await call('POST', '/holds', 'visitor v1', hold(['A-1-7']))).body.hold;
  await new Promise((r) => setTimeout(r, 2500));
  // Reads do not expire anything: only the alarm can have released the seat.
  const h = (await call('GET', `/holds/${placed.id}`, 'core')).body;
  assert.equal(h.state, 'expired');
  assert.ok(h.ended_at - h.expires_at < 1000, `expired ${h.ended_at - h.expires_at} ms late`);
  const availability = (await call('GET', '/availability', 'visitor v2')).body;
  assert.equal(availability.seats[7], 'a');
  assert.equal((await call('GET', '/stats', 'core')).body.stats.holds_expired, 1);
});

test('holds and their alarm survive a restart of the runtime', async () => {
  const { start } = persisted('inventory-persist');
  const first = await start();
  let call = await objectFor(first, 'evt-restart');
  assert.equal((await call('PUT', '/inventory', 'core', inventory({ holdSeconds: 3 }))).status, 200);
  const shortHold = (await call('POST', '/holds', 'visitor v1', hold(['A-1-1']))).body.hold;
  const longHold = (await call('POST', '/holds', 'visitor v2', hold(['A-1-3']))).body.hold;
  await call('POST', `/holds/${longHold.id}/extend`, 'core'); // now 63 s
  const sold = (await call('POST', '/holds', 'visitor v3', hold(['A-1-2']))).body.hold;
  await call('POST', `/holds/${sold.id}/confirm`, 'core');
  await first.dispose();

  const second = await start();
  cleanups.push(() => second.dispose());
  // No request until past the short hold's expiry: only the persisted alarm can expire it.
  await new Promise((r) => setTimeout(r, Math.max(0, shortHold.expires_at - Date.now()) + 1500));
  call = await objectFor(second, 'evt-restart');
  const expired = (await call('GET', `/holds/${shortHold.id}`, 'core')).body;
  assert.equal(expired.state, 'expired', 'the alarm fired after the restart without any request');
  assert.ok(expired.ended_at - expired.expires_at < 1500, `${expired.ended_at - expired.expires_at} ms late`);
  assert.equal((await call('GET', `/holds/${longHold.id}`, 'core')).body.state, 'held', 'the acknowledged hold survived');
  assert.equal((await call('POST', '/holds', 'visitor v4', hold(['A-1-3']))).status, 409);
  assert.equal((await call('GET', `/holds/${sold.id}`, 'core')).body.state, 'sold');
  assert.equal((await call('GET', '/availability', 'visitor v4')).body.seats.slice(1, 4), 'ash');
});
test('a hold is one storage write, its key\'s answer included; what the meta did not record comes back after a restart', async () => {
  const { start } = persisted('inventory-writes');
  const first = await start();
  let call = await objectFor(first, 'evt-writes');
  assert.equal((await call('PUT', '/inventory', 'core', inventory())).status, 200);
  const stats = async () => (await call('GET', '/stats', 'core')).body;
  const writes = async () => (await stats()).storage_writes;
  let before = await writes();
  const wrote = async (expected, what) => {
    const now = await writes();
    assert.equal(now - before, expected, `${what}: ${now - before} write statements`);
    before = now;
  };
  assert.equal((await call('POST', '/holds', 'visitor v1', hold(['A-1-1']))).status, 201);
  await wrote(1, 'a hold');
  const keyed = await call('POST', '/holds', 'visitor v2', hold(['A-1-2'], 'key-1'));
  assert.equal(keyed.status, 201);
  await wrote(1, 'a hold with a key');
  assert.equal((await call('POST', '/holds', 'visitor v2', hold(['A-1-2'], 'key-1'))).status, 200);
  await wrote(0, 'a retry');
  const refused = await call('POST', '/holds', 'visitor v3', hold(['A-1-1'], 'key-2'));
  assert.equal(refused.status, 409);
  await wrote(1, 'a refusal under a key');
  assert.equal((await call('POST', '/holds', 'visitor v3', hold(['A-1-1']))).status, 409);
  await wrote(0, 'a refusal without a key');
  const was = await stats();
  assert.equal(was.stats.holds_placed, 2);
  await first.dispose();

  // The meta was last written by the inventory's publication: the rows say the rest.
  const second = await start();
  cleanups.push(() => second.dispose());
  call = await objectFor(second, 'evt-writes');
  const now = await stats();
  assert.equal(now.version, was.version, 'the ledger\'s version');
  assert.equal(now.stats.holds_placed, 2);
  assert.equal(now.stats.live_holds, 2);
  assert.equal(now.remembered_answers, was.remembered_answers);
  const replayed = await call('POST', '/holds', 'visitor v2', hold(['A-1-2'], 'key-1'));
  assert.equal(replayed.status, 200);
  assert.equal(replayed.body.hold.id, keyed.body.hold.id, 'the key\'s answer survived');
  const again = await call('POST', '/holds', 'visitor v3', hold(['A-1-1'], 'key-2'));
  assert.equal(again.status, 409);
  assert.equal(again.body.reason, refused.body.reason);
  assert.equal((await call('POST', '/holds', 'visitor v1', hold(['A-1-2']))).status, 409, 'the seat is still held');
  assert.equal((await call('POST', '/holds', 'visitor v4', hold(['A-1-3']))).status, 201);
  assert.equal((await stats()).version, was.version + 1);
});

test('after a restart the meta and the rows agree: placements before and after the last meta write, and a key pushed out then used again', async () => {
  const { start } = persisted('inventory-boundary');
  const bindings = { HOLDS_PER_VISITOR_PER_MINUTE: '600' };
  const first = await start(bindings);
  let call = await objectFor(first, 'evt-boundary');
  assert.equal((await call('PUT', '/inventory', 'core', inventory({ seats: 10 }))).status, 200);
  const a = (await call('POST', '/holds', 'visitor v1', hold(['A-1-1']))).body.hold;
  await call('POST', `/holds/${a.id}/extend`, 'core'); // writes the meta: the first placement is in it
  const b = await call('POST', '/holds', 'visitor v2', hold(['A-1-2'], 'old-key'));
  assert.equal(b.status, 201);
  // 32 newer answers push the first key out of v2's bound (refusals: the seat is taken)...
  for (let i = 0; i < 32; i++) {
    assert.equal((await call('POST', '/holds', 'visitor v2', hold(['A-1-1'], `k-${i}`))).status, 409);
  }
  // ...so the same key is a new request now: refused, and that answer is the one remembered.
  const reused = await call('POST', '/holds', 'visitor v2', hold(['A-1-3', 'A-1-4', 'A-1-5', 'A-1-6', 'A-1-7', 'A-1-8', 'A-1-9', 'A-1-0'], 'old-key'));
  assert.equal(reused.status, 409, JSON.stringify(reused.body));
  const was = (await call('GET', '/stats', 'core')).body;
  assert.equal(was.stats.holds_placed, 2);
  await first.dispose();

  const second = await start(bindings);
  cleanups.push(() => second.dispose());
  call = await objectFor(second, 'evt-boundary');
  const now = (await call('GET', '/stats', 'core')).body;
  assert.equal(now.stats.holds_placed, 2, 'one placement counted by the meta, one by its row');
  assert.equal(now.version, was.version);
  assert.equal(now.remembered_answers, was.remembered_answers);
  const again = await call('POST', '/holds', 'visitor v2', hold(['A-1-3', 'A-1-4', 'A-1-5', 'A-1-6', 'A-1-7', 'A-1-8', 'A-1-9', 'A-1-0'], 'old-key'));
  assert.equal(again.status, 409, 'the key\'s newer answer survived the restart, not the hold it once placed');
  assert.equal(again.body.reason, reused.body.reason);
});

test('a store written before holds carried their version and key is read, and takes new holds', async () => {
  const { dir, start } = persisted('inventory-upgrade');
  const first = await start();
  let call = await objectFor(first, 'evt-upgrade');
  assert.equal((await call('PUT', '/inventory', 'core', inventory())).status, 200);
  const old = (await call('POST', '/holds', 'visitor v1', hold(['A-1-1']))).body.hold;
  // An earlier release's hold path wrote the meta with each hold.
  await call('POST', `/holds/${old.id}/extend`, 'core');
  await first.dispose();
  // The earlier release's table: without the two columns.
  const { DatabaseSync } = await import('node:sqlite');
  const files = fs.readdirSync(dir, { recursive: true }).filter((f) => String(f).endsWith('.sqlite'));
  let upgraded = 0;
  for (const f of files) {
    const db = new DatabaseSync(path.join(dir, String(f)));
    const hasHolds = db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'holds'").get().n;
    if (hasHolds) {
      db.exec('ALTER TABLE holds DROP COLUMN idem; ALTER TABLE holds DROP COLUMN placed_version;');
      upgraded += 1;
    }
    db.close();
  }
  assert.equal(upgraded, 1, `one inventory database among ${files.join(', ')}`);

  const second = await start();
  cleanups.push(() => second.dispose());
  call = await objectFor(second, 'evt-upgrade');
  assert.equal((await call('GET', `/holds/${old.id}`, 'core')).body.state, 'held');
  assert.equal((await call('POST', '/holds', 'visitor v2', hold(['A-1-1']))).status, 409);
  assert.equal((await call('POST', '/holds', 'visitor v2', hold(['A-1-2'], 'key-1'))).status, 201);
  const stats = (await call('GET', '/stats', 'core')).body;
  assert.equal(stats.stats.holds_placed, 2);
  assert.equal(stats.stats.live_holds, 2);
});

test('HOLD_RECORDS_RETENTION_SECONDS shortens how long answers and ended holds are remembered, after a restart too, never below a hold\'s life; out of bounds it is the hour', async () => {
  const { start } = persisted('inv-retention');
  const bindings = { HOLD_RECORDS_RETENTION_SECONDS: '300' };
  const first = await start(bindings);
  let call = await objectFor(first, 'evt-retention');
  // Holds of 600 s and a 60 s extension: answers and ended holds are kept 660 s, more than the
  // 300 asked (an answer outlives nothing it names, and is kept while its hold may live).
  assert.equal((await call('PUT', '/inventory', 'core', inventory())).status, 200);
  const placed = await call('POST', '/holds', 'visitor v1', hold(['A-1-1'], 'key-r'));
  assert.equal(placed.status, 201);
  const given = placed.body.hold.created_at;
  const stats = async () => (await call('GET', '/stats', 'core')).body;
  let now = await stats();
  assert.deepEqual(now.retention_ms, { ended_holds: 660000, answers: 660000 });
  assert.equal(now.next_wake, placed.body.hold.expires_at, 'the live hold\'s expiry comes first');
  // Released: its answer is forgotten 660 s after it was given (the hour by default).
  const released = await call('DELETE', `/holds/${placed.body.hold.id}`, 'visitor v1');
  assert.equal(released.status, 200, JSON.stringify(released.body));
  now = await stats();
  assert.ok(Math.abs(now.next_wake - (given + 660000)) < 1000, `${now.next_wake} vs ${given}`);
  await first.dispose();
  // Restarted (the ledger loaded from storage): the same, and a retry is the hold as it is.
  const second = await start(bindings);
  call = await objectFor(second, 'evt-retention');
  now = await stats();
  assert.deepEqual(now.retention_ms, { ended_holds: 660000, answers: 660000 });
  assert.ok(Math.abs(now.next_wake - (given + 660000)) < 1000);
  const retry = await call('POST', '/holds', 'visitor v1', hold(['A-1-1'], 'key-r'));
  assert.equal(retry.status, 200);
  assert.equal(retry.body.hold.state, 'released');
  await second.dispose();
  // Below five minutes, above the hour, or not a number: the hour.
  for (const value of ['60', '7200', 'soon']) {
    const mf = await start({ HOLD_RECORDS_RETENTION_SECONDS: value });
    call = await objectFor(mf, 'evt-retention');
    now = await stats();
    assert.deepEqual(now.retention_ms, { ended_holds: 3600000, answers: 3600000 }, value);
    assert.ok(Math.abs(now.next_wake - (given + 3600000)) < 1000, `${value}: ${now.next_wake}`);
    await mf.dispose();
  }
});

test('a core request without a nonce, or with one seen before, is refused as a replay', async () => {
  const { call } = await freshObject('evt-replay', inventory());
  const placed = (await call('POST', '/holds', 'visitor v1', hold(['A-1-1']))).body.hold;
  const first = await call('POST', `/holds/${placed.id}/extend`, 'core', undefined, 'nonce-once-0001');
  assert.equal(first.status, 200);
  const replay = await call('POST', `/holds/${placed.id}/confirm`, 'core', undefined, 'nonce-once-0001');
  assert.equal(replay.status, 401);
  assert.equal(replay.body.reason, 'replayed');
  assert.equal((await call('GET', `/holds/${placed.id}`, 'core')).body.state, 'held', 'the replay changed nothing');
});

test('a 50,000-seat inventory is stored (in chunks under the row limit) and reloads after a restart', async () => {
  const { start } = persisted('inventory-large');
  const big = inventory({ seats: 50_000, ga: 0 });
  const first = await start();
  let call = await objectFor(first, 'evt-large');
  const put = await call('PUT', '/inventory', 'core', big);
  assert.equal(put.status, 200, JSON.stringify(put.body));
  assert.equal((await call('POST', '/holds', 'visitor v1', hold(['A-1-49999']))).status, 201);
  await first.dispose();
  const second = await start();
  cleanups.push(() => second.dispose());
  call = await objectFor(second, 'evt-large');
  const seats = (await call('GET', '/availability', 'visitor v2')).body.seats;
  assert.equal(seats.length, 50_000);
  assert.equal(seats[49_999], 'h');
});
