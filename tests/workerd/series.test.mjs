// A series' dates at the edge (docs/series.md), the core played by a loopback peer that records
// what it is asked: an event's page lists its series' other dates and links them; the series' page
// (GET /series/{id}) lists every date by day, starts at a day, pages on, and passes nothing but
// plain values to the core; the front page shows a series once with a link to all its dates.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEdge, startPeer, newKey, keyBindings, inventory, coreClient } from './harness.mjs';

const edgeKey = newKey('edge-test');
const coreKey = newKey('core-test');
const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

const SERIES = '0b8f7c52-8a3e-4c7e-9d1e-3f2a1b0c9d8e';
const EVENT = '5b7e7c6a-1d2f-4c3b-9a8e-0f1e2d3c4b5a';
const OTHER = '6c8f8d7b-2e3a-4d4c-8b9f-1a2b3c4d5e6f';
const LATER = '7d9a9e8c-3f4b-4e5d-9c0a-2b3c4d5e6f7a';
const date = (id, day, time, state = 'on_sale') =>
  ({ id, day_local: day, time_local: time, starts_local: `${day}, ${time}`, state, buy_path: `/events/${id}` });
const dates = [
  date(EVENT, 'Sat 2 Jan 2027', '10:00'),
  date(OTHER, 'Sat 2 Jan 2027', '12:00', 'sold_out'),
  date(LATER, 'Sun 3 Jan 2027', '10:00'),
];
const details = {
  id: EVENT, title: 'Museum after dark', description: '', genre: 'exhibition', starts_local: 'Sat 2 Jan 2027, 10:00',
  time_zone: 'Europe/Berlin', venue_name: 'Globe Hall', city: 'Berlin', organizer: 'Acme', state: 'on_sale', images: [],
  tiers: [{ id: 'floor', name: 'Entry', kind: 'ga', currency: 'EUR', price_minor: 1500, zone_prices: {} }],
  series_id: SERIES, series_title: 'After dark', series_dates: 3,
  series: { id: SERIES, title: 'After dark', dates: 3, next: dates, path: `/series/${SERIES}` },
};

async function edge() {
  const asked = [];
  const peer = await startPeer((req, res) => {
    asked.push(req.url);
    const json = (status, body) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
    const url = new URL(req.url, 'http://core');
    if (url.pathname === `/api/v1/catalog/events/${EVENT}`) return json(200, details);
    if (url.pathname === `/api/v1/catalog/series/${SERIES}`) {
      const items = url.searchParams.get('from_day') === '2027-01-03' ? dates.slice(2) : url.searchParams.get('cursor') === 'page-2' ? dates.slice(2) : dates.slice(0, 2);
      const next_cursor = !url.searchParams.get('from_day') && !url.searchParams.get('cursor') ? 'page-2' : null;
      return json(200, { id: SERIES, title: 'After dark', venue_name: 'Globe Hall', city: 'Berlin', organizer: 'Acme', dates: 3, items, next_cursor });
    }
    if (url.pathname === '/api/v1/catalog/events') {
      return json(200, { items: [{ ...details, series: undefined }], next_cursor: null });
    }
    res.writeHead(404, { 'content-type': 'application/problem+json' });
    res.end('{"type":"not-found"}');
  });
  const mf = await startEdge({ ...keyBindings(edgeKey, coreKey), CORE_URL: peer.url });
  cleanups.push(() => peer.close(), () => mf.dispose());
  return { mf, asked, ...coreClient(mf, coreKey) };
}

const get = async (mf, path) => {
  const res = await mf.dispatchFetch(`http://edge${path}`, { headers: { 'user-agent': 'workerd-tests/1' } });
  return { status: res.status, html: await res.text(), headers: res.headers };
};

test("an event's page lists its series' dates, marks its own and links the others and the series", async () => {
  const { mf, core, publish } = await edge();
  await publish(inventory(EVENT, { seats: 4, ga: 5 }));
  const r = await core('PUT', `/internal/v1/events/${EVENT}/waiting-room`, {
    version: 1, mode: 'fifo', queue_shards: 1, admit_per_minute: 60, max_active: 100, bot: { check: { kind: 'off' } },
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const { status, html } = await get(mf, `/events/${EVENT}`);
  assert.equal(status, 200);
  const nav = html.slice(html.indexOf('<h2 id="dates">'), html.indexOf('</nav>'));
  assert.ok(nav.includes('<strong aria-current="page">Sat 2 Jan 2027, 10:00</strong>'), nav);
  assert.ok(nav.includes(`<a href="/events/${OTHER}">Sat 2 Jan 2027, 12:00</a> <span class="muted">· Sold out</span>`), nav);
  assert.ok(nav.includes(`<a href="/events/${LATER}">Sun 3 Jan 2027, 10:00</a>`), nav);
  assert.ok(nav.includes(`<a href="/series/${SERIES}">See all 3 dates</a>`), nav);
  assert.ok(html.indexOf('<h2 id="dates">') < html.indexOf('<h2>The line</h2>'), 'the dates above the line');
});

test("the series' page lists its dates by day, starts at a day and pages on", async () => {
  const { mf, asked } = await edge();
  const first = await get(mf, `/series/${SERIES}`);
  assert.equal(first.status, 200);
  assert.equal(first.headers.get('cache-control'), 'public, max-age=30');
  assert.ok(first.html.includes('<h1>After dark</h1>') && first.html.includes('Globe Hall, Berlin · Presented by Acme'));
  assert.ok(first.html.includes('3 dates on sale or coming'));
  const day = first.html.slice(first.html.indexOf('<h2>Sat 2 Jan 2027</h2>'));
  assert.ok(day.includes(`<li><a href="/events/${EVENT}">10:00</a></li>`), day);
  assert.ok(day.includes(`<li><a href="/events/${OTHER}">12:00</a> <span class="muted">· Sold out</span></li>`), day);
  assert.ok(first.html.includes(`<a href="/series/${SERIES}?after=page-2" rel="next">Later dates</a>`));
  assert.equal(asked.at(-1), `/api/v1/catalog/series/${SERIES}?limit=60`);

  const next = await get(mf, `/series/${SERIES}?after=page-2`);
  assert.ok(next.html.includes('<h2>Sun 3 Jan 2027</h2>') && !next.html.includes('rel="next"'));
  assert.equal(asked.at(-1), `/api/v1/catalog/series/${SERIES}?limit=60&cursor=page-2`);

  const from = await get(mf, `/series/${SERIES}?from=2027-01-03`);
  assert.ok(from.html.includes('value="2027-01-03"') && from.html.includes('<h2>Sun 3 Jan 2027</h2>'));
  assert.equal(asked.at(-1), `/api/v1/catalog/series/${SERIES}?limit=60&from_day=2027-01-03`, 'the venue\'s day, read by the core');

  // What is not a plain day or cursor is left out, never passed on; a series the catalog does not
  // know, or an id that is none, is 404.
  const odd = await get(mf, `/series/${SERIES}?from=2027-02-30&after=x%26limit%3D200`);
  assert.equal(odd.status, 200, 'the page as without them (kept from the first visit)');
  assert.ok(odd.html.includes('value=""'), 'no day shown as chosen');
  assert.ok(asked.every((u) => !u.includes('2027-02-30') && !u.includes('limit%3D200') && !u.includes('x&')), JSON.stringify(asked));
  const unknown = await get(mf, '/series/1111aaaa-2222-4333-8444-555566667777');
  assert.equal(unknown.status, 404);
  const before = asked.length;
  const bad = await get(mf, '/series/..%2F..%2Fadmin');
  assert.equal(bad.status, 404);
  assert.equal(asked.length, before, 'an id that is none is not asked for');
  const post = await mf.dispatchFetch(`http://edge/series/${SERIES}`, { method: 'POST' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET, HEAD');
});

test('the front page shows a series once, with its number of dates and a link to them all', async () => {
  const { mf, asked } = await edge();
  const { status, html } = await get(mf, '/');
  assert.equal(status, 200);
  assert.ok(asked.includes('/api/v1/catalog/events?one_per_series=true&limit=24'), JSON.stringify(asked));
  assert.ok(html.includes(`<p class="series">3 dates · <a href="/series/${SERIES}">See all dates</a></p>`), html);
});
