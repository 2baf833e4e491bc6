// The local Twilio (scripts/fake-twilio.mjs) through Twilio's official Node library (npm `twilio`):
// what the library sends, the fake takes; what the fake answers, the library reads as Twilio's
// resources and errors; what the fake signs (delivery reports, incoming texts), the library's
// `validateRequest` accepts. If the fake drifted from Twilio's documented API, this would notice
// before the core's tests.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import twilio from 'twilio';

const SID = 'AC' + '0'.repeat(31) + '1';
const TOKEN = 'fake-auth-token-0123456789';
const script = fileURLToPath(new URL('../../scripts/fake-twilio.mjs', import.meta.url));
let fake, base, client, hook, hookUrl, received;

before(async () => {
  // The core's side: a server that checks every request with the library, as an integration does.
  received = [];
  hook = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const params = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString()));
      const url = hookUrl + req.url;
      const valid = twilio.validateRequest(TOKEN, req.headers['x-twilio-signature'], url, params);
      received.push({ path: req.url, params, valid });
      res.writeHead(valid ? 200 : 403, { 'content-type': 'text/xml' }).end('<Response/>');
    });
  });
  await new Promise((ok) => hook.listen(0, '127.0.0.1', ok));
  hookUrl = `http://127.0.0.1:${hook.address().port}`;
  fake = spawn(process.execPath, [script, '--sid', SID, '--token', TOKEN, '--incoming', `${hookUrl}/incoming`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = await createInterface({ input: fake.stdout })[Symbol.asyncIterator]().next().then((r) => [r.value]);
  base = JSON.parse(line).url;
  // The library calls https://api.twilio.com; its own request client, pointed at the fake.
  const inner = new twilio.RequestClient();
  const httpClient = {
    request: (opts) => inner.request({ ...opts, uri: opts.uri.replace('https://api.twilio.com', base) }),
  };
  client = twilio(SID, TOKEN, { httpClient, autoRetry: false });
});
after(() => {
  fake?.kill();
  hook?.close();
});

const until = async (what, check) => {
  for (let i = 0; i < 100; i++) {
    const v = await check();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
};
const control = async (path, body) =>
  (await fetch(base + path, { method: 'POST', body: JSON.stringify(body ?? {}) })).json();

test('a message is taken, reported sent then delivered with signatures the library accepts, and fetched', async () => {
  const m = await client.messages.create({
    to: '+447700900123', from: '+15005550006', body: 'Your tickets: https://shop.test/orders/1#t', statusCallback: `${hookUrl}/status`,
  });
  assert.match(m.sid, /^SM[0-9a-f]{32}$/);
  assert.equal(m.status, 'queued');
  assert.equal(m.to, '+447700900123');
  assert.equal(m.numSegments, '1');
  assert.ok(m.dateCreated instanceof Date && !isNaN(m.dateCreated));
  const reports = await until('two reports', () => {
    const r = received.filter((x) => x.path === '/status' && x.params.MessageSid === m.sid);
    return r.length === 2 && r;
  });
  assert.deepEqual(reports.map((r) => r.params.MessageStatus), ['sent', 'delivered']);
  assert.ok(reports.every((r) => r.valid), 'the library validates the fake\'s signatures');
  const fetched = await client.messages(m.sid).fetch();
  assert.equal(fetched.status, 'delivered');
});

test('an unreachable number is reported undelivered with its error code', async () => {
  await control('/_fake/unreachable', { to: '+447700900999' });
  const m = await client.messages.create({ to: '+447700900999', from: '+15005550006', body: 'hi', statusCallback: `${hookUrl}/status` });
  const last = await until('undelivered', () =>
    received.find((x) => x.params.MessageSid === m.sid && x.params.MessageStatus === 'undelivered'));
  assert.equal(last.params.ErrorCode, '30003');
  assert.ok(last.valid);
});

test('refusals are Twilio\'s errors, as the library reads them', async () => {
  const refused = async (params, code, status = 400) =>
    assert.rejects(client.messages.create({ from: '+15005550006', body: 'hi', ...params }), (e) => {
      assert.equal(e.constructor.name, 'RestException');
      assert.equal(e.code, code);
      assert.equal(e.status, status);
      assert.match(e.moreInfo, /twilio\.com\/docs\/errors/);
      return true;
    });
  await refused({ to: '+15005550001' }, 21211);
  await refused({ to: '07700900123' }, 21211);
  await refused({ to: '+15005550009' }, 21614);
  await refused({ to: '+15005550004' }, 21610);
  await refused({ to: '+447700900123', body: 'x'.repeat(1601) }, 21617);
  await refused({ to: '+447700900123', maxPrice: '0.5' }, 21601);
  const wrong = twilio(SID, 'another-token-0123456789', { httpClient: { request: (o) => new twilio.RequestClient().request({ ...o, uri: o.uri.replace('https://api.twilio.com', base) }) } });
  await assert.rejects(wrong.messages.create({ to: '+447700900123', from: '+15005550006', body: 'hi' }), (e) => e.code === 20003 && e.status === 401);
  await control('/_fake/fail-next');
  await refused({ to: '+447700900123' }, 20500, 500);
});

test('STOP opts a number out (21610 until START), and the incoming texts are signed', async () => {
  const stop = await control('/_fake/reply', { from: '+447700900555', body: ' stop ' });
  assert.equal(stop.opted_out, true);
  assert.equal(stop.delivered.status, 200);
  const incoming = received.filter((x) => x.path === '/incoming');
  assert.equal(incoming.at(-1).params.OptOutType, 'STOP');
  assert.equal(incoming.at(-1).params.From, '+447700900555');
  assert.ok(incoming.at(-1).valid);
  await assert.rejects(client.messages.create({ to: '+447700900555', from: '+15005550006', body: 'hi' }), (e) => e.code === 21610);
  const start = await control('/_fake/reply', { from: '+447700900555', body: 'START' });
  assert.equal(start.opted_out, false);
  const m = await client.messages.create({ to: '+447700900555', from: '+15005550006', body: 'hi' });
  assert.equal(m.status, 'queued');
});
