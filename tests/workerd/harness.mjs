// Starts the compiled edge Worker (edge-worker/build/) in workerd through miniflare's API, with
// the same Durable Object classes and SQLite storage as wrangler.toml declares.
import { Miniflare } from 'miniflare';
import { launch } from '../browser/chromium.mjs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export async function startEdge(bindings = {}, options = {}) {
  const mf = new Miniflare({
    modules: true,
    scriptPath: path.join(ROOT, 'edge-worker/build/index.js'),
    modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'], fallthrough: true }],
    compatibilityDate: '2025-09-01',
    bindings: { CORE_URL: 'http://127.0.0.1:9', HEALTH_TIMEOUT_MS: '2000', ...bindings },
    durableObjects: {
      HEALTH_PROBE: { className: 'HealthProbe', useSQLite: true },
      INVENTORY: { className: 'InventoryObject', useSQLite: true },
      DIRECTORY: { className: 'EventDirectory', useSQLite: true },
      QUEUE_COORDINATOR: { className: 'QueueCoordinator', useSQLite: true },
      QUEUE_SHARD: { className: 'QueueShard', useSQLite: true },
      WAITLIST: { className: 'WaitlistObject', useSQLite: true },
    },
    // The per-address limit (wrangler.toml's IP_LIMIT); tests of the limit pass a small one.
    ratelimits: { IP_LIMIT: { namespace_id: '1000', simple: { limit: 1000000, period: 60 } } },
    ...options,
  });
  await mf.ready;
  return mf;
}

// A loopback HTTP server answering with `handler`; resolves to { url, close }.
export async function startPeer(handler) {
  const server = http.createServer(handler);
  const sockets = new Set();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    close: () => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(resolve); }),
  };
}

// The body the core answers on /healthz (shared_types::CoreHealth).
export function coreHealth(dbStatus = 'ok') {
  const database = dbStatus === 'ok'
    ? { tier: 'database', status: 'ok', latency_ms: 0.4, migration_version: 20261121000001 }
    : { tier: 'database', status: 'down', latency_ms: 1000, detail: 'connection failed: ConnectionRefused' };
  return { status: dbStatus === 'ok' ? 'ok' : 'down', version: '0.1.0', database };
}

// ---- keys and signatures, implemented independently of the Rust code (node:crypto) ----------
import crypto from 'node:crypto';

export const b64url = (buf) => Buffer.from(buf).toString('base64url');

// A fresh Ed25519 key: { kid, privateKey, seed (base64url), pub (base64url) }.
export function newKey(kid) {
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  return { kid, privateKey, seed: jwk.d, pub: jwk.x };
}

// The bindings that give an edge these keys (as wrangler secrets would).
export function keyBindings(edge, core) {
  return { EDGE_SIGNING_KEY: `${edge.kid}:${edge.seed}`, CORE_VERIFYING_KEYS: `${core.kid}:${core.pub}` };
}

// A JWS (EdDSA) token of `typ` with these claims, signed by `key`.
export function signToken(key, typ, claims) {
  const header = b64url(JSON.stringify({ alg: 'EdDSA', kid: key.kid, typ }));
  const payload = b64url(JSON.stringify(claims));
  const sig = crypto.sign(null, Buffer.from(`${header}.${payload}`), key.privateKey);
  return `${header}.${payload}.${b64url(sig)}`;
}

// Verifies a token with a public key (base64url) and returns its header and claims.
export function readToken(token, pub) {
  const [h, p, s] = token.split('.');
  const publicKey = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: pub }, format: 'jwk' });
  const ok = crypto.verify(null, Buffer.from(`${h}.${p}`), publicKey, Buffer.from(s, 'base64url'));
  return { ok, header: JSON.parse(Buffer.from(h, 'base64url')), claims: JSON.parse(Buffer.from(p, 'base64url')) };
}

export function admissionToken(edge, event, visitor, { ttl = 600, iat = Math.floor(Date.now() / 1000) } = {}) {
  return signToken(edge, 'admission', { iss: 'edge', aud: event, sub: visitor, iat, exp: iat + ttl, jti: crypto.randomUUID() });
}

// The x-core-signature header for a request (shared_types::request_signing).
export function coreSignature(core, method, pathAndQuery, body = '', { ts = Math.floor(Date.now() / 1000), nonce = b64url(crypto.randomBytes(16)) } = {}) {
  const digest = b64url(crypto.createHash('sha256').update(body).digest());
  const text = `ticketing-core-request-v1\n${method.toUpperCase()}\n${pathAndQuery}\n${digest}\n${ts}\n${nonce}`;
  const sig = b64url(crypto.sign(null, Buffer.from(text), core.privateKey));
  return `kid=${core.kid}, ts=${ts}, nonce=${nonce}, sig=${sig}`;
}

// ---- fixtures shared by the tests -------------------------------------------------------------

// An inventory (shared_types::inventory::Inventory) of `sections` x `rows` x `seats` plus a GA tier.
export function inventory(event, { sections = 1, rows = 1, seats = 10, ga = 5, sharding = 'none', version = 1, holdSeconds = 600 } = {}) {
  return {
    event, version, currency: 'EUR', sharding,
    seat_map: {
      sections: Array.from({ length: sections }, (_, s) => ({
        id: `S${s}`, name: `Section ${s}`,
        rows: Array.from({ length: rows }, (_, r) => ({
          label: `${r}`,
          seats: Array.from({ length: seats }, (_, n) => ({ id: `S${s}-${r}-${n}`, label: `${n}`, x: n, y: r, zone: 'std' })),
        })),
      })),
      zones: [{ id: 'std', name: 'Standard', price: { amount_minor: 4500, currency: 'EUR' } }],
      ga_tiers: ga ? [{ id: 'floor', name: 'Floor', capacity: ga, price: { amount_minor: 3000, currency: 'EUR' } }] : [],
    },
    settings: { hold_seconds: holdSeconds, extension_seconds: 60, max_tickets_per_visitor: 8 },
  };
}

// Calls the edge as the core would (signed); `publish` pushes an inventory and expects 200.
export function coreClient(mf, coreKey) {
  async function core(method, path, body, opts = {}) {
    const text = body === undefined ? '' : JSON.stringify(body);
    const signature = opts.signature ?? coreSignature(coreKey, method, path, opts.signedBody ?? text, opts);
    const headers = signature ? { 'x-core-signature': signature } : {};
    const res = await mf.dispatchFetch(`http://edge${path}`, { method, headers, body: method === 'GET' ? undefined : text });
    return { status: res.status, type: res.headers.get('content-type'), body: await res.json() };
  }
  async function publish(inv) {
    const r = await core('PUT', `/internal/v1/events/${inv.event}/inventory`, inv);
    if (r.status !== 200) throw new Error(`publish ${inv.event}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }
  return { core, publish };
}

// A real admission for a new visitor of `event`: the event's line is set to let everyone straight
// in (passthrough, no bot check), the visitor joins and exchanges the ticket. Resolves to
// { token, visitor }.
const passthroughRooms = new WeakMap();
export async function admit(mf, core, event, room = {}) {
  const rooms = passthroughRooms.get(mf) ?? new Set();
  passthroughRooms.set(mf, rooms);
  if (!rooms.has(event)) {
    const r = await core('PUT', `/internal/v1/events/${event}/waiting-room`, {
      version: 1, mode: 'passthrough', bot: { check: { kind: 'off' } },
      rate_limits: { joins_per_visitor_per_minute: 100 }, ...room,
    });
    if (r.status !== 200) throw new Error(`waiting-room settings for ${event}: ${r.status} ${JSON.stringify(r.body)}`);
    rooms.add(event);
  }
  const headers = { 'user-agent': 'workerd-tests/1', 'content-type': 'application/json' };
  const joined = await (await mf.dispatchFetch(`http://edge/api/v1/events/${event}/queue`, { method: 'POST', headers, body: '{}' })).json();
  if (!joined.ticket) throw new Error(`join ${event}: ${JSON.stringify(joined)}`);
  const status = await (await mf.dispatchFetch(`http://edge/api/v1/events/${event}/queue`, {
    headers: { ...headers, authorization: `Bearer ${joined.ticket}` },
  })).json();
  if (!status.admission_token) throw new Error(`admission ${event}: ${JSON.stringify(status)}`);
  return { token: status.admission_token, visitor: joined.visitor };
}

// What a page test in Chromium needs: the Worker on a loopback port (a browser cannot use
// dispatchFetch), its core played by a loopback peer answering with `handler`, and Chromium.
// `close()` stops the three.
export async function browserEdge(handler) {
  const edgeKey = newKey('edge-test');
  const coreKey = newKey('core-test');
  const peer = await startPeer(handler);
  const mf = await startEdge({ ...keyBindings(edgeKey, coreKey), CORE_URL: peer.url }, { host: '127.0.0.1', port: 0 });
  const url = (await mf.ready).toString().replace(/\/$/, '');
  const { core, publish } = coreClient(mf, coreKey);
  const browser = await launch();
  const close = async () => { await browser.close(); await mf.dispose(); await peer.close(); };
  return { mf, url, core, publish, browser, close };
}
