// The waiting list in workerd: a sold-out event, people on its list, and places coming back by
// every way they can — a hold that expires, a buyer who lets go, a refund, a seat the organizer
// adds — each offered to the next person in joining order, as a hold nobody else can take. An
// offer declined or lapsed passes on; two offers never hold the same seat; a restart of the runtime
// in the middle loses no entry and no offer. Tokens and signatures are made with node:crypto.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEdge, newKey, keyBindings, inventory, coreClient, admit } from './harness.mjs';

const edgeKey = newKey('edge-test');
const coreKey = newKey('core-test');
const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

const EVENT = 'evt-wl';
const CLAIM_SECONDS = 60;
const ROOM = {
  max_tickets_per_buyer: 4,
  waitlist: { enabled: true, claim_seconds: CLAIM_SECONDS, max_offers_out: 10 },
};

async function send(mf, method, p, { token, cookie, body } = {}) {
  const headers = { 'user-agent': 'workerd-tests/1', 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (cookie) headers.cookie = cookie;
  const res = await mf.dispatchFetch(`http://edge${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json; try { json = JSON.parse(text); } catch { json = text; }
  return { status: res.status, type: res.headers.get('content-type'), cookie: res.headers.get('set-cookie'), body: json };
}

// Joins the list as a new visitor; resolves to { cookie, entry }.
async function join(mf, email, request = { seats: true, quantity: 1 }) {
  const r = await send(mf, 'POST', `/api/v1/events/${EVENT}/waitlist`, { body: { email, ...request } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const cookie = r.cookie.split(';')[0];
  assert.match(cookie, /^visitor=v[0-9a-f]{32}$/);
  return { cookie, entry: r.body };
}

const entryOf = async (mf, who) => (await send(mf, 'GET', `/api/v1/events/${EVENT}/waitlist`, { cookie: who.cookie })).body;

// Waits until `who`'s entry is in `state` (the list acts from its alarm).
async function until(mf, who, state, ms = 15_000) {
  const end = Date.now() + ms;
  let entry;
  while (Date.now() < end) {
    entry = await entryOf(mf, who);
    if (entry.state === state) return entry;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`entry ${JSON.stringify(entry)} never became ${state}`);
}

const seatStates = async (mf) => (await send(mf, 'GET', `/api/v1/events/${EVENT}/availability`)).body.seats;

test('seats that come back are offered in joining order, by expiry, release, refund and addition; offers pass on and survive a restart', { timeout: 180_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'waitlist-persist-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  let mf = await startEdge(keyBindings(edgeKey, coreKey), { durableObjectsPersist: dir });
  let { core, publish } = coreClient(mf, coreKey);
  // Four seats, no standing places; a hold lasts 4 s unless the core extends it.
  await publish(inventory(EVENT, { seats: 4, ga: 0, holdSeconds: 4 }));

  // Sold out: A's hold will expire, B will let go, C and D paid (C will be refunded).
  const buyers = {};
  for (const [name, seat] of [['A', 'S0-0-0'], ['B', 'S0-0-1'], ['C', 'S0-0-2'], ['D', 'S0-0-3']]) {
    const { token } = await admit(mf, core, EVENT, ROOM);
    const r = await send(mf, 'POST', `/api/v1/events/${EVENT}/holds`, { token, body: { kind: 'seats', seats: [seat] } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    buyers[name] = { token, hold: r.body.hold.id };
  }
  for (const name of ['B']) assert.equal((await core('POST', `/internal/v1/events/${EVENT}/holds/${buyers[name].hold}/extend`)).status, 200);
  for (const name of ['C', 'D']) assert.equal((await core('POST', `/internal/v1/events/${EVENT}/holds/${buyers[name].hold}/confirm`)).status, 200);
  assert.equal(await seatStates(mf), 'hhss');

  // Five people join, in order; bad joins change nothing.
  const bad = await send(mf, 'POST', `/api/v1/events/${EVENT}/waitlist`, { body: { email: 'not an address', seats: true, quantity: 1 } });
  assert.equal(bad.status, 422);
  assert.equal(bad.type, 'application/problem+json');
  const tooMany = await send(mf, 'POST', `/api/v1/events/${EVENT}/waitlist`, { body: { email: 'x@example.com', seats: true, quantity: 5 } });
  assert.equal(tooMany.status, 422, JSON.stringify(tooMany.body));
  const people = [];
  for (let i = 1; i <= 5; i++) people.push(await join(mf, `person${i}@example.com`));
  assert.deepEqual(people.map((p) => p.entry.position), [1, 2, 3, 4, 5]);
  const twice = await send(mf, 'POST', `/api/v1/events/${EVENT}/waitlist`, { cookie: people[0].cookie, body: { email: 'other@example.com', seats: true, quantity: 1 } });
  assert.equal(twice.status, 409);
  assert.equal(twice.body.reason, 'already-on-list');
  const sameMail = await send(mf, 'POST', `/api/v1/events/${EVENT}/waitlist`, { body: { email: ' Person1@Example.com ', seats: true, quantity: 1 } });
  assert.equal(sameMail.status, 409, 'one entry per e-mail address');

  // 1. Expiry: A's hold runs out; the seat never shows free, and the first person is offered it.
  const first = await until(mf, people[0], 'offered');
  assert.equal(first.quantity, 1);
  assert.match(first.hold, /^h0-w\d+$/);
  assert.equal((await seatStates(mf))[0], 'h', 'the returned seat was never on public sale');
  const firstOfferedAt = Date.now();
  assert.equal((await entryOf(mf, people[1])).position, 1, 'the second is now first in line');

  // 2. A buyer lets go: B releases, the second person is offered B's seat.
  const released = await send(mf, 'DELETE', `/api/v1/events/${EVENT}/holds/${buyers.B.hold}`, { token: buyers.B.token });
  assert.equal(released.status, 200, JSON.stringify(released.body));
  const second = await until(mf, people[1], 'offered');

  // 3. A refund returns C's seat: the third person.
  assert.equal((await core('POST', `/internal/v1/events/${EVENT}/holds/${buyers.C.hold}/return`, {})).status, 200);
  const third = await until(mf, people[2], 'offered');

  // 4. The organizer adds a seat: the fourth person.
  await publish(inventory(EVENT, { seats: 5, ga: 0, holdSeconds: 4, version: 2 }));
  const fourth = await until(mf, people[3], 'offered');
  assert.equal((await entryOf(mf, people[4])).position, 1);

  // Each offer is a hold of its own seat: no seat in two offers, nothing free.
  const offers = [first, second, third, fourth];
  const seats = [];
  for (const offer of offers) {
    const hold = (await core('GET', `/internal/v1/events/${EVENT}/holds/${offer.hold}`)).body;
    assert.equal(hold.state, 'held');
    assert.equal(hold.seats.length, 1);
    seats.push(hold.seats[0]);
  }
  assert.deepEqual([...seats].sort(), ['S0-0-0', 'S0-0-1', 'S0-0-2', 'S0-0-4'], 'each came back once and went to one person');
  assert.equal(await seatStates(mf), 'hhhsh');

  // A restart of the runtime: no entry and no offer lost.
  await mf.dispose();
  mf = await startEdge(keyBindings(edgeKey, coreKey), { durableObjectsPersist: dir });
  cleanups.push(() => mf.dispose());
  ({ core, publish } = coreClient(mf, coreKey));
  for (const [i, offer] of offers.entries()) {
    const now = await entryOf(mf, people[i]);
    assert.equal(now.state, 'offered', `person ${i + 1} kept their offer`);
    assert.equal(now.hold, offer.hold);
  }
  assert.equal((await entryOf(mf, people[4])).position, 1);

  // 5. The second person declines: their seat goes to the fifth.
  const declined = await send(mf, 'POST', `/api/v1/events/${EVENT}/waitlist/decline`, { cookie: people[1].cookie });
  assert.equal(declined.status, 200, JSON.stringify(declined.body));
  assert.equal(declined.body.state, 'declined');
  const fifth = await until(mf, people[4], 'offered');
  assert.deepEqual((await core('GET', `/internal/v1/events/${EVENT}/holds/${fifth.hold}`)).body.seats, [seats[1]]);

  // The third person pays (the core confirms their offer's hold): claimed.
  assert.equal((await core('POST', `/internal/v1/events/${EVENT}/holds/${third.hold}/confirm`)).status, 200);
  await until(mf, people[2], 'claimed');

  // 6. The first offer lapses at the end of its claim window; nobody waits any more, so its seat
  // goes back on public sale.
  await new Promise((r) => setTimeout(r, Math.max(0, firstOfferedAt + CLAIM_SECONDS * 1000 - Date.now())));
  await until(mf, people[0], 'lapsed', 20_000);
  const end = Date.now() + 10_000;
  while ((await seatStates(mf))[0] !== 'a' && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
  assert.equal((await seatStates(mf))[0], 'a', 'a seat nobody waits for is for sale again');

  // The organizer's view and the audit trail.
  const summary = (await core('GET', `/internal/v1/events/${EVENT}/waitlist`)).body;
  assert.equal(summary.waiting, 0);
  assert.deepEqual(summary.offers, { made: 5, claimed: 1, declined: 1, lapsed: 1 });
  const { records } = (await core('GET', `/internal/v1/events/${EVENT}/waitlist/records`)).body;
  assert.deepEqual(records.filter((r) => r.type === 'offered').map((r) => r.offer.number), [1, 2, 3, 4, 5], 'offers in joining order');
  assert.ok(!JSON.stringify(records).includes('@example.com'), 'the history carries no address');
});

test('joining the list takes the line\'s bot check; the organizer closes it', async () => {
  const mf = await startEdge(keyBindings(edgeKey, coreKey));
  cleanups.push(() => mf.dispose());
  const { core, publish } = coreClient(mf, coreKey);
  const event = 'evt-wl-bots';
  await publish(inventory(event, { seats: 2, ga: 0 }));
  const room = { version: 1, mode: 'passthrough', bot: { check: { kind: 'proof_of_work', difficulty: 8 } }, waitlist: { enabled: true } };
  assert.equal((await core('PUT', `/internal/v1/events/${event}/waiting-room`, room)).status, 200);
  const headers = { 'user-agent': 'workerd-tests/1', 'content-type': 'application/json' };
  const bot = await mf.dispatchFetch(`http://edge/api/v1/events/${event}/waitlist`, { method: 'POST', headers, body: JSON.stringify({ email: 'bot@example.com', quantity: 1 }) });
  assert.equal(bot.status, 403);
  assert.equal((await bot.json()).reason, 'pow-missing');
  // An event whose list is off refuses joins.
  const off = 'evt-wl-off';
  await publish(inventory(off, { seats: 2, ga: 0 }));
  assert.equal((await core('PUT', `/internal/v1/events/${off}/waiting-room`, { version: 1, mode: 'passthrough', bot: { check: { kind: 'off' } } })).status, 200);
  const refused = await mf.dispatchFetch(`http://edge/api/v1/events/${off}/waitlist`, { method: 'POST', headers, body: JSON.stringify({ email: 'a@example.com', quantity: 1 }) });
  assert.equal(refused.status, 404);
  assert.equal((await refused.json()).reason, 'waitlist-disabled');
  // Closed by the organizer: nobody joins.
  const on = 'evt-wl-close';
  await publish(inventory(on, { seats: 2, ga: 0 }));
  assert.equal((await core('PUT', `/internal/v1/events/${on}/waiting-room`, { version: 1, mode: 'passthrough', bot: { check: { kind: 'off' } }, waitlist: { enabled: true } })).status, 200);
  const a = await mf.dispatchFetch(`http://edge/api/v1/events/${on}/waitlist`, { method: 'POST', headers, body: JSON.stringify({ email: 'a@example.com', quantity: 1 }) });
  assert.equal(a.status, 201);
  const closed = await core('POST', `/internal/v1/events/${on}/waitlist/close`);
  assert.equal(closed.status, 200);
  assert.equal(closed.body.closed, true);
  const late = await mf.dispatchFetch(`http://edge/api/v1/events/${on}/waitlist`, { method: 'POST', headers, body: JSON.stringify({ email: 'b@example.com', quantity: 1 }) });
  assert.equal(late.status, 409);
  assert.equal((await late.json()).reason, 'waitlist-closed');
});
