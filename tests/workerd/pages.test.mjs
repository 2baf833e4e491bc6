// The buyer's waiting-room page in headless Chromium (Debian's, driven by playwright-core) against
// the Worker served by workerd on a loopback port: joining from the keyboard (the page solves the
// proof of work), the place in line, the page refreshing by itself, and being moved on when admitted
// — with JavaScript, and without it.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startEdge, newKey, keyBindings, inventory, coreClient } from './harness.mjs';

const edgeKey = newKey('edge-test');
const coreKey = newKey('core-test');
let mf, url, core, publish, browser;

before(async () => {
  mf = await startEdge(keyBindings(edgeKey, coreKey), { host: '127.0.0.1', port: 0 });
  url = (await mf.ready).toString().replace(/\/$/, '');
  ({ core, publish } = coreClient(mf, coreKey));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu'],
  });
});
after(async () => { await browser?.close(); await mf.dispose(); });

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
  const refresh = await page.getAttribute('meta[http-equiv=refresh]', 'content');
  assert.ok(Number(refresh) >= 1 && Number(refresh) <= 30, `refresh every ${refresh} s`);
  // Admission opens: the page refreshes by itself and lands on the purchase page.
  await resume(event, settings);
  await page.waitForURL(`${url}/events/${event}/buy`, { timeout: 30000 });
  assert.match(await page.textContent('h1'), /You're in/);
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
  assert.match(await page.textContent('main'), /It is your turn to buy/);
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
