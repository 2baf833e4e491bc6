// A local stand-in for the part of Stripe's API the core uses, answering as Stripe's API
// reference documents it, for tests and the local stack (Stripe itself cannot be reached here).
// Loopback only; state in memory. tests/fakes/stripe.test.mjs drives it with Stripe's official
// Node library (npm `stripe`): what the library sends, it takes; what it answers, the library reads
// as Stripe's objects and errors. (The library does not check parameters, so their rules here
// follow Stripe's API reference by hand.)
//
//   node scripts/fake-stripe.mjs --key sk_test_... [--port 0] [--webhook URL --webhook-secret whsec_...]
//
// The first line on stdout is {"url": "http://127.0.0.1:<port>"}.
//
// The API (form-encoded requests, `Authorization: Bearer <key>`, JSON answers and Stripe's error
// objects; an `Idempotency-Key` replays the first answer, or refuses other parameters):
//   POST /v1/checkout/sessions              mode=payment, one line item with price_data, card
//   GET  /v1/checkout/sessions/{id}
//   POST /v1/checkout/sessions/{id}/expire  only an open session
//   POST /v1/refunds                        payment_intent, amount (at most what is left)
// Unknown parameters are refused as Stripe refuses them, so a misspelt field fails a test.
//
// Checkout's hosted page, as a buyer sees it: GET /c/pay/{id} shows the amount and a card form;
// POST /c/pay/{id} pays (card 4000 0000 0000 0002 is declined, as Stripe's test card is) and
// redirects to `success_url` with {CHECKOUT_SESSION_ID} filled in. The session's events
// (checkout.session.completed, .expired) go to --webhook, signed with --webhook-secret by the
// official library's test-header helper, retried with backoff until acknowledged (at most 8 times).
//
// A session still open at its `expires_at` expires by itself (with its event), as at Stripe.
// Amounts under Stripe's minimum charge (50 cents or pence-equivalent in EUR and USD, 30 in GBP)
// are refused as Stripe refuses them.
//
// For tests: POST /_fake/fail-next makes the next API call answer 500 (Stripe's api_error);
// POST /_fake/refuse-next makes the next session creation answer 400 (an invalid_request_error, as
// for an amount Stripe will not charge);
// GET /_fake/events lists the events sent and whether each was acknowledged; GET /_fake/refunds
// the refunds made.
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import Stripe from 'stripe';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
if (!args.key) {
  console.error('fake-stripe: --key is required');
  process.exit(2);
}
const stripe = new Stripe(args.key);
const API_VERSION = '2025-03-31.basil';
const MAX_BODY = 64 * 1024;

const sessions = new Map();
const intents = new Map();
const refunds = [];
const replies = new Map(); // Idempotency-Key → { params, status, body }
const events = [];
let failNext = 0;
let refuseNext = 0;
let base = '';

const id = (prefix) => `${prefix}_test_${randomBytes(12).toString('hex')}`;
const now = () => Math.floor(Date.now() / 1000);

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', 'request-id': id('req'), ...headers });
  res.end(JSON.stringify(body));
}
function fail(res, status, type, message, extra = {}) {
  send(res, status, { error: { type, message, ...extra } });
}
const invalid = (res, message, extra = {}) => fail(res, 400, 'invalid_request_error', message, extra);

// Parameters each call takes (Stripe's names; `[n]` stands for an index).
const ALLOWED = {
  session: new Set([
    'mode', 'success_url', 'cancel_url', 'client_reference_id', 'customer_email', 'expires_at', 'locale',
    'payment_method_types[n]', 'metadata[*]', 'payment_intent_data[metadata][*]', 'line_items[n][quantity]',
    'line_items[n][price_data][currency]', 'line_items[n][price_data][unit_amount]',
    'line_items[n][price_data][product_data][name]', 'expand[n]',
  ]),
  refund: new Set(['payment_intent', 'amount', 'reason', 'metadata[*]', 'expand[n]']),
  none: new Set(['expand[n]']),
};
function unknownParam(params, allowed) {
  return Object.keys(params).find((k) => {
    const shape = k.replace(/\[\d+\]/g, '[n]');
    const open = shape.replace(/\[[^\]]+\]$/, '[*]');
    return !allowed.has(shape) && !allowed.has(open);
  });
}
function prefixed(params, prefix) {
  const out = {};
  for (const [k, v] of Object.entries(params)) {
    const m = k.startsWith(prefix) && /^\[([^\]]+)\]$/.exec(k.slice(prefix.length));
    if (m) out[m[1]] = v;
  }
  return out;
}

function deliver(type, object) {
  const event = {
    id: id('evt'), object: 'event', api_version: API_VERSION, created: now(), livemode: false,
    pending_webhooks: 1, request: { id: null, idempotency_key: null }, type, data: { object },
  };
  const record = { id: event.id, type, acknowledged: false, attempts: 0 };
  events.push(record);
  if (!args.webhook) return;
  const payload = JSON.stringify(event);
  const attempt = async () => {
    record.attempts += 1;
    const header = stripe.webhooks.generateTestHeaderString({ payload, secret: args['webhook-secret'] });
    try {
      const r = await fetch(args.webhook, {
        method: 'POST',
        headers: { 'content-type': 'application/json; charset=utf-8', 'stripe-signature': header },
        body: payload,
      });
      await r.arrayBuffer();
      if (r.ok) {
        record.acknowledged = true;
        return;
      }
      record.last = r.status;
    } catch (e) {
      record.last = String(e);
    }
    if (record.attempts < 8) setTimeout(attempt, 250 * 2 ** record.attempts);
  };
  attempt();
}

function createSession(p, res) {
  if (p.mode !== 'payment') return invalid(res, 'This integration supports only mode=payment.', { param: 'mode' });
  if (!p.success_url) return invalid(res, 'Missing required param: success_url.', { code: 'parameter_missing', param: 'success_url' });
  for (const u of ['success_url', 'cancel_url']) {
    if (p[u] !== undefined && !/^https?:\/\/\S+$/.test(p[u])) return invalid(res, 'Not a valid URL', { code: 'url_invalid', param: u });
  }
  const item = 'line_items[0]';
  const amount = Number(p[`${item}[price_data][unit_amount]`]);
  const quantity = Number(p[`${item}[quantity]`] ?? 1);
  const currency = p[`${item}[price_data][currency]`];
  const name = p[`${item}[price_data][product_data][name]`];
  if (!Number.isInteger(amount) || amount < 0 || !Number.isInteger(quantity) || quantity < 1 || !/^[a-z]{3}$/.test(currency ?? '') || !name) {
    return invalid(res, 'line_items[0] needs quantity and price_data with currency, unit_amount and product_data[name].', { param: 'line_items' });
  }
  if (p['line_items[1][quantity]'] !== undefined) return invalid(res, 'This integration supports one line item.', { param: 'line_items' });
  const minimum = { eur: 50, usd: 50, gbp: 30 }[currency] ?? 0;
  if (amount * quantity < minimum) {
    return invalid(res, `The Checkout Session's total amount due must add up to at least ${minimum} ${currency}.`, { param: 'line_items' });
  }
  const created = now();
  const expiresAt = p.expires_at === undefined ? created + 86400 : Number(p.expires_at);
  if (!Number.isInteger(expiresAt) || expiresAt < created + 1800 || expiresAt > created + 86400) {
    return invalid(res, 'The `expires_at` timestamp must be between 30 minutes and 24 hours after the Checkout Session is created.', { param: 'expires_at' });
  }
  const methods = Object.keys(p).filter((k) => k.startsWith('payment_method_types[')).map((k) => p[k]);
  const session = {
    id: id('cs'), object: 'checkout.session', amount_subtotal: amount * quantity, amount_total: amount * quantity,
    cancel_url: p.cancel_url ?? null, client_reference_id: p.client_reference_id ?? null, created, currency,
    customer_email: p.customer_email ?? null, expires_at: expiresAt, livemode: false, metadata: prefixed(p, 'metadata'),
    mode: 'payment', payment_intent: null, payment_method_types: methods.length ? methods : ['card'],
    payment_status: 'unpaid', status: 'open', success_url: p.success_url, ui_mode: 'hosted',
    line_name: name, intent_metadata: prefixed(p, 'payment_intent_data[metadata]'),
  };
  session.url = `${base}/c/pay/${session.id}`;
  sessions.set(session.id, session);
  // Expiry by itself at expires_at (a timer only when it falls within a day: always, here).
  setTimeout(() => {
    if (session.status !== 'open') return;
    session.status = 'expired';
    session.url = null;
    deliver('checkout.session.expired', view(session));
  }, Math.max(0, expiresAt * 1000 - Date.now())).unref();
  return send(res, 200, view(session));
}
// What the API shows of a session (the fake keeps a few private fields beside it).
const view = ({ line_name, intent_metadata, ...s }) => s;

function expire(session, res) {
  if (session.status !== 'open') {
    return invalid(res, `Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a status of "${session.status}".`);
  }
  session.status = 'expired';
  session.url = null;
  deliver('checkout.session.expired', view(session));
  return send(res, 200, view(session));
}

function refund(p, res) {
  const intent = intents.get(p.payment_intent ?? '');
  if (!intent) return invalid(res, `No such payment_intent: '${p.payment_intent ?? ''}'`, { code: 'resource_missing', param: 'payment_intent' });
  const left = intent.amount - intent.amount_refunded;
  const amount = p.amount === undefined ? left : Number(p.amount);
  if (!Number.isInteger(amount) || amount < 1) return invalid(res, 'Invalid positive integer', { param: 'amount' });
  if (amount > left) {
    return invalid(res, `Refund amount (${amount}) is greater than unrefunded amount on charge (${left})`, { code: 'amount_too_large', param: 'amount' });
  }
  intent.amount_refunded += amount;
  const r = { id: id('re'), object: 'refund', amount, currency: intent.currency, payment_intent: intent.id, status: 'succeeded', created: now() };
  refunds.push(r);
  return send(res, 200, r);
}

async function api(req, res, path, p) {
  const auth = req.headers.authorization ?? '';
  const basic = auth.startsWith('Basic ') ? Buffer.from(auth.slice(6), 'base64').toString().split(':')[0] : null;
  if (auth !== `Bearer ${args.key}` && basic !== args.key) {
    return fail(res, 401, 'invalid_request_error', 'Invalid API Key provided.', { code: 'api_key_invalid' });
  }
  if (failNext > 0) {
    failNext -= 1;
    return fail(res, 500, 'api_error', 'An unknown error occurred (the fake was told to fail).');
  }
  if (refuseNext > 0 && req.method === 'POST' && path === '/v1/checkout/sessions') {
    refuseNext -= 1;
    return invalid(res, 'This request was refused (the fake was told to refuse).', { code: 'parameter_invalid_integer' });
  }
  const key = req.method === 'POST' ? req.headers['idempotency-key'] : undefined;
  if (key !== undefined) {
    const seen = replies.get(key);
    const params = JSON.stringify([path, p]);
    if (seen && seen.params !== params) {
      return fail(res, 400, 'idempotency_error', 'Keys for idempotent requests can only be used with the same parameters they were first used with.');
    }
    if (seen) return send(res, seen.status, seen.body, { 'idempotent-replayed': 'true' });
    const inner = res.end.bind(res);
    res.end = (chunk) => {
      if (res.statusCode < 500) replies.set(key, { params, status: res.statusCode, body: JSON.parse(chunk) });
      return inner(chunk);
    };
  }
  let m;
  const allowedFor = (set) => {
    const bad = unknownParam(p, set);
    if (bad) invalid(res, `Received unknown parameter: ${bad}`, { code: 'parameter_unknown', param: bad });
    return !bad;
  };
  if (req.method === 'POST' && path === '/v1/checkout/sessions') return allowedFor(ALLOWED.session) && createSession(p, res);
  if (req.method === 'POST' && path === '/v1/refunds') return allowedFor(ALLOWED.refund) && refund(p, res);
  if ((m = /^\/v1\/checkout\/sessions\/([A-Za-z0-9_]+)(\/expire)?$/.exec(path))) {
    const session = sessions.get(m[1]);
    if (!allowedFor(ALLOWED.none)) return;
    if (!session) return invalid(res, `No such checkout.session: '${m[1]}'`, { code: 'resource_missing', param: 'session' });
    if (req.method === 'GET' && !m[2]) return send(res, 200, view(session));
    if (req.method === 'POST' && m[2]) return expire(session, res);
  }
  return fail(res, 404, 'invalid_request_error', `Unrecognized request URL (${req.method}: ${path}).`);
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
function page(res, status, title, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)}</title></head><body><main><h1>${esc(title)}</h1>${body}</main></body></html>`);
}
function checkoutPage(session, res, error = '') {
  const total = `${(session.amount_total / 100).toFixed(2)} ${session.currency.toUpperCase()}`;
  const back = session.cancel_url ? `<p><a id="back" href="${esc(session.cancel_url)}">Back</a></p>` : '';
  return page(res, 200, `Pay ${total}`, `<p id="item">${esc(session.line_name)}</p><p id="total">${esc(total)}</p>
${error ? `<p id="error" role="alert">${esc(error)}</p>` : ''}
<form method="post"><label>Email <input name="email" type="email" value="${esc(session.customer_email ?? '')}" required></label>
<label>Card number <input name="card" inputmode="numeric" autocomplete="cc-number" value="4242 4242 4242 4242" required></label>
<button type="submit">Pay</button></form>${back}`);
}
function hosted(req, res, sessionId, form) {
  const session = sessions.get(sessionId);
  if (!session) return page(res, 404, 'Something went wrong', '<p>This page could not be found.</p>');
  const done = () => {
    res.writeHead(303, { location: session.success_url.replaceAll('{CHECKOUT_SESSION_ID}', session.id) });
    res.end();
  };
  if (session.status === 'complete') return done();
  if (session.status === 'expired' || session.expires_at <= now()) {
    const back = session.cancel_url ? `<p><a id="back" href="${esc(session.cancel_url)}">Back</a></p>` : '';
    return page(res, 410, 'This Checkout Session is no longer active', back);
  }
  if (req.method !== 'POST') return checkoutPage(session, res);
  const card = (form.card ?? '').replace(/\s/g, '');
  if (card === '4000000000000002') return checkoutPage(session, res, 'Your card was declined.');
  if (!/^\d{12,19}$/.test(card)) return checkoutPage(session, res, 'Your card number is invalid.');
  const intent = {
    id: id('pi'), object: 'payment_intent', amount: session.amount_total, amount_refunded: 0,
    currency: session.currency, status: 'succeeded', metadata: session.intent_metadata,
  };
  intents.set(intent.id, intent);
  Object.assign(session, { status: 'complete', payment_status: 'paid', payment_intent: intent.id, url: null });
  if (form.email) session.customer_details = { email: form.email };
  deliver('checkout.session.completed', view(session));
  return done();
}

const server = createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY) req.destroy();
    else chunks.push(c);
  });
  req.on('end', () => {
    const url = new URL(req.url, base);
    const params = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString()));
    for (const [k, v] of url.searchParams) params[k] = v;
    let m;
    try {
      if (url.pathname.startsWith('/v1/')) return void api(req, res, url.pathname, params);
      if ((m = /^\/c\/pay\/([A-Za-z0-9_]+)$/.exec(url.pathname))) return hosted(req, res, m[1], params);
      if (req.method === 'POST' && url.pathname === '/_fake/fail-next') {
        failNext += 1;
        return send(res, 200, { fail_next: failNext });
      }
      if (req.method === 'POST' && url.pathname === '/_fake/refuse-next') {
        refuseNext += 1;
        return send(res, 200, { refuse_next: refuseNext });
      }
      if (req.method === 'GET' && url.pathname === '/_fake/events') return send(res, 200, events);
      if (req.method === 'GET' && url.pathname === '/_fake/refunds') return send(res, 200, refunds);
      return fail(res, 404, 'invalid_request_error', `Unrecognized request URL (${req.method}: ${url.pathname}).`);
    } catch (e) {
      return fail(res, 500, 'api_error', String(e));
    }
  });
});
server.listen(Number(args.port ?? 0), '127.0.0.1', () => {
  base = `http://127.0.0.1:${server.address().port}`;
  console.log(JSON.stringify({ url: base }));
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
