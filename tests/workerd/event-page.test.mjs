// An event's page (GET /events/{id}) in workerd: the catalog's details (the core played by a
// loopback peer that records what it is asked), the tiers with their prices and what is left from
// the seat objects, the line under them; a crowd costs the core one request, and a page whose core
// is down or whose event the catalog does not know still shows the line.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEdge, startPeer, newKey, keyBindings, inventory, coreClient, admit } from './harness.mjs';

const edgeKey = newKey('edge-test');
const coreKey = newKey('core-test');
const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

const EVENT = '5b7e7c6a-1d2f-4c3b-9a8e-0f1e2d3c4b5a';
const details = {
  id: EVENT, title: 'Opening <Night>', description: 'A night of firsts.\n\nDoors open at 19:00;\nno re-entry.',
  genre: 'concert', starts_local: 'Fri 12 Mar 2027, 20:00', time_zone: 'Europe/Berlin',
  venue_name: 'Globe Hall', city: 'Berlin', organizer: 'Acme Live', state: 'on_sale',
  images: ['https://img.example/hero.jpg', 'http://img.example/plain.jpg', 'https://img.example/2.jpg'],
  tiers: [
    { id: 'seated-tier', name: 'Standard', kind: 'seated', currency: 'EUR', price_minor: 4500,
      zone_prices: { front: 6500 }, price_range: { min_minor: 4500, max_minor: 6500 } },
    { id: 'floor', name: 'Floor', kind: 'ga', currency: 'EUR', price_minor: 3000, zone_prices: {},
      price_range: { min_minor: 3000, max_minor: 3000 } },
  ],
};

async function edge() {
  const asked = [];
  let failing = false;
  const peer = await startPeer((req, res) => {
    asked.push(req.url);
    if (failing) { res.writeHead(500, { 'content-type': 'application/json' }); res.end('{}'); return; }
    if (req.url === `/api/v1/catalog/events/${EVENT}`) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(details));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/problem+json' });
    res.end('{"type":"not-found"}');
  });
  const mf = await startEdge({ ...keyBindings(edgeKey, coreKey), CORE_URL: peer.url });
  cleanups.push(() => peer.close(), () => mf.dispose());
  const { core, publish } = coreClient(mf, coreKey);
  return { mf, core, publish, asked, fail: () => { failing = true; } };
}

async function openLine(core, event) {
  const r = await core('PUT', `/internal/v1/events/${event}/waiting-room`, {
    version: 1, mode: 'fifo', queue_shards: 1, admit_per_minute: 60, max_active: 100, bot: { check: { kind: 'off' } },
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

const page = async (mf, event) => {
  const res = await mf.dispatchFetch(`http://edge/events/${event}`, { headers: { 'user-agent': 'workerd-tests/1' } });
  return { status: res.status, csp: res.headers.get('content-security-policy'), html: await res.text() };
};

test('the page shows the event, its tiers with prices and what is left, then the line; a crowd costs the core one request', async () => {
  const { mf, core, publish, asked } = await edge();
  await publish(inventory(EVENT, { seats: 20, ga: 5 }));
  await openLine(core, EVENT);
  const { status, csp, html } = await page(mf, EVENT);
  assert.equal(status, 200);
  assert.ok(html.includes('<h1>Opening &#60;Night&#62;</h1>') || html.includes('<h1>Opening &lt;Night&gt;</h1>'), 'the title, escaped');
  assert.ok(html.includes('Fri 12 Mar 2027, 20:00 (Europe/Berlin)') && html.includes('Globe Hall, Berlin'));
  assert.ok(html.includes('Presented by Acme Live'));
  assert.ok(html.includes('<p class="description">A night of firsts.</p>'));
  assert.ok(html.includes('Doors open at 19:00;\nno re-entry.'), 'a paragraph keeps its lines');
  assert.ok(html.includes('src="https://img.example/hero.jpg"') && html.includes('src="https://img.example/2.jpg"'));
  assert.ok(!html.includes('http://img.example/plain.jpg'), 'no image over plain http');
  assert.match(csp, /img-src 'self' data: https:;/);
  const home = await mf.dispatchFetch('http://edge/');
  assert.match(home.headers.get('content-security-policy'), /img-src 'self' data:;/, 'other pages load no image from elsewhere');
  const row = (name) => html.split('<tr>').find((r) => r.includes(`<th scope="row">${name}`)) ?? '';
  assert.match(row('Standard'), /<td>45\.00–65\.00 EUR<\/td><td data-left="\*seats">Available<\/td>/);
  assert.match(row('Floor'), /<td>30\.00 EUR<\/td><td data-left="floor">Only 5 left<\/td>/);
  assert.ok(html.includes('Join the line') && html.includes('/assets/event.'), 'the line, and the script that follows what is left');
  // Someone holds every floor place: the next page (this isolate's snapshot is renewed) says so.
  const { token } = await admit(mf, core, EVENT, { version: 2 });
  const hold = await mf.dispatchFetch(`http://edge/api/v1/events/${EVENT}/holds`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'user-agent': 'workerd-tests/1' },
    body: JSON.stringify({ kind: 'general_admission', tier: 'floor', quantity: 5 }),
  });
  assert.equal(hold.status, 201, await hold.text());
  const after = await page(mf, EVENT);
  assert.match(after.html, /<td data-left="floor">Sold out<\/td>/);
  for (let i = 0; i < 5; i++) await page(mf, EVENT);
  assert.deepEqual(asked.filter((u) => u.includes(EVENT)), [`/api/v1/catalog/events/${EVENT}`], 'seven views, one request to the core');
});

test('an event the catalog does not know, or a core that fails, leaves the page with its line', async () => {
  const { mf, core, publish, asked, fail } = await edge();
  const unknown = 'no-catalog-event';
  await publish(inventory(unknown));
  await openLine(core, unknown);
  const plain = await page(mf, unknown);
  assert.equal(plain.status, 200);
  assert.ok(plain.html.includes(`<h1>${unknown}</h1>`) && plain.html.includes('Join the line'));
  assert.ok(!plain.html.includes('class="tiers"'));
  fail();
  await publish(inventory(EVENT));
  await openLine(core, EVENT);
  const started = Date.now();
  const down = await page(mf, EVENT);
  assert.equal(down.status, 200);
  assert.ok(down.html.includes('Join the line') && !down.html.includes('class="tiers"'));
  const again = await page(mf, EVENT);
  assert.equal(again.status, 200);
  assert.equal(asked.filter((u) => u.endsWith(EVENT)).length, 1, 'a failure is remembered a few seconds: the next view does not wait for the core');
  assert.ok(Date.now() - started < 5000);
});

test('the waiting page names the event from the catalog and shows its image', async () => {
  const { mf, core, publish, asked } = await edge();
  await publish(inventory(EVENT));
  const r = await core('PUT', `/internal/v1/events/${EVENT}/waiting-room`, {
    version: 1, mode: 'fifo', queue_shards: 1, admit_per_minute: 60, max_active: 100, paused: true, bot: { check: { kind: 'off' } },
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const headers = { 'user-agent': 'workerd-tests/1', 'content-type': 'application/x-www-form-urlencoded' };
  const joined = await mf.dispatchFetch(`http://edge/events/${EVENT}/join`, { method: 'POST', headers, body: '', redirect: 'manual' });
  assert.equal(joined.status, 303);
  const cookie = joined.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const res = await mf.dispatchFetch(`http://edge/events/${EVENT}`, { headers: { 'user-agent': 'workerd-tests/1', cookie } });
  const html = await res.text();
  assert.ok(html.includes('You are in line for Opening &#60;Night&#62;') || html.includes('You are in line for Opening &lt;Night&gt;'), JSON.stringify(asked));
  assert.ok(html.includes('<img class="hero" src="https://img.example/hero.jpg"'));
  assert.match(res.headers.get('content-security-policy'), /img-src 'self' data: https:;/);
});
