// The waiting room in workerd: anti-bot checks, joining, polling, admission in order, the single
// exchange for an admission token, leaving, the pre-queue shuffle, sold out, Turnstile. Tokens and
// proofs of work are made and checked here with node:crypto, independently of the Rust code.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startEdge, startPeer, newKey, keyBindings, signToken, readToken, inventory, coreClient, admissionToken, admit } from './harness.mjs';

const edgeKey = newKey('edge-test');
const coreKey = newKey('core-test');
let mf, core, publish, turnstile;
const TURNSTILE_SECRET = 'test-turnstile-secret';

before(async () => {
  // A local server speaking Turnstile's documented siteverify protocol (form POST: secret, response).
  turnstile = await startPeer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const form = new URLSearchParams(body);
      const ok = req.method === 'POST' && form.get('secret') === TURNSTILE_SECRET && form.get('response') === 'human-token';
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(ok
        ? { success: true, challenge_ts: new Date().toISOString(), hostname: 'edge', 'error-codes': [] }
        : { success: false, 'error-codes': [form.get('secret') === TURNSTILE_SECRET ? 'invalid-input-response' : 'invalid-input-secret'] }));
    });
  });
  mf = await startEdge({
    ...keyBindings(edgeKey, coreKey),
    TURNSTILE_VERIFY_URL: `${turnstile.url}/turnstile/v0/siteverify`,
    TURNSTILE_SECRET,
  });
  ({ core, publish } = coreClient(mf, coreKey));
});
after(async () => { await mf.dispose(); await turnstile.close(); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let ipCounter = 0;

// A browser-like client with its own cookie jar and address.
function client() {
  const jar = new Map();
  const ip = `10.0.${Math.floor(++ipCounter / 250)}.${ipCounter % 250}`;
  async function send(method, path, { body, headers = {}, bearer } = {}) {
    const h = { 'user-agent': 'queue-test/1.0', 'cf-connecting-ip': ip, ...headers };
    if (jar.size) h.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    if (bearer) h.authorization = `Bearer ${bearer}`;
    if (body !== undefined && typeof body !== 'string') { h['content-type'] = 'application/json'; body = JSON.stringify(body); }
    const res = await mf.dispatchFetch(`http://edge${path}`, { method, headers: h, body, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const [k, v] = pair.split('=');
      if (/Max-Age=0/.test(c)) jar.delete(k); else jar.set(k, v);
    }
    const type = res.headers.get('content-type') ?? '';
    const parsed = type.includes('json') ? await res.json() : await res.text();
    return { status: res.status, type, body: parsed, headers: res.headers };
  }
  return { send, jar };
}

function solve(challenge, difficulty) {
  for (let n = 0; ; n++) {
    const h = crypto.createHash('sha256').update(`${challenge}.${n}`).digest();
    let bits = 0;
    for (const b of h) { if (b === 0) { bits += 8; continue; } bits += Math.clz32(b) - 24; break; }
    if (bits >= difficulty) return String(n);
  }
}

const base = (over = {}) => ({
  version: 1,
  admit_per_minute: 600,
  max_active: 10000,
  queue_shards: 2,
  mode: 'fifo',
  bot: { check: { kind: 'off' } },
  rate_limits: { joins_per_visitor_per_minute: 10 },
  ...over,
});

async function room(event, settings, inv = inventory(event, { seats: 50, ga: 100 })) {
  await publish(inv);
  const r = await core('PUT', `/internal/v1/events/${event}/waiting-room`, settings);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  await sleep(1100); // the edge caches the view for a second
}

async function pollUntilAdmitted(c, event, { timeoutMs = 20000 } = {}) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await c.send('GET', `/api/v1/events/${event}/queue`);
    if (r.status !== 200) return r;
    if (r.body.state === 'admitted') return r;
    if (Date.now() > until) throw new Error(`not admitted: ${JSON.stringify(r.body)}`);
    await sleep(250);
  }
}

test('settings come only from the core, signed, and bad ones are refused field by field', async () => {
  await publish(inventory('wr-settings'));
  const path = '/internal/v1/events/wr-settings/waiting-room';
  assert.equal((await core('PUT', path, base(), { signature: '' })).status, 401);
  const bad = await core('PUT', path, base({ admit_per_minute: 0, queue_shards: 99 }));
  assert.equal(bad.status, 422);
  assert.deepEqual(bad.body.errors.map((e) => e.field), ['admit_per_minute', 'queue_shards']);
  const unknown = await core('PUT', path, { ...base(), surprise: true });
  assert.equal(unknown.status, 400);
  assert.equal((await core('PUT', path, base())).status, 200);
  assert.equal((await core('PUT', path, base())).body.changed, false, 'the same version again is a retry');
  const stale = await core('PUT', path, base({ version: 0 }));
  assert.equal(stale.status, 409);
  assert.equal(stale.body.reason, 'stale');
  const stats = await core('GET', path);
  assert.equal(stats.status, 200);
  assert.equal(stats.body.view.settings.queue_shards, 2);
  // An event that was never published has no line.
  const nobody = client();
  assert.equal((await nobody.send('POST', '/api/v1/events/wr-nowhere/queue', { body: {} })).status, 404);
});

test('joining needs a solved proof of work bound to the visitor; a solved challenge works once', async () => {
  const event = 'wr-pow';
  await room(event, base({ bot: { check: { kind: 'proof_of_work', difficulty: 8 } } }));
  const c = client();
  const missing = await c.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  assert.equal(missing.status, 403);
  assert.equal(missing.type, 'application/problem+json');
  assert.equal(missing.body.type, 'https://errors.ticketing.dev/bot-check-failed');
  assert.equal(missing.body.reason, 'pow-missing');

  const ch = await c.send('POST', `/api/v1/events/${event}/challenge`);
  assert.equal(ch.status, 200);
  assert.equal(ch.body.check, 'proof_of_work');
  assert.ok(ch.body.difficulty >= 8);
  const token = readToken(ch.body.challenge, edgeKey.pub);
  assert.ok(token.ok);
  assert.equal(token.header.typ, 'challenge');
  assert.equal(token.claims.sub, ch.body.visitor);
  assert.equal(c.jar.get('visitor'), ch.body.visitor, 'the visitor cookie is set');

  const wrong = await c.send('POST', `/api/v1/events/${event}/queue`, { body: { challenge: ch.body.challenge, solution: 'nope' } });
  assert.equal(wrong.body.reason, 'pow-invalid');
  const solution = solve(ch.body.challenge, ch.body.difficulty);
  const joined = await c.send('POST', `/api/v1/events/${event}/queue`, { body: { challenge: ch.body.challenge, solution } });
  assert.equal(joined.status, 201, JSON.stringify(joined.body));
  const ticket = readToken(joined.body.ticket, edgeKey.pub);
  assert.ok(ticket.ok);
  assert.equal(ticket.header.typ, 'queue');
  assert.equal(ticket.claims.aud, event);
  assert.equal(ticket.claims.sub, ch.body.visitor);
  assert.ok(joined.body.ticket.length < 400, 'compact enough for a cookie');

  const reused = await c.send('POST', `/api/v1/events/${event}/queue`, { body: { challenge: ch.body.challenge, solution } });
  assert.equal(reused.status, 403);
  assert.equal(reused.body.reason, 'pow-reused');

  // Someone else's challenge (bound to another visitor) does not work for this visitor.
  const other = client();
  const theirs = await other.send('POST', `/api/v1/events/${event}/challenge`);
  const stolen = await c.send('POST', `/api/v1/events/${event}/queue`, {
    body: { challenge: theirs.body.challenge, solution: solve(theirs.body.challenge, theirs.body.difficulty) },
  });
  assert.equal(stolen.body.reason, 'pow-invalid');

  // Refusals are counted per reason (an isolate sends its counts at most every five seconds).
  await sleep(5200);
  await c.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  await sleep(300);
  const stats = await core('GET', `/internal/v1/events/${event}/waiting-room`);
  for (const reason of ['pow-missing', 'pow-invalid', 'pow-reused']) {
    assert.ok(stats.body.refusals[reason] >= 1, `${reason} counted: ${JSON.stringify(stats.body.refusals)}`);
  }
});

test('a join is one storage write, its proof of work included; a spent proof is refused from the table or a place', async () => {
  // The queue shard called as the edge calls it (x-caller: edge), with no coordinator set up, so
  // nothing but these calls writes to it.
  const ns = await mf.getDurableObjectNamespace('QUEUE_SHARD');
  const stub = ns.get(ns.idFromName('wr-writes:0'));
  const call = async (method, p, body) => {
    const res = await stub.fetch(`https://shard${p}`, { method, headers: { 'x-caller': method === 'GET' ? 'core' : 'edge' }, body: body && JSON.stringify(body) });
    return { status: res.status, body: await res.json() };
  };
  const settings = { ...base(), queue_shards: 1 };
  const join = (visitor, jti) => call('POST', '/join', { event: 'wr-writes', shard: 0, visitor, settings, ...(jti ? { challenge: [jti, Date.now() + 60000] } : {}) });
  const writes = async () => (await call('GET', '/stats')).body.storage_writes;
  assert.equal((await join('v-first', 'jti-0')).status, 201);
  let before = await writes();
  const wrote = async (expected, what) => {
    const now = await writes();
    assert.equal(now - before, expected, `${what}: ${now - before} write statements`);
    before = now;
  };
  const a = await join('v-a', 'jti-a');
  assert.equal(a.status, 201, JSON.stringify(a.body));
  await wrote(1, 'a join with its proof of work');
  assert.equal((await join('v-b')).status, 201);
  await wrote(1, 'a join without one');
  // The same visitor again, with a fresh proof: the place is kept, the proof spent in the table.
  const again = await join('v-a', 'jti-a2');
  assert.equal(again.status, 200);
  assert.equal(again.body.returning, true);
  await wrote(2, 'a returning visitor');
  // Spent proofs: one in a place's row, one in the table; by a returning visitor and a new one.
  for (const [visitor, jti] of [['v-a', 'jti-a'], ['v-a', 'jti-a2'], ['v-c', 'jti-a'], ['v-c', 'jti-a2']]) {
    const r = await join(visitor, jti);
    assert.equal(r.status, 403, `${visitor} ${jti}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.reason, 'pow-reused');
  }
  await wrote(0, 'refused joins');
  const stats = (await call('GET', '/stats')).body;
  assert.equal(stats.post_joined + stats.pre_joined, 3, 'the refused joins took no number');
  const c = await join('v-c', 'jti-c');
  assert.equal(c.status, 201);
  assert.equal(c.body.n, 4, 'numbers follow on without a gap');
  assert.equal((await join('v-c', 'jti-c')).status, 403, 'a returning visitor cannot spend it again either');
});

test('a shard stored before places carried their proof of work is read, and takes joins', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shard-upgrade-'));
  const settings = { ...base(), queue_shards: 1 };
  const open = async (edge) => {
    const ns = await edge.getDurableObjectNamespace('QUEUE_SHARD');
    const stub = ns.get(ns.idFromName('wr-upgrade:0'));
    return (visitor, jti) => stub.fetch('https://shard/join', {
      method: 'POST', headers: { 'x-caller': 'edge' },
      body: JSON.stringify({ event: 'wr-upgrade', shard: 0, visitor, settings, challenge: [jti, Date.now() + 60000] }),
    }).then(async (r) => ({ status: r.status, body: await r.json() }));
  };
  try {
    const first = await startEdge({}, { durableObjectsPersist: dir });
    assert.equal((await (await open(first))('v-old', 'jti-old')).status, 201);
    await first.dispose();
    // The earlier release's table: no proof of work in the places (it was in `challenges`).
    const { DatabaseSync } = await import('node:sqlite');
    let upgraded = 0;
    for (const f of fs.readdirSync(dir, { recursive: true }).filter((f) => String(f).endsWith('.sqlite'))) {
      const db = new DatabaseSync(path.join(dir, String(f)));
      if (db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'places'").get().n) {
        const jti = db.prepare('SELECT challenge FROM places').get().challenge;
        db.exec('DROP INDEX place_challenge; ALTER TABLE places DROP COLUMN challenge;');
        db.prepare('INSERT INTO challenges (jti, expires_ms) VALUES (?, ?)').run(jti, Date.now() + 60000);
        upgraded += 1;
      }
      db.close();
    }
    assert.equal(upgraded, 1);
    const second = await startEdge({}, { durableObjectsPersist: dir });
    try {
      const join = await open(second);
      assert.equal((await join('v-old', 'jti-2')).body.returning, true, 'the place survived');
      assert.equal((await join('v-new', 'jti-old')).body.reason, 'pow-reused', 'the spent proof too');
      assert.equal((await join('v-new', 'jti-new')).status, 201);
      assert.equal((await join('v-other', 'jti-new')).body.reason, 'pow-reused');
    } finally {
      await second.dispose();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('buyers are admitted in the order they joined, each exactly once, at the configured rate', async () => {
  const event = 'wr-fifo';
  await room(event, base({ admit_per_minute: 300 }));
  const buyers = [];
  for (let i = 0; i < 30; i++) {
    const c = client();
    const r = await c.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    buyers.push({ c, joinedAt: Date.now(), place: r.body.place });
    await sleep(60);
  }
  // Poll everyone in rounds; note the round in which each was first admitted.
  const admittedIn = new Map();
  const tokens = new Map();
  for (let round = 0; admittedIn.size < buyers.length; round++) {
    assert.ok(round < 200, `stuck: ${admittedIn.size} admitted`);
    for (const [i, b] of buyers.entries()) {
      if (admittedIn.has(i)) continue;
      const r = await b.c.send('GET', `/api/v1/events/${event}/queue`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      if (r.body.state === 'admitted') {
        admittedIn.set(i, round);
        tokens.set(i, r.body.admission_token);
      } else {
        assert.ok(r.body.status.position >= 1);
        assert.ok(r.body.status.poll_after_seconds >= 1);
      }
    }
    await sleep(200);
  }
  // Earlier seconds never go in after later ones (within one second, shards may reorder).
  for (let a = 0; a < buyers.length; a++) {
    for (let b = a + 1; b < buyers.length; b++) {
      if (Math.floor(buyers[a].joinedAt / 1000) + 1 < Math.floor(buyers[b].joinedAt / 1000)) {
        assert.ok(admittedIn.get(a) <= admittedIn.get(b) + 1, `buyer ${a} admitted after buyer ${b}`);
      }
    }
  }
  // The admission token is signed, for this event and visitor, short-lived.
  const t = readToken(tokens.get(0), edgeKey.pub);
  assert.ok(t.ok);
  assert.equal(t.header.typ, 'admission');
  assert.equal(t.claims.aud, event);
  assert.ok(t.claims.exp - t.claims.iat <= 600);
  // It opens the hold route.
  const hold = await buyers[0].c.send('POST', `/api/v1/events/${event}/holds`, { body: { kind: 'general_admission', tier: 'floor', quantity: 1 } });
  assert.equal(hold.status, 201, JSON.stringify(hold.body));

  // The queue ticket was exchanged once; presenting it again (without the admission) is refused.
  const again = client();
  const ticket = buyers[1].c.jar.get(`queue_${event}`);
  const replay = await again.send('GET', `/api/v1/events/${event}/queue`, { bearer: ticket });
  assert.equal(replay.status, 409);
  assert.equal(replay.body.reason, 'already-exchanged');
  const stats = await core('GET', `/internal/v1/events/${event}/waiting-room`);
  assert.equal(stats.body.view.admitted_total, 30);
});

test('forged, expired, wrong-event and wrong-visitor queue tickets are refused with problem+json', async () => {
  const event = 'wr-tokens';
  await room(event, base());
  const c = client();
  const joined = await c.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  const claims = readToken(joined.body.ticket, edgeKey.pub).claims;
  const now = Math.floor(Date.now() / 1000);
  const cases = {
    'unknown-key': signToken(newKey('edge-other'), 'queue', claims),
    'bad-signature': signToken({ ...newKey('x'), kid: 'edge-test' }, 'queue', claims),
    expired: signToken(edgeKey, 'queue', { ...claims, iat: now - 100, exp: now - 10 }),
    'wrong-event': signToken(edgeKey, 'queue', { ...claims, aud: 'wr-other' }),
    'wrong-kind': signToken(edgeKey, 'hold', claims),
  };
  for (const [reason, token] of Object.entries(cases)) {
    const r = await client().send('GET', `/api/v1/events/${event}/queue`, { bearer: token, headers: { cookie: `queue_${event}=${token}` } });
    assert.equal(r.status, 401, reason);
    assert.equal(r.type, 'application/problem+json');
    assert.equal(r.body.reason, reason, JSON.stringify(r.body));
  }
  // Someone else's ticket, presented with one's own visitor cookie.
  const thief = client();
  await thief.send('POST', `/api/v1/events/${event}/challenge`);
  const stolen = await thief.send('GET', `/api/v1/events/${event}/queue`, { bearer: joined.body.ticket });
  assert.equal(stolen.status, 401);
  assert.equal(stolen.body.reason, 'wrong-visitor');
  // A queue ticket is no admission token.
  const hold = await c.send('POST', `/api/v1/events/${event}/holds`, { bearer: joined.body.ticket, body: { kind: 'general_admission', tier: 'floor', quantity: 1 } });
  assert.equal(hold.status, 401);
  assert.equal(hold.body.reason, 'wrong-kind');
  // An admission token for another event does not open this one's holds.
  const elsewhere = admissionToken(edgeKey, 'wr-other', claims.sub);
  const h2 = await c.send('POST', `/api/v1/events/${event}/holds`, { bearer: elsewhere, body: { kind: 'general_admission', tier: 'floor', quantity: 1 } });
  assert.equal(h2.body.reason, 'wrong-event');
});

test('a returning visitor keeps their place; one who left cannot be admitted on the old ticket', async () => {
  const event = 'wr-return';
  await room(event, base({ paused: true }));
  const c = client();
  const first = await c.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  const again = await c.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  assert.equal(again.status, 200);
  assert.equal(again.body.returning, true);
  assert.deepEqual(again.body.place, first.body.place);
  const status = await c.send('GET', `/api/v1/events/${event}/queue`);
  assert.equal(status.body.status.state, 'paused');

  const ticket = c.jar.get(`queue_${event}`);
  const left = await c.send('DELETE', `/api/v1/events/${event}/queue`);
  assert.equal(left.status, 200);
  assert.equal(c.jar.has(`queue_${event}`), false, 'the cookie is cleared');
  await core('PUT', `/internal/v1/events/${event}/waiting-room`, base({ version: 2, paused: false }));
  await sleep(2500);
  const late = await client().send('GET', `/api/v1/events/${event}/queue`, { bearer: ticket, headers: { cookie: `visitor=${first.body.visitor}` } });
  assert.equal(late.status, 409, JSON.stringify(late.body));
  assert.equal(late.body.reason, 'left');
});

test('before the sale everyone waits in the pre-queue; at the start they are shuffled, with the seed revealed', async () => {
  const event = 'wr-shuffle';
  const onSale = Date.now() + 4000;
  await room(event, base({ mode: 'shuffle_then_fifo', on_sale_at_ms: onSale, admit_per_minute: 6000 }));
  const before = (await core('GET', `/internal/v1/events/${event}/waiting-room`)).body.view;
  assert.equal(before.phase, 'pre_queue');
  assert.equal(before.seed, undefined, 'the seed is secret before the draw');
  const buyers = [];
  for (let i = 0; i < 16; i++) {
    const c = client();
    const r = await c.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
    assert.equal(r.status, 201);
    assert.equal(r.body.place.pre, true);
    assert.equal(r.body.status.state, 'pre_queue');
    buyers.push(c);
  }
  const admitted = await Promise.all(buyers.map((c) => pollUntilAdmitted(c, event)));
  assert.ok(admitted.every((r) => r.body.state === 'admitted'));
  assert.ok(Date.now() >= onSale);
  const view = (await core('GET', `/internal/v1/events/${event}/waiting-room`)).body.view;
  assert.ok(view.seed, 'revealed after the draw');
  assert.equal(crypto.createHash('sha256').update(Buffer.from(view.seed, 'hex')).digest('hex'), view.seed_commitment);
  assert.equal(before.seed_commitment, view.seed_commitment, 'the commitment never changed');
  assert.equal(view.admitted_total, 16);
});

test('Turnstile: the edge verifies the token with siteverify; a failure is refused and counted', async () => {
  const event = 'wr-turnstile';
  await room(event, base({ bot: { check: { kind: 'turnstile', site_key: '1x00000000000000000000AA' } } }));
  const c = client();
  const ch = await c.send('POST', `/api/v1/events/${event}/challenge`);
  assert.equal(ch.body.check, 'turnstile');
  assert.equal(ch.body.site_key, '1x00000000000000000000AA');
  const bot = await c.send('POST', `/api/v1/events/${event}/queue`, { body: { turnstile_token: 'bot-token' } });
  assert.equal(bot.status, 403);
  assert.equal(bot.body.reason, 'turnstile-failed');
  const none = await c.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  assert.equal(none.body.reason, 'turnstile-missing');
  const human = await c.send('POST', `/api/v1/events/${event}/queue`, { body: { turnstile_token: 'human-token' } });
  assert.equal(human.status, 201, JSON.stringify(human.body));
});

test('a bot sent to the stalled line gets a ticket that never moves', async () => {
  const event = 'wr-stall';
  await room(event, base({ bot: { check: { kind: 'proof_of_work', difficulty: 8 }, on_failure: 'stall' } }));
  const bot = client();
  const r = await bot.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  assert.equal(r.status, 201);
  await sleep(2500);
  const s = await bot.send('GET', `/api/v1/events/${event}/queue`);
  assert.equal(s.status, 200);
  assert.notEqual(s.body.state, 'admitted');
  assert.equal(s.body.status.state, 'waiting');
});

// Runs `body` against an edge of its own started with these miniflare options (its own rate
// limiting binding), then puts the shared edge back.
async function withEdge(options, body) {
  const shared = mf;
  mf = await startEdge({ ...keyBindings(edgeKey, coreKey) }, options);
  ({ core, publish } = coreClient(mf, coreKey));
  try {
    await body();
  } finally {
    await mf.dispose();
    mf = shared;
    ({ core, publish } = coreClient(mf, coreKey));
  }
}

test('requests over the per-address limit get 429 with Retry-After; requests without sane headers are refused', async () => {
  // The per-address limit is the Rate Limiting binding (wrangler.toml IP_LIMIT): 5 a minute here.
  await withEdge({ ratelimits: { IP_LIMIT: { namespace_id: '1000', simple: { limit: 5, period: 60 } } } }, async () => {
    const event = 'wr-limits';
    await room(event, base({ rate_limits: { joins_per_visitor_per_minute: 2 } }));
    // The local binding counts in fixed windows of the clock's minutes (miniflare's
    // RateLimiterObject: floor(now / period)); a burst that straddles a minute's end starts
    // counting again, so begin it well inside a window.
    const intoMinute = Date.now() % 60_000;
    if (intoMinute > 50_000) await sleep(60_000 - intoMinute + 200);
    const c = client();
    const answers = [];
    for (let i = 0; i < 7; i++) answers.push(await c.send('POST', `/api/v1/events/${event}/challenge`));
    assert.ok(answers.slice(0, 5).every((a) => a.status === 200), answers.map((a) => a.status).join());
    assert.equal(answers[6].status, 429);
    assert.equal(answers[6].body.reason, 'ip-rate');
    assert.equal(answers[6].headers.get('retry-after'), '60');
    // Another address is not held back by the first one's count.
    assert.equal((await client().send('POST', `/api/v1/events/${event}/challenge`)).status, 200);
    // A request for a sign-in link (a mail to any address given) spends the same budget
    // (docs/privacy.md); another address's goes on to the core (none configured here: 503).
    const signIn = await c.send('POST', '/api/v1/buyer/sign-in', { body: { email: 'a@example.com' } });
    assert.equal(signIn.status, 429);
    assert.equal(signIn.body.reason, 'ip-rate');
    assert.notEqual((await client().send('POST', '/api/v1/buyer/sign-in', { body: { email: 'a@example.com' } })).status, 429);
    const noUa = await mf.dispatchFetch(`http://edge/api/v1/events/${event}/queue`, {
      method: 'POST', headers: { 'user-agent': '', 'cf-connecting-ip': '10.9.9.9' }, body: '{}',
    });
    assert.equal(noUa.status, 403);
    assert.equal((await noUa.json()).reason, 'bad-headers');
    // Joining again and again as one visitor is limited at the shard, with Retry-After as well.
    const v = client();
    const codes = [];
    for (let i = 0; i < 4; i++) codes.push(await v.send('POST', `/api/v1/events/${event}/queue`, { body: {} }));
    assert.deepEqual(codes.map((r) => r.status), [201, 200, 429, 429]);
    assert.equal(codes[2].body.reason, 'visitor-rate');
    assert.ok(Number(codes[2].headers.get('retry-after')) > 0, 'a 429 says when to come back');
  });
});

test('an edge deployed without its rate limiting binding takes no joins', async () => {
  await withEdge({ ratelimits: {} }, async () => {
    const event = 'wr-no-limiter';
    await room(event, base());
    const r = await client().send('POST', `/api/v1/events/${event}/challenge`);
    assert.equal(r.status, 500);
    assert.equal(r.type, 'application/problem+json');
  });
});

test('settings from an older core that still carry a per-event address limit are taken, the field ignored', async () => {
  const event = 'wr-old-limit';
  await publish(inventory(event, { seats: 5, ga: 0 }));
  const r = await core('PUT', `/internal/v1/events/${event}/waiting-room`, base({ rate_limits: { per_ip_per_minute: 5, joins_per_visitor_per_minute: 3 } }));
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const view = (await core('GET', `/internal/v1/events/${event}/waiting-room`)).body.view;
  assert.deepEqual(view.settings.rate_limits, { joins_per_visitor_per_minute: 3 });
});

test('when every seat is sold the line closes and everyone waiting is told', async () => {
  const event = 'wr-soldout';
  await room(event, base({ admit_per_minute: 600, paused: true }), inventory(event, { seats: 0, sections: 0, ga: 1 }));
  const waiting = client();
  await waiting.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  // Someone admitted before the pause buys the last place: hold it and confirm it as the core would.
  const buyerToken = await sessionFor(event);
  const hold = await client().send('POST', `/api/v1/events/${event}/holds`, { bearer: buyerToken, body: { kind: 'general_admission', tier: 'floor', quantity: 1 } });
  assert.equal(hold.status, 201, JSON.stringify(hold.body));
  const confirmed = await core('POST', `/internal/v1/events/${event}/holds/${hold.body.hold.id}/confirm`, {});
  assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));
  await core('PUT', `/internal/v1/events/${event}/waiting-room`, base({ version: 300, paused: true }));
  let status;
  for (let i = 0; i < 40; i++) {
    status = await waiting.send('GET', `/api/v1/events/${event}/queue`);
    if (status.body.status?.state === 'sold_out') break;
    await sleep(250);
  }
  assert.equal(status.body.status.state, 'sold_out');
  const late = await client().send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  assert.equal(late.status, 409);
  assert.equal(late.body.reason, 'sold-out');
});

// An admission token of a real session for `event`: its line lets one buyer straight in, then
// returns to its settings (under a higher version).
async function sessionFor(event) {
  const c = client();
  const stats = (await core('GET', `/internal/v1/events/${event}/waiting-room`)).body.view.settings;
  await core('PUT', `/internal/v1/events/${event}/waiting-room`, { ...stats, version: stats.version + 100, paused: false, mode: 'passthrough' });
  const joined = await c.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  assert.equal(joined.status, 201, JSON.stringify(joined.body));
  const status = await c.send('GET', `/api/v1/events/${event}/queue`);
  assert.equal(status.body.state, 'admitted', JSON.stringify(status.body));
  await core('PUT', `/internal/v1/events/${event}/waiting-room`, { ...stats, version: stats.version + 101 });
  return status.body.admission_token;
}

test('an admission token works only while its session is open: leaving or buying ends it (the sale ends it in the same call)', async () => {
  const event = 'wr-session';
  await publish(inventory(event, { seats: 10, ga: 10 }));
  const hold = (c, token) => c.send('POST', `/api/v1/events/${event}/holds`, { bearer: token, body: { kind: 'general_admission', tier: 'floor', quantity: 1 } });
  // Leaving ends the session at once.
  const a = await admit(mf, core, event);
  const c = client();
  assert.equal((await hold(c, a.token)).status, 201);
  const left = await c.send('DELETE', `/api/v1/events/${event}/queue`, { bearer: a.token });
  assert.equal(left.status, 200);
  const after = await hold(c, a.token);
  assert.equal(after.status, 401);
  assert.equal(after.body.reason, 'session-ended');
  // The core ending a session (the buyer bought) does too (an isolate may trust an open session for 5 s).
  const b = await admit(mf, core, event);
  assert.equal((await hold(c, b.token)).status, 201);
  const ended = await core('POST', `/internal/v1/events/${event}/waiting-room/sessions/end`, { visitor: b.visitor });
  assert.equal(ended.status, 200, JSON.stringify(ended.body));
  assert.equal(ended.body.ended, 1);
  // So does the sale itself: the core's confirm names the buyer whose session ends with it.
  const d = await admit(mf, core, event);
  const held = await hold(c, d.token);
  assert.equal(held.status, 201);
  const sold = await core('POST', `/internal/v1/events/${event}/holds/${held.body.hold.id}/confirm`, { end_session_of: d.visitor });
  assert.equal(sold.status, 200, JSON.stringify(sold.body));
  assert.equal(sold.body.state, 'sold');
  // A sale's body that is not JSON is refused, and sells nothing (fields a later core adds are ignored).
  const other = await hold(c, (await admit(mf, core, event)).token);
  const bad = await core('POST', `/internal/v1/events/${event}/holds/${other.body.hold.id}/confirm`, 'not json');
  assert.equal(bad.status, 400, JSON.stringify(bad.body));
  assert.equal((await core('GET', `/internal/v1/events/${event}/holds/${other.body.hold.id}`)).body.state, 'held');
  await sleep(5200);
  assert.equal((await hold(c, b.token)).body.reason, 'session-ended');
  assert.equal((await hold(c, d.token)).body.reason, 'session-ended');
});

test('a buyer whose turn came keeps it for the return grace, and loses it after', async () => {
  const event = 'wr-grace';
  await room(event, base({ return_grace_seconds: 10, admit_per_minute: 600 }));
  const [early, late] = [client(), client()];
  await early.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  await late.send('POST', `/api/v1/events/${event}/queue`, { body: {} });
  // Both are admitted within a few seconds; `early` comes back in time, `late` does not.
  await sleep(4000);
  const inTime = await early.send('GET', `/api/v1/events/${event}/queue`);
  assert.equal(inTime.body.state, 'admitted', JSON.stringify(inTime.body));
  await sleep(9000);
  const tooLate = await late.send('GET', `/api/v1/events/${event}/queue`);
  assert.equal(tooLate.status, 409, JSON.stringify(tooLate.body));
  assert.equal(tooLate.body.reason, 'expired');
  // The place that was never claimed no longer counts as an active buyer.
  let view;
  for (let i = 0; i < 20; i++) {
    view = (await core('GET', `/internal/v1/events/${event}/waiting-room`)).body.view;
    if (view.active === 1) break;
    await sleep(250);
  }
  assert.equal(view.admitted_total, 2);
  assert.equal(view.active, 1, JSON.stringify(view));
});
