// A local stand-in for the part of Twilio's Programmable Messaging the core uses, answering as
// Twilio's API reference documents it, for tests and the local stack (Twilio itself cannot be
// reached here). Loopback only; state in memory. tests/fakes/twilio.test.mjs drives it with
// Twilio's official Node library (npm `twilio`): what the library sends, it takes; what it answers,
// the library reads as Twilio's resources and errors; what it signs, the library's
// `validateRequest` accepts.
//
//   node scripts/fake-twilio.mjs --sid AC... --token <auth token> [--port 0] [--incoming URL]
//
// The first line on stdout is {"url": "http://127.0.0.1:<port>"}.
//
// The API (form-encoded requests, HTTP basic auth with the account SID and auth token, JSON
// answers and Twilio's error objects {code, message, more_info, status}):
//   POST /2010-04-01/Accounts/{AccountSid}/Messages.json   To, From or MessagingServiceSid, Body,
//                                                          StatusCallback
//   GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json
// Unknown parameters are refused (Twilio ignores them; a misspelt field should fail a test here).
// Twilio's test numbers behave as with test credentials: +15005550001 is no valid number (21211),
// +15005550009 cannot receive texts (21614), +15005550004 is blocklisted (21610). A number that
// sent STOP is refused with 21610 until it sends START, as Twilio's default opt-out handling does.
//
// Every message accepted is reported to its StatusCallback, signed with X-Twilio-Signature (HMAC-
// SHA1 of the URL and the sorted parameters, keyed by the auth token): `sent`, then `delivered`
// (or `undelivered` with ErrorCode 30003 for a number marked unreachable).
//
// For tests and the local stack:
//   POST /_fake/reply {"from", "body"}      a text from `from` to the account's number: STOP words
//                                           opt it out, START words back in; posted (signed) to
//                                           --incoming as Twilio's messaging webhook, with
//                                           OptOutType as Advanced Opt-Out adds it
//   POST /_fake/unreachable {"to"}           later texts to `to` end `undelivered` (30003)
//   POST /_fake/fail-next                    the next API call answers 500 (Twilio's 20500)
//   GET  /_fake/messages                     every message, with the callbacks sent and their answers
import { createServer } from 'node:http';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
if (!args.sid || !args.token) {
  console.error('fake-twilio: --sid and --token are required');
  process.exit(2);
}
const SID = args.sid;
const TOKEN = args.token;
const MAX_BODY = 64 * 1024;
const E164 = /^\+[1-9][0-9]{6,14}$/;
const STOP = ['STOP', 'STOPALL', 'UNSUBSCRIBE', 'CANCEL', 'END', 'QUIT', 'OPTOUT', 'REVOKE', 'STOP ALL'];
const START = ['START', 'YES', 'UNSTOP'];
const ALLOWED = new Set(['To', 'From', 'MessagingServiceSid', 'Body', 'StatusCallback']);

const messages = new Map();
const optedOut = new Set(['+15005550004']);
const unreachable = new Set();
let failNext = 0;
let base = '';
let ownNumber = '+15005550006';

const sid = (prefix) => prefix + randomBytes(16).toString('hex');
const rfc2822 = (d) => d.toUTCString().replace('GMT', '+0000');

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'twilio-request-id': sid('RQ') });
  res.end(JSON.stringify(body));
}
// Twilio's error object.
function fail(res, status, code, message) {
  send(res, status, { code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status });
}

// Twilio's signature: Base64(HMAC-SHA1(auth token, URL + each parameter's name and value, sorted by name)).
function signature(token, url, params) {
  const data = Object.keys(params).sort().reduce((acc, k) => acc + k + params[k], url);
  return createHmac('sha1', token).update(Buffer.from(data, 'utf-8')).digest('base64');
}

function authorized(req) {
  const header = req.headers.authorization || '';
  if (!header.startsWith('Basic ')) return false;
  const given = Buffer.from(header.slice(6), 'base64');
  const wanted = Buffer.from(`${SID}:${TOKEN}`);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

function resource(m) {
  return {
    sid: m.sid, account_sid: SID, api_version: '2010-04-01', body: m.body, direction: 'outbound-api',
    from: m.from, to: m.to, messaging_service_sid: m.messaging_service_sid, status: m.status,
    num_segments: String(m.segments), num_media: '0', price: null, price_unit: 'USD',
    error_code: m.error_code, error_message: m.error_message,
    date_created: rfc2822(m.created), date_updated: rfc2822(m.updated), date_sent: m.sent ? rfc2822(m.sent) : null,
    uri: `/2010-04-01/Accounts/${SID}/Messages/${m.sid}.json`, subresource_uris: { media: `/2010-04-01/Accounts/${SID}/Messages/${m.sid}/Media.json` },
  };
}

// GSM-7 texts are 160 characters in one segment, 153 a segment beyond; anything else (UCS-2) 70 and 67.
function segments(body) {
  const gsm = /^[A-Za-z0-9 \r\n@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!"#¤%&'()*+,\-./:;<=>?¡ÄÖÑÜ§¿äöñüà^{}\\[~\]|€]*$/.test(body);
  const [one, many] = gsm ? [160, 153] : [70, 67];
  return body.length <= one ? 1 : Math.ceil(body.length / many);
}

// Posts `params` to `url`, signed: the answer's status (0 when there was none).
async function post(url, params) {
  const headers = { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': signature(TOKEN, url, params), 'i-twilio-idempotency-token': sid('') };
  try {
    const r = await fetch(url, { method: 'POST', headers, body: new URLSearchParams(params).toString(), signal: AbortSignal.timeout(15000) });
    return { status: r.status, body: await r.text() };
  } catch (e) {
    return { status: 0, body: String(e) };
  }
}

async function report(m, status, extra = {}) {
  m.status = status;
  m.updated = new Date();
  if (status === 'sent') m.sent = new Date();
  if (!m.callback) return;
  const params = { AccountSid: SID, ApiVersion: '2010-04-01', From: m.from || '', To: m.to, MessageSid: m.sid, SmsSid: m.sid, MessageStatus: status, SmsStatus: status, ...extra };
  if (m.messaging_service_sid) params.MessagingServiceSid = m.messaging_service_sid;
  const answer = await post(m.callback, params);
  m.callbacks.push({ status, answer: answer.status });
}

async function deliver(m) {
  await new Promise((ok) => setTimeout(ok, 20));
  await report(m, 'sent');
  await new Promise((ok) => setTimeout(ok, 20));
  if (unreachable.has(m.to)) {
    m.error_code = 30003;
    m.error_message = 'Unreachable destination handset';
    await report(m, 'undelivered', { ErrorCode: '30003' });
  } else {
    await report(m, 'delivered');
  }
}

function createMessage(res, form) {
  for (const k of form.keys()) {
    if (!ALLOWED.has(k)) return fail(res, 400, 21601, `Unknown parameter: ${k}`);
  }
  const to = form.get('To') || '';
  const body = form.get('Body') || '';
  const from = form.get('From');
  const service = form.get('MessagingServiceSid');
  const callback = form.get('StatusCallback');
  if (!to) return fail(res, 400, 21604, "A 'To' phone number is required.");
  if (!E164.test(to) || to === '+15005550001') return fail(res, 400, 21211, `The 'To' number ${to} is not a valid phone number.`);
  if (!from && !service) return fail(res, 400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message.");
  if (from && !E164.test(from)) return fail(res, 400, 21212, `The 'From' number ${from} is not a valid phone number, shortcode, or alphanumeric sender ID.`);
  if (service && !/^MG[0-9a-f]{32}$/.test(service)) return fail(res, 400, 21704, 'The Messaging Service Sid is invalid.');
  if (!body) return fail(res, 400, 21602, 'Message body is required.');
  if (body.length > 1600) return fail(res, 400, 21617, 'The concatenated message body exceeds the 1600 character limit.');
  if (callback && !/^https?:\/\/[^\s]+$/.test(callback)) return fail(res, 400, 21609, 'The StatusCallback URL is not a valid URL.');
  if (to === '+15005550009') return fail(res, 400, 21614, `'To' number ${to} is not a mobile number`);
  if (optedOut.has(to)) return fail(res, 400, 21610, 'Attempt to send to unsubscribed recipient');
  if (from) ownNumber = from;
  const now = new Date();
  const m = {
    sid: sid('SM'), to, from: from || null, messaging_service_sid: service || null, body, callback, status: 'queued',
    segments: segments(body), error_code: null, error_message: null, created: now, updated: now, sent: null, callbacks: [],
  };
  messages.set(m.sid, m);
  send(res, 201, resource(m));
  deliver(m);
}

async function reply(res, b) {
  const from = b.from || '';
  if (!E164.test(from)) return send(res, 400, { error: 'from must be E.164' });
  const text = String(b.body || '').trim();
  const word = text.split(/\s+/).join(' ').toUpperCase();
  let optOutType = '';
  if (STOP.includes(word)) {
    optedOut.add(from);
    optOutType = 'STOP';
  } else if (START.includes(word)) {
    optedOut.delete(from);
    optOutType = 'START';
  } else if (word === 'HELP' || word === 'INFO') {
    optOutType = 'HELP';
  }
  if (!args.incoming) return send(res, 200, { opted_out: optedOut.has(from), delivered: null });
  const params = { AccountSid: SID, ApiVersion: '2010-04-01', MessageSid: sid('SM'), SmsSid: sid('SM'), SmsMessageSid: sid('SM'), From: from, To: ownNumber, Body: text, NumMedia: '0', NumSegments: '1' };
  if (optOutType) params.OptOutType = optOutType;
  const answer = await post(args.incoming, params);
  send(res, 200, { opted_out: optedOut.has(from), delivered: answer });
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
    const raw = Buffer.concat(chunks).toString('utf-8');
    const url = new URL(req.url, base);
    const path = url.pathname;
    if (path.startsWith('/_fake/')) {
      const b = raw ? JSON.parse(raw) : {};
      if (req.method === 'POST' && path === '/_fake/reply') return reply(res, b);
      if (req.method === 'POST' && path === '/_fake/unreachable') { unreachable.add(b.to); return send(res, 200, {}); }
      if (req.method === 'POST' && path === '/_fake/fail-next') { failNext += 1; return send(res, 200, {}); }
      if (req.method === 'GET' && path === '/_fake/messages') {
        return send(res, 200, [...messages.values()].map((m) => ({ ...resource(m), callbacks: m.callbacks })));
      }
      return send(res, 404, { error: 'no such control' });
    }
    const account = path.match(/^\/2010-04-01\/Accounts\/([^/]+)\/Messages(?:\/([^/]+))?\.json$/);
    if (!account) return fail(res, 404, 20404, `The requested resource ${path} was not found`);
    if (!authorized(req) || account[1] !== SID) return fail(res, 401, 20003, 'Authenticate');
    if (failNext > 0) {
      failNext -= 1;
      return fail(res, 500, 20500, 'An internal server error has occurred');
    }
    if (req.method === 'POST' && !account[2]) {
      if (!(req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded')) {
        return fail(res, 400, 21601, 'The request must be application/x-www-form-urlencoded');
      }
      return createMessage(res, new URLSearchParams(raw));
    }
    if (req.method === 'GET' && account[2]) {
      const m = messages.get(account[2]);
      return m ? send(res, 200, resource(m)) : fail(res, 404, 20404, `The requested resource ${path} was not found`);
    }
    return fail(res, 405, 20004, 'Method not allowed');
  });
});

server.listen(Number(args.port || 0), '127.0.0.1', () => {
  base = `http://127.0.0.1:${server.address().port}`;
  console.log(JSON.stringify({ url: base }));
});
