// The local Stripe (scripts/fake-stripe.mjs) through Stripe's official Node library: what the
// library sends, the fake takes; what the fake answers and signs, the library reads and verifies.
// If the fake drifted from Stripe's documented API, this would notice before the core's tests.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Stripe from 'stripe';

const KEY = 'sk_test_fake';
const SECRET = 'whsec_fake';
const script = fileURLToPath(new URL('../../scripts/fake-stripe.mjs', import.meta.url));
let fake, base, stripe, hook, received;

before(async () => {
  // The webhook endpoint, verifying with the library as a Stripe integration does.
  received = [];
  hook = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      try {
        received.push(stripe.webhooks.constructEvent(Buffer.concat(chunks), req.headers['stripe-signature'], SECRET));
        res.writeHead(200).end('{}');
      } catch (e) {
        res.writeHead(400).end(String(e));
      }
    });
  });
  await new Promise((ok) => hook.listen(0, '127.0.0.1', ok));
  fake = spawn(process.execPath, [script, '--key', KEY, '--webhook', `http://127.0.0.1:${hook.address().port}/`, '--webhook-secret', SECRET], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = await createInterface({ input: fake.stdout })[Symbol.asyncIterator]().next().then((r) => [r.value]);
  base = new URL(JSON.parse(line).url);
  stripe = new Stripe(KEY, { host: base.hostname, port: base.port, protocol: 'http', maxNetworkRetries: 0 });
});
after(() => {
  fake?.kill();
  hook?.close();
});

const until = async (what, check) => {
  for (let i = 0; i < 100; i++) {
    const v = check();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
};
const params = (extra = {}) => ({
  mode: 'payment',
  line_items: [{ quantity: 1, price_data: { currency: 'eur', unit_amount: 12852, product_data: { name: 'Tickets: Long holds' } } }],
  payment_method_types: ['card'],
  success_url: 'http://shop.test/orders/o1',
  cancel_url: 'http://shop.test/orders/o1',
  client_reference_id: 'o1',
  metadata: { order_id: 'o1' },
  payment_intent_data: { metadata: { order_id: 'o1' } },
  customer_email: 'a@b.test',
  expires_at: Math.floor(Date.now() / 1000) + 3600,
  ...extra,
});

test('a session is created once per idempotency key, paid on the hosted page, and refunded in part', async () => {
  const p = params();
  const first = await stripe.checkout.sessions.create(p, { idempotencyKey: 'order-o1' });
  const again = await stripe.checkout.sessions.create(p, { idempotencyKey: 'order-o1' });
  assert.equal(again.id, first.id);
  assert.equal(first.object, 'checkout.session');
  assert.deepEqual([first.status, first.payment_status, first.amount_total, first.currency], ['open', 'unpaid', 12852, 'eur']);
  assert.equal(first.metadata.order_id, 'o1');
  await assert.rejects(
    stripe.checkout.sessions.create({ ...p, client_reference_id: 'other' }, { idempotencyKey: 'order-o1' }),
    (e) => e.type === 'StripeIdempotencyError',
  );

  // The buyer pays on the hosted page and is sent back to success_url.
  const page = await fetch(first.url);
  assert.match(await page.text(), /128\.52 EUR/);
  const paid = await fetch(first.url, { method: 'POST', body: new URLSearchParams({ card: '4242 4242 4242 4242' }), redirect: 'manual' });
  assert.equal(paid.status, 303);
  assert.equal(paid.headers.get('location'), 'http://shop.test/orders/o1');
  const done = await stripe.checkout.sessions.retrieve(first.id);
  assert.deepEqual([done.status, done.payment_status], ['complete', 'paid']);
  assert.match(done.payment_intent, /^pi_/);
  const event = await until('the completed event', () => received.find((e) => e.data.object.id === first.id));
  assert.equal(event.type, 'checkout.session.completed');

  // A paid session cannot be expired; refunds stop at what was paid.
  await assert.rejects(stripe.checkout.sessions.expire(first.id), (e) => e.type === 'StripeInvalidRequestError');
  const refund = await stripe.refunds.create({ payment_intent: done.payment_intent, amount: 5000 }, { idempotencyKey: 'refund-o1' });
  const replay = await stripe.refunds.create({ payment_intent: done.payment_intent, amount: 5000 }, { idempotencyKey: 'refund-o1' });
  assert.equal(replay.id, refund.id);
  assert.equal(refund.status, 'succeeded');
  await assert.rejects(stripe.refunds.create({ payment_intent: done.payment_intent, amount: 9000 }), (e) => e.code === 'amount_too_large');
});

test('an open session expires once, with its event; a declined card leaves it open', async () => {
  const s = await stripe.checkout.sessions.create(params());
  const declined = await fetch(s.url, { method: 'POST', body: new URLSearchParams({ card: '4000 0000 0000 0002' }) });
  assert.match(await declined.text(), /Your card was declined/);
  assert.equal((await stripe.checkout.sessions.retrieve(s.id)).status, 'open');
  const expired = await stripe.checkout.sessions.expire(s.id);
  assert.equal(expired.status, 'expired');
  await assert.rejects(stripe.checkout.sessions.expire(s.id), (e) => e.type === 'StripeInvalidRequestError');
  assert.equal((await fetch(s.url)).status, 410);
  const event = await until('the expired event', () => received.find((e) => e.data.object.id === s.id));
  assert.equal(event.type, 'checkout.session.expired');
});

test('bad requests get Stripe’s errors', async () => {
  await assert.rejects(stripe.checkout.sessions.create(params({ expires_at: Math.floor(Date.now() / 1000) + 60 })), (e) => e.param === 'expires_at');
  await assert.rejects(stripe.checkout.sessions.create(params({ shipping_options: [{ shipping_rate: 'x' }] })), (e) => e.code === 'parameter_unknown');
  await assert.rejects(stripe.checkout.sessions.retrieve('cs_missing'), (e) => e.code === 'resource_missing');
  const tiny = [{ quantity: 1, price_data: { currency: 'eur', unit_amount: 49, product_data: { name: 'x' } } }];
  await assert.rejects(stripe.checkout.sessions.create(params({ line_items: tiny })), (e) => e.param === 'line_items');
  await assert.rejects(new Stripe('sk_test_wrong', { host: base.hostname, port: base.port, protocol: 'http' }).checkout.sessions.retrieve('cs_x'),
    (e) => e.type === 'StripeAuthenticationError');
  await fetch(new URL('/_fake/fail-next', base), { method: 'POST' });
  await assert.rejects(stripe.checkout.sessions.create(params()), (e) => e.type === 'StripeAPIError');
});
