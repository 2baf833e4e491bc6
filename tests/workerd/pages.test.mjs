// The buyer's waiting-room page in headless Chromium (Debian's, driven by playwright-core) against
// the Worker served by workerd on a loopback port: joining from the keyboard (the page solves the
// proof of work), the place in line, the page refreshing by itself, and being moved on when admitted
// — with JavaScript, and without it.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { browserEdge, inventory } from './harness.mjs';

let url, core, publish, browser, close;
const quotes = [];

before(async () => {
  // The core's price summary, played by a loopback peer: a canned quote for what it is asked.
  ({ url, core, publish, browser, close } = await browserEdge((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      quotes.push({ url: req.url, body: JSON.parse(body || '{}') });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({
        currency: 'EUR', promo_code: null, hold_expires_at_ms: Date.now() + 600000,
        lines: [{ tier_id: 't', tier_name: 'Child', seat: 'S0-0-3', price_minor: 2000, discount_minor: 0, fee_minor: 100, tax_minor: 0 },
          { tier_id: 't', tier_name: 'Child', seat: 'S0-0-4', price_minor: 2000, discount_minor: 0, fee_minor: 100, tax_minor: 0 }],
        subtotal_minor: 4000, discount_minor: 0, fee_minor: 200, tax_minor: 0, tax_included: true, total_minor: 4200,
      }));
    });
  }));
});
after(async () => { await close?.(); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function room(event, settings) {
  await publish(inventory(event));
  const r = await core('PUT', `/internal/v1/events/${event}/waiting-room`, {
    version: 1, mode: 'fifo', queue_shards: 2, admit_per_minute: 60, max_active: 100, ...settings,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

async function resume(event, settings) {
  const r = await core('PUT', `/internal/v1/events/${event}/waiting-room`, {
    version: 2, mode: 'fifo', queue_shards: 2, admit_per_minute: 60, max_active: 100, ...settings, paused: false,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

test('joining from the keyboard, waiting with a visible place, and being moved on when admitted', async () => {
  const event = 'page-js';
  const settings = { paused: true, display_name: 'Opening Night', bot: { check: { kind: 'proof_of_work', difficulty: 8 } } };
  await room(event, settings);
  const page = await browser.newPage();
  // The page's own scripts run under its Content-Security-Policy: the browser reports no violation.
  const violations = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
  await page.goto(`${url}/events/${event}`);
  assert.equal(await page.getAttribute('html', 'lang'), 'en');
  assert.match(await page.textContent('h1'), /^Opening Night$/, 'the organizer\'s name for the event');
  // Keyboard only: tab to the button and press Enter; the page solves the proof of work and joins.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Join the line');
  await Promise.all([page.waitForURL(`${url}/events/${event}`, { waitUntil: 'load' }), page.keyboard.press('Enter')]);
  await page.waitForSelector('#position');
  assert.match(await page.textContent('h1'), /You are in line/);
  assert.equal(await page.textContent('#position'), '1');
  const progress = page.locator('progress');
  assert.ok(await progress.getAttribute('aria-valuetext'));
  assert.equal(await page.locator('[role=status]').count() >= 1, true);
  // With JavaScript the page updates in place (refresh.js); the meta refresh is only in <noscript>.
  const refresh = await page.getAttribute('body', 'data-refresh');
  assert.ok(Number(refresh) >= 1 && Number(refresh) <= 30, `updated every ${refresh} s`);
  assert.equal(await page.locator('meta[http-equiv=refresh]').count(), 0);
  assert.match(await page.content(), /<noscript><meta http-equiv="refresh" content="\d+"><\/noscript>/);
  // Admission opens: the page refreshes by itself and lands on the purchase page.
  await resume(event, settings);
  await page.waitForURL(`${url}/events/${event}/buy`, { timeout: 30000 });
  assert.match(await page.textContent('h1'), /Choose your tickets/);
  await page.waitForSelector('#map circle.seat', { timeout: 10000 });
  const cookies = await page.context().cookies();
  assert.ok(cookies.some((c) => c.name === `admission_${event}` && c.httpOnly), 'admission cookie, HttpOnly');
  await page.close();
  assert.deepEqual(violations, [], 'no CSP violation');
});

test('without JavaScript the page still joins, refreshes and moves the buyer on', async () => {
  const event = 'page-nojs';
  const settings = { paused: true, bot: { check: { kind: 'off' } } };
  await room(event, settings);
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${url}/events/${event}`);
  await Promise.all([page.waitForURL(`${url}/events/${event}`, { waitUntil: 'load' }), page.click('button')]);
  await page.waitForSelector('#position');
  await resume(event, settings);
  await page.waitForURL(`${url}/events/${event}/buy`, { timeout: 30000 });
  assert.match(await page.textContent('main'), /You may buy up to \d+ tickets/);
  assert.match(await page.textContent('main'), /need JavaScript/);
  await context.close();
});

test('the same page answers apps with JSON', async () => {
  const event = 'page-json';
  await room(event, { bot: { check: { kind: 'off' } } });
  await sleep(1100);
  const res = await fetch(`${url}/events/${event}`, { headers: { accept: 'application/json', 'user-agent': 'app/1' } });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.phase, 'open');
  assert.equal(body.join, `/api/v1/events/${event}/queue`);
});

// An event with two seated tiers (adult, child) and a GA floor; its line lets everyone in.
async function shop(event) {
  const inv = inventory(event, { rows: 2, seats: 10, ga: 20 });
  const price = (amount_minor) => ({ amount_minor, currency: 'EUR' });
  inv.seat_map.seated_tiers = [
    { id: 'adult', name: 'Adult', prices: [{ zone: 'std', price: price(4500) }], capacity: 20 },
    { id: 'child', name: 'Child', prices: [{ zone: 'std', price: price(2000) }], capacity: 4 },
  ];
  await publish(inv);
  const r = await core('PUT', `/internal/v1/events/${event}/waiting-room`, {
    version: 1, mode: 'passthrough', bot: { check: { kind: 'off' } }, rate_limits: { joins_per_visitor_per_minute: 100 },
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

// A new buyer's page, admitted and on the purchase page with the map drawn.
async function buyer(event) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${url}/events/${event}`);
  await Promise.all([page.waitForURL(`${url}/events/${event}/buy`, { timeout: 30000 }), page.click('button')]);
  await page.waitForSelector('#map circle.seat');
  return page;
}

const seatClass = (page, i) => page.getAttribute(`#map circle[data-i="${i}"]`, 'class');

test('a buyer picks two seats of a tier on the map and sees the price summary; another buyer sees them held within seconds', async () => {
  const event = 'page-map';
  await shop(event);
  const a = await buyer(event);
  const b = await buyer(event);
  assert.equal(await a.locator('#map circle.seat').count(), 20);
  await a.check('#tier-1');
  await a.click('#map circle[data-i="3"]');
  await a.click('#map circle[data-i="4"]');
  assert.match(await seatClass(a, 3), /chosen/);
  const chosen = await a.locator('#chosen li').allTextContents();
  assert.match(chosen[0], /Section 0, row 0, seat 3 — Standard, 20\.00 EUR/);
  assert.match(chosen[2], /2 seats: 40\.00 EUR/);
  await a.click('#hold-chosen');
  await a.waitForSelector('#summary:not([hidden])');
  assert.equal(await a.textContent('#total'), '42.00 EUR', 'the core\'s total');
  const asked = quotes.at(-1);
  assert.equal(asked.url, '/api/v1/checkout/quote');
  assert.ok(asked.body.hold_token, 'the hold token goes to the core');
  // The other buyer's map follows within a few seconds (the snapshot is a second old at most).
  await b.waitForFunction(() => /seat-h/.test(document.querySelector('#map circle[data-i="3"]').getAttribute('class')), null, { timeout: 5000 });
  assert.match(await seatClass(b, 4), /seat-h/);
  // Changing the selection releases the hold: both maps show the seats free again.
  await a.click('#release');
  await a.waitForSelector('#choose:not([hidden])');
  await b.waitForFunction(() => /seat-a/.test(document.querySelector('#map circle[data-i="3"]').getAttribute('class')), null, { timeout: 5000 });
  await a.context().close();
  await b.context().close();
});

test('a keyboard-only buyer holds a seat through the list view; another holds standing places by quantity', async () => {
  const event = 'page-list';
  await shop(event);
  const k = await buyer(event);
  await k.focus('#list-view summary');
  await k.keyboard.press('Enter');
  await k.focus('#seat-7');
  await k.keyboard.press('Space');
  assert.equal(await k.isChecked('#seat-7'), true);
  assert.match(await k.textContent('label[for="seat-7"]'), /Seat 7 — Standard, 45\.00 EUR/);
  await k.focus('#hold-chosen');
  await k.keyboard.press('Enter');
  await k.waitForSelector('#summary:not([hidden])');
  assert.equal(await k.evaluate(() => document.activeElement.id), 'summary', 'focus moves to the summary');
  const ga = await buyer(event);
  await ga.fill('#ga-0', '3');
  await ga.click('#ga-tiers button');
  await ga.waitForSelector('#summary:not([hidden])');
  const placed = await (await fetch(`${url}/api/v1/events/${event}/availability?counts`)).json();
  assert.equal(placed.tiers[0][1].held, 3, 'three standing places held');
  assert.equal(placed.seated_tiers.find(([t]) => t === 'adult')[1].held, 1, 'the seat under the first tier');
  await k.context().close();
  await ga.context().close();
});
