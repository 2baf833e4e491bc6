// Every buyer page in headless Chromium against the Worker in workerd (the core's catalog and price
// summary played by a loopback peer): axe-core (from npm) finds no serious or critical violation,
// and each page is photographed at phone and desktop sizes into $ARTIFACTS (default
// artifacts/screenshots, not committed; a few are copied into docs/screenshots by hand). The bytes
// each page loaded (uncompressed, at desktop size, in the state shown) are printed as one JSON line
// (`page weights`) for docs/benchmarks.md.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { browserEdge, inventory, ROOT } from './harness.mjs';

const ARTIFACTS = process.env.ARTIFACTS ?? path.join(ROOT, 'artifacts/screenshots');
const AXE = fs.readFileSync(path.join(ROOT, 'node_modules/axe-core/axe.min.js'), 'utf8');
const EVENT = '0b6f8a52-6a0e-4d36-9c1e-6f0f4b1c2d3e';
const SIZES = { phone: { width: 390, height: 844 }, desktop: { width: 1280, height: 900 } };
let url, core, publish, browser, close;

const details = {
  id: EVENT, title: 'Opening Night', description: 'A night of firsts with the city orchestra.\n\nDoors open at 19:00.',
  genre: 'concert', starts_local: 'Fri 12 Mar 2027, 20:00', time_zone: 'Europe/Berlin',
  venue_name: 'Globe Hall', city: 'Berlin', organizer: 'Acme Live', state: 'on_sale', images: [], color: '#1a7f37',
  tiers: [
    { id: 'adult', name: 'Adult', kind: 'seated', currency: 'EUR', price_minor: 4500, price_range: { min_minor: 4500, max_minor: 6500 }, sale_state: 'on_sale' },
    { id: 'child', name: 'Child', kind: 'seated', currency: 'EUR', price_minor: 2000, price_range: { min_minor: 2000, max_minor: 3000 }, sale_state: 'on_sale' },
    { id: 'floor', name: 'Floor', kind: 'ga', currency: 'EUR', price_minor: 3000, price_range: { min_minor: 3000, max_minor: 3000 }, sale_state: 'on_sale' },
  ],
};
// The event is a date of a series (docs/series.md): its page lists the series' dates.
const SERIES = '3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
const slot = (id, day, time, state = 'on_sale') => ({ id, day_local: day, time_local: time, starts_local: `${day}, ${time}`, state });
const slots = [
  slot(EVENT, 'Fri 12 Mar 2027', '20:00'), slot('2c5f39cb-3fb2-42e3-994f-1127e4ddb538', 'Sat 13 Mar 2027', '15:00', 'sold_out'),
  slot('3d6a4adc-40c3-43f4-aa5f-2238f5eec649', 'Sat 13 Mar 2027', '20:00'),
];
details.series = { id: SERIES, title: 'Opening week', dates: 3, next: slots, path: `/series/${SERIES}` };
const series = { id: SERIES, title: 'Opening week', venue_name: 'Globe Hall', city: 'Berlin', organizer: 'Acme Live', dates: 3, items: slots, next_cursor: 'more' };
const listing = { items: [{ ...details, series_id: SERIES, series_dates: 3 }, { ...details, id: '1b4e28ba-2fa1-11d2-883f-0016d3cca427', title: 'Rock Festival', state: 'sold_out' }] };
const quote = {
  currency: 'EUR', promo_code: null, hold_expires_at_ms: Date.now() + 600000,
  lines: [{ tier_id: 'adult', tier_name: 'Adult', seat: 'S0-0-4', price_minor: 6500, discount_minor: 0, fee_minor: 150, tax_minor: 0 },
    { tier_id: 'adult', tier_name: 'Adult', seat: 'S0-0-5', price_minor: 6500, discount_minor: 0, fee_minor: 150, tax_minor: 0 }],
  subtotal_minor: 13000, discount_minor: 0, fee_minor: 300, tax_minor: 2124, tax_included: true, total_minor: 13300,
};

before(async () => {
  ({ url, core, publish, browser, close } = await browserEdge((req, res) => {
    const send = (status, body) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
    req.resume();
    req.on('end', () => {
      if (req.url.startsWith('/api/v1/catalog/events?')) return send(200, listing);
      if (req.url === `/api/v1/catalog/events/${EVENT}`) return send(200, details);
      if (req.url.startsWith(`/api/v1/catalog/series/${SERIES}?`)) return send(200, series);
      if (req.url === '/api/v1/checkout/quote') return send(200, quote);
      return send(404, { type: 'not-found' });
    });
  }));
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  // The event: a zoned seat map with two seated tiers and a GA floor.
  const inv = inventory(EVENT, { sections: 2, rows: 6, seats: 14, ga: 200 });
  const price = (amount_minor) => ({ amount_minor, currency: 'EUR' });
  inv.seat_map.zones.push({ id: 'front', name: 'Front', price: price(6500) });
  for (const s of inv.seat_map.sections) {
    for (const r of s.rows) for (const seat of r.seats) { seat.x += s.id === 'S1' ? 16 : 0; if (r.label < '2') seat.zone = 'front'; }
    s.rows[5].seats[0].accessibility = ['wheelchair'];
  }
  inv.seat_map.seated_tiers = [
    { id: 'adult', name: 'Adult', prices: [{ zone: 'std', price: price(4500) }, { zone: 'front', price: price(6500) }], capacity: 168 },
    { id: 'child', name: 'Child', prices: [{ zone: 'std', price: price(2000) }, { zone: 'front', price: price(3000) }], capacity: 40 },
  ];
  await publish(inv);
});
after(async () => { await close?.(); });

async function room(settings) {
  const r = await core('PUT', `/internal/v1/events/${EVENT}/waiting-room`, {
    mode: 'fifo', queue_shards: 1, admit_per_minute: 60, max_active: 100, bot: { check: { kind: 'off' } },
    rate_limits: { joins_per_visitor_per_minute: 100 }, ...settings,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

// axe-core's serious and critical violations on the page as it is now (injected through the
// DevTools protocol: the page's own CSP, which allows only its own scripts, is left on).
async function violations(page) {
  await page.evaluate(AXE);
  const found = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations);
  return found.filter((v) => ['serious', 'critical'].includes(v.impact)).map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

const weights = {};

// Checks the page and photographs it at both sizes; `ready` brings a fresh page to the state shown.
// `locale` is the browser's language (its Accept-Language).
async function check(name, ready, locale = 'en-GB') {
  for (const [size, viewport] of Object.entries(SIZES)) {
    const context = await browser.newContext({ viewport, locale });
    const page = await context.newPage();
    await ready(page, size);
    await page.waitForLoadState('networkidle');
    // What the page loaded (uncompressed): the document, its style sheet, scripts and data.
    const bytes = await page.evaluate(() => performance.getEntriesByType('navigation')
      .concat(performance.getEntriesByType('resource')).reduce((sum, e) => sum + e.decodedBodySize, 0));
    assert.deepEqual(await violations(page), [], `${name} (${size})`);
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}-${size}.png`), fullPage: true });
    if (size === 'desktop') weights[name] = bytes;
    await context.close();
  }
}

const joinAndBuy = async (page) => {
  await page.goto(`${url}/events/${EVENT}`);
  await Promise.all([page.waitForURL(`${url}/events/${EVENT}/buy`, { timeout: 30000 }), page.click('#join button')]);
  await page.waitForSelector('#map circle.seat');
};

test('every buyer page passes axe-core (no serious or critical violation) at phone and desktop sizes', async () => {
  await check('home', (page) => page.goto(`${url}/`));
  await room({ version: 1, paused: false });
  await check('event', (page) => page.goto(`${url}/events/${EVENT}`));
  await room({ version: 2, paused: true });
  const waiting = (heading) => async (page) => {
    await page.goto(`${url}/events/${EVENT}`);
    await Promise.all([page.waitForURL(`${url}/events/${EVENT}`, { waitUntil: 'load' }), page.click('#join button')]);
    await page.waitForSelector('#position');
    assert.equal(await page.textContent('h1'), heading);
    // The event's colour is applied: its inline style passed the page's CSP (by its hash).
    assert.equal(await page.$eval('.band', (b) => getComputedStyle(b).backgroundColor), 'rgb(26, 127, 55)');
  };
  await check('waiting', waiting('You are in line for Opening Night'));
  await check('waiting-de', waiting('Sie stehen in der Warteschlange für Opening Night'), 'de-DE');
  await room({ version: 3, mode: 'passthrough', paused: false });
  await check('buy', joinAndBuy);
  await check('buy-list', async (page) => {
    await joinAndBuy(page);
    await page.click('#list-view summary');
    await page.check('#seat-3');
  });
  await check('summary', async (page, size) => {
    await joinAndBuy(page);
    const [a, b] = size === 'phone' ? [4, 5] : [6, 7];
    await page.click(`#map circle[data-i="${a}"]`);
    await page.click(`#map circle[data-i="${b}"]`);
    await page.click('#hold-chosen');
    await page.waitForSelector('#summary:not([hidden]) #total');
  });
  await check('order', (page) => page.goto(`${url}/orders/00000000-0000-0000-0000-000000000001`));
  await check('transfer', (page) => page.goto(`${url}/transfers/00000000-0000-0000-0000-000000000002`));
  await check('series', (page) => page.goto(`${url}/series/${SERIES}`));
  await check('my-tickets', async (page) => {
    await page.goto(`${url}/my-tickets`);
    await page.waitForSelector('#ask #email');
  });
  console.log(`page weights ${JSON.stringify(weights)}`);
});
