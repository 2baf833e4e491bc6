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
import { startEdge, newKey, keyBindings, inventory, coreClient, admit, readToken, signToken } from './harness.mjs';

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
async function join(mf, email, request = { seats: true, quantity: 1 }, event = EVENT) {
  const r = await send(mf, 'POST', `/api/v1/events/${event}/waitlist`, { body: { email, ...request } });
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

const seatsOf = async (mf, event) => (await send(mf, 'GET', `/api/v1/events/${event}/availability`)).body.seats;
const seatStates = (mf) => seatsOf(mf, EVENT);

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
  // The first lapsed; the fourth and fifth, offered seconds later, may have lapsed too by now.
  const { lapsed, ...others } = summary.offers;
  assert.deepEqual(others, { made: 5, claimed: 1, declined: 1 });
  assert.ok(lapsed >= 1 && lapsed <= 3, `${lapsed} lapsed`);
  const { records } = (await core('GET', `/internal/v1/events/${EVENT}/waitlist/records`)).body;
  assert.deepEqual(records.filter((r) => r.type === 'offered').map((r) => r.offer.number), [1, 2, 3, 4, 5], 'offers in joining order');
  assert.ok(!JSON.stringify(records).includes('@example.com'), 'the history carries no address');
});

// An event of one seat, held by a buyer: sold out. `room` is the line's settings.
async function soldOut(mf, core, publish, event, room) {
  await publish(inventory(event, { seats: 1, ga: 0 }));
  const { token } = await admit(mf, core, event, room);
  const r = await send(mf, 'POST', `/api/v1/events/${event}/holds`, { token, body: { kind: 'seats', seats: ['S0-0-0'] } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
}

const joinAt = (mf, event, body, headers = {}) => mf.dispatchFetch(`http://edge/api/v1/events/${event}/waitlist`, {
  method: 'POST', headers: { 'user-agent': 'workerd-tests/1', 'content-type': 'application/json', ...headers }, body: JSON.stringify(body),
});

test('joining the list takes the line\'s bot check, only what is sold out, and ends when the organizer closes it', async () => {
  const mf = await startEdge(keyBindings(edgeKey, coreKey));
  cleanups.push(() => mf.dispose());
  const { core, publish } = coreClient(mf, coreKey);
  const event = 'evt-wl-bots';
  await publish(inventory(event, { seats: 2, ga: 0 }));
  const room = { version: 1, mode: 'passthrough', bot: { check: { kind: 'proof_of_work', difficulty: 8 } }, waitlist: { enabled: true } };
  assert.equal((await core('PUT', `/internal/v1/events/${event}/waiting-room`, room)).status, 200);
  const bot = await joinAt(mf, event, { email: 'bot@example.com', quantity: 1 });
  assert.equal(bot.status, 403);
  assert.equal((await bot.json()).reason, 'pow-missing');

  // Seats for sale: buy them through the line, not by waiting.
  const open = 'evt-wl-open';
  await publish(inventory(open, { seats: 2, ga: 3 }));
  await admit(mf, core, open, { waitlist: { enabled: true } });
  const early = await joinAt(mf, open, { email: 'a@example.com', seats: true, quantity: 1 });
  assert.equal(early.status, 409);
  assert.equal((await early.json()).reason, 'not-sold-out');
  const unknown = await joinAt(mf, open, { email: 'a@example.com', tier: 'balcony', quantity: 1 });
  assert.equal(unknown.status, 422);
  assert.equal((await unknown.json()).reason, 'unknown-tier');

  // An event whose list is off refuses joins.
  const off = 'evt-wl-off';
  await soldOut(mf, core, publish, off, {});
  const refused = await joinAt(mf, off, { email: 'a@example.com', quantity: 1 });
  assert.equal(refused.status, 404);
  assert.equal((await refused.json()).reason, 'waitlist-disabled');
  // An event that never had a list set up has none to close: 404, and nothing is made (found by the
  // API fuzzing: it answered 200 with no body).
  const bare = 'evt-wl-bare';
  await publish(inventory(bare, { seats: 1, ga: 0 }));
  const none = await core('POST', `/internal/v1/events/${bare}/waitlist/close`);
  assert.equal(none.status, 404);
  assert.equal((await core('GET', `/internal/v1/events/${bare}/waitlist`)).status, 404);

  // One visitor joins at most three times; closed by the organizer, the list takes nobody.
  const on = 'evt-wl-close';
  await soldOut(mf, core, publish, on, { waitlist: { enabled: true } });
  const a = await joinAt(mf, on, { email: 'a@example.com', quantity: 1 });
  assert.equal(a.status, 201);
  const cookie = a.headers.get('set-cookie').split(';')[0];
  for (let i = 0; i < 2; i++) {
    assert.equal((await send(mf, 'DELETE', `/api/v1/events/${on}/waitlist`, { cookie })).status, 200);
    assert.equal((await joinAt(mf, on, { email: `again${i}@example.com`, quantity: 1 }, { cookie })).status, 201);
  }
  assert.equal((await send(mf, 'DELETE', `/api/v1/events/${on}/waitlist`, { cookie })).status, 200);
  const fourth = await joinAt(mf, on, { email: 'again9@example.com', quantity: 1 }, { cookie });
  assert.equal(fourth.status, 409);
  assert.equal((await fourth.json()).reason, 'too-many-joins');
  const b = await joinAt(mf, on, { email: 'b@example.com', quantity: 1 });
  assert.equal(b.status, 201);
  const closed = await core('POST', `/internal/v1/events/${on}/waitlist/close`);
  assert.equal(closed.status, 200);
  assert.equal(closed.body.closed, true);
  const late = await joinAt(mf, on, { email: 'c@example.com', quantity: 1 });
  assert.equal(late.status, 409);
  assert.equal((await late.json()).reason, 'waitlist-closed');
  const entries = (await core('GET', `/internal/v1/events/${on}/waitlist/entries`)).body.entries;
  assert.deepEqual(entries.map((e) => e.state), ['left', 'left', 'left', 'left']);
  assert.ok(entries.every((e) => e.email === null), 'an ended entry keeps no address');
});

test('an erasure request takes an address off the list: its live entries leave, its address is deleted', async () => {
  const mf = await startEdge(keyBindings(edgeKey, coreKey));
  cleanups.push(() => mf.dispose());
  const { core, publish } = coreClient(mf, coreKey);
  const event = 'evt-wl-forget';
  await soldOut(mf, core, publish, event, { waitlist: { enabled: true } });
  const a = await joinAt(mf, event, { email: 'Erase.Me@example.com', quantity: 1 });
  assert.equal(a.status, 201);
  const b = await joinAt(mf, event, { email: 'keep@example.com', quantity: 1 });
  assert.equal(b.status, 201);
  // Only the core may ask, with a body naming the address (compared without regard to case).
  const bad = await core('POST', `/internal/v1/events/${event}/waitlist/forget`, { address: 'x' });
  assert.equal(bad.status, 400);
  const forgot = await core('POST', `/internal/v1/events/${event}/waitlist/forget`, { email: ' erase.me@EXAMPLE.com' });
  assert.equal(forgot.status, 200, JSON.stringify(forgot.body));
  assert.equal(forgot.body.forgotten, 1);
  const entries = (await core('GET', `/internal/v1/events/${event}/waitlist/entries`)).body.entries;
  assert.deepEqual(entries.map((e) => [e.state, e.email]), [['left', null], ['waiting', 'keep@example.com']]);
  // The one left waits first now; asking again finds nothing; the records carry no address.
  assert.equal((await core('POST', `/internal/v1/events/${event}/waitlist/forget`, { email: 'erase.me@example.com' })).body.forgotten, 0);
  const records = await core('GET', `/internal/v1/events/${event}/waitlist/records`);
  assert.ok(!JSON.stringify(records.body).toLowerCase().includes('erase.me'), 'no address in the history');
  const cookie = a.headers.get('set-cookie').split(';')[0];
  assert.equal((await send(mf, 'GET', `/api/v1/events/${event}/waitlist`, { cookie })).body.state, 'left');
});

test('an offer is mailed with an edge-signed link that opens its hold, for as long as the offer stands', async () => {
  const mf = await startEdge(keyBindings(edgeKey, coreKey));
  cleanups.push(() => mf.dispose());
  const { core, publish } = coreClient(mf, coreKey);
  const event = 'evt-wl-link';
  await publish(inventory(event, { seats: 1, ga: 0 }));
  const { token } = await admit(mf, core, event, { waitlist: { enabled: true, claim_seconds: 300 } });
  const held = await send(mf, 'POST', `/api/v1/events/${event}/holds`, { token, body: { kind: 'seats', seats: ['S0-0-0'] } });
  assert.equal(held.status, 201);
  const person = await join(mf, 'link@example.com', { seats: true, quantity: 1 }, event);
  assert.equal((await send(mf, 'DELETE', `/api/v1/events/${event}/holds/${held.body.hold.id}`, { token })).status, 200);
  const entryAt = async () => (await send(mf, 'GET', `/api/v1/events/${event}/waitlist`, { cookie: person.cookie })).body;
  const end = Date.now() + 15_000;
  while ((await entryAt()).state !== 'offered' && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
  const entry = await entryAt();
  assert.equal(entry.state, 'offered');

  // The core reads the offers to mail: the address, and a token the edge signed for the link.
  const read = await core('GET', `/internal/v1/events/${event}/waitlist/offers?after=-1`);
  assert.equal(read.status, 200, JSON.stringify(read.body));
  assert.equal(read.body.offers.length, 1);
  const offer = read.body.offers[0];
  assert.equal(offer.email, 'link@example.com');
  const { ok, header, claims } = readToken(offer.token, edgeKey.pub);
  assert.ok(ok, 'the offer token verifies with the edge public key');
  assert.deepEqual(header, { alg: 'EdDSA', kid: 'edge-test', typ: 'offer' });
  assert.equal(claims.aud, event);
  assert.equal(claims.jti, entry.hold);
  assert.equal(claims.exp, Math.ceil(entry.until / 1000));
  const again = await core('GET', `/internal/v1/events/${event}/waitlist/offers?after=${read.body.next}`);
  assert.deepEqual(again.body.offers, [], 'read once: the position moves on');

  // Forged, foreign or other-kind tokens open nothing.
  const take = (t) => send(mf, 'POST', `/api/v1/events/${event}/waitlist/offer`, { body: { token: t } });
  const stranger = newKey('edge-test');
  assert.equal((await take(signToken(stranger, 'offer', claims))).status, 401);
  assert.equal((await take(signToken(edgeKey, 'admission', claims))).status, 401);
  assert.equal((await take(signToken(edgeKey, 'offer', { ...claims, aud: 'other-event' }))).status, 401);
  assert.equal((await take(signToken(edgeKey, 'offer', { ...claims, exp: Math.floor(Date.now() / 1000) - 10 }))).status, 401);

  // The real link: the hold, its token for checkout, and an admission as long as the offer.
  const taken = await take(offer.token);
  assert.equal(taken.status, 200, JSON.stringify(taken.body));
  assert.equal(taken.body.hold.id, entry.hold);
  assert.deepEqual(taken.body.hold.seats, ['S0-0-0']);
  assert.equal(readToken(taken.body.hold_token, edgeKey.pub).header.typ, 'hold');
  const admission = readToken(taken.body.admission_token, edgeKey.pub);
  assert.equal(admission.claims.exp, Math.ceil(taken.body.expires_at_ms / 1000));
  assert.equal(admission.claims.max_tickets, 1);
  assert.equal(taken.body.next, `/events/${event}/buy`);
  assert.equal((await take(offer.token)).status, 200, 'the link works again while the offer stands');
  // It buys the offer, nothing else: no other hold with it (no way past the line).
  const other = await send(mf, 'POST', `/api/v1/events/${event}/holds`, { token: taken.body.admission_token, body: { kind: 'seats', seats: ['S0-0-0'] } });
  assert.equal(other.status, 403);
  assert.equal(other.body.reason, 'offer-only');
  // The admission is a buyer's: it opens the purchase page, and may let the hold go (declining).
  const page = await mf.dispatchFetch(`http://edge/events/${event}/buy`, { headers: { cookie: `admission_${event}=${taken.body.admission_token}`, 'user-agent': 'workerd-tests/1' } });
  assert.equal(page.status, 200);
  await page.text();
  const released = await send(mf, 'DELETE', `/api/v1/events/${event}/holds/${entry.hold}`, { token: taken.body.admission_token });
  assert.equal(released.status, 200, JSON.stringify(released.body));
  const end2 = Date.now() + 15_000;
  while ((await entryAt()).state !== 'declined' && Date.now() < end2) await new Promise((r) => setTimeout(r, 200));
  assert.equal((await entryAt()).state, 'declined');
  // Leaving with that admission ends the session (no queue shard holds a place for it).
  const left = await send(mf, 'DELETE', `/api/v1/events/${event}/queue`, { token: taken.body.admission_token });
  assert.equal(left.status, 200, JSON.stringify(left.body));
  const ended = await take(offer.token);
  assert.equal(ended.status, 409);
  assert.equal(ended.body.reason, 'offer-ended');
  // Nobody waits: the seat is for sale again.
  const end3 = Date.now() + 15_000;
  while ((await seatsOf(mf, event))[0] !== 'a' && Date.now() < end3) await new Promise((r) => setTimeout(r, 200));
  assert.equal((await seatsOf(mf, event))[0], 'a');
});

test('a sold-out event\'s page offers its waiting list: joined by its form, the place shown, left by its button', async () => {
  const mf = await startEdge(keyBindings(edgeKey, coreKey));
  cleanups.push(() => mf.dispose());
  const { core, publish } = coreClient(mf, coreKey);
  const event = 'evt-wl-page';
  await publish(inventory(event, { seats: 1, ga: 0 }));
  const { token } = await admit(mf, core, event, { waitlist: { enabled: true } });
  const held = await send(mf, 'POST', `/api/v1/events/${event}/holds`, { token, body: { kind: 'seats', seats: ['S0-0-0'] } });
  assert.equal((await core('POST', `/internal/v1/events/${event}/holds/${held.body.hold.id}/confirm`)).status, 200);
  const headers = { 'user-agent': 'workerd-tests/1', accept: 'text/html' };
  const pageOf = async (cookie) => (await mf.dispatchFetch(`http://edge/events/${event}`, { headers: { ...headers, ...(cookie ? { cookie } : {}) } })).text();
  // Sold out once the line has read the stock (every few seconds).
  const end = Date.now() + 20_000;
  let html = await pageOf();
  while (!html.includes('Join the waiting list') && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 300));
    html = await pageOf();
  }
  assert.match(html, /<form method="post" action="\/events\/evt-wl-page\/waitlist" id="join">/);
  assert.match(html, /<option value="any">Any tickets<\/option>/);
  // Someone who was admitted from the line (the buyer) sees the list too, not the purchase page.
  const admitted = await mf.dispatchFetch(`http://edge/events/${event}`, { redirect: 'manual', headers: { ...headers, cookie: `admission_${event}=${token}` } });
  assert.equal(admitted.status, 200);
  assert.match(await admitted.text(), /Join the waiting list/);
  assert.match(html, /name="quantity" type="number" min="1" max="6"/);
  // The line's JSON says where to join instead.
  const json = await (await mf.dispatchFetch(`http://edge/events/${event}`, { headers: { ...headers, accept: 'application/json' } })).json();
  assert.equal(json.phase, 'sold_out');
  assert.equal(json.waitlist, `/api/v1/events/${event}/waitlist`);

  // The form: joined, back to the page, which shows the place.
  const form = (fields) => new URLSearchParams(fields).toString();
  const posted = await mf.dispatchFetch(`http://edge/events/${event}/waitlist`, {
    method: 'POST', redirect: 'manual',
    headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ email: 'page@example.com', wants: 'seats', quantity: '2' }),
  });
  assert.equal(posted.status, 303);
  assert.equal(posted.headers.get('location'), `/events/${event}`);
  const cookie = posted.headers.get('set-cookie').split(';')[0];
  html = await pageOf(cookie);
  assert.match(html, /You are on the waiting list \(number 1\): 0 ahead of you/);
  assert.ok(!html.includes('Join the waiting list'), 'no second join from the page');
  // A refused join says why on the page, and changes nothing.
  const bad = await mf.dispatchFetch(`http://edge/events/${event}/waitlist`, {
    method: 'POST', redirect: 'manual',
    headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ email: 'nope', wants: 'any', quantity: '1' }),
  });
  assert.equal(bad.status, 422);
  assert.match(await bad.text(), /an e-mail address is required/);
  // Leaving by its button.
  const left = await mf.dispatchFetch(`http://edge/events/${event}/waitlist/leave`, { method: 'POST', redirect: 'manual', headers: { ...headers, cookie } });
  assert.equal(left.status, 303);
  html = await pageOf(cookie);
  assert.match(html, /You left the waiting list/);
  assert.match(html, /Join the waiting list/);
});
