// Buyers in headless Chromium (Debian's, driven by playwright-core) on the real stack with Stripe
// as the provider (the local Stripe, scripts/fake-stripe.mjs, and its hosted payment page):
//
//   keyboard  finds the event from the front page, joins the line, picks the second seated tier
//             and two seats in the list view, holds them, pays: every step by keyboard alone
//             (Tab, arrows, Space, Enter), never a click.
//   ga        buys three standing places of the event's general-admission tier.
//   series    goes from the front page to the event's series (its id the next argument), picks
//             the date <event id> on the series' page, and buys one standing place of it.
//
// Both go to Stripe's page from the order page, pay and come back to the order, which shows the
// tickets; axe-core finds no serious or critical violation on that paid order page at desktop and
// phone sizes, and it is photographed at both into $ARTIFACTS (default artifacts/screenshots).
// Prints {"order", "token", "summary", "tickets"} as JSON.
// Run by tests/tests/storefront.rs:  node tests/browser/storefront.mjs <edge url> <event id> keyboard|ga|series <seat> <seat>|<series id>
import fs from 'node:fs';
import { launch } from './chromium.mjs';

const AXE = fs.readFileSync('node_modules/axe-core/axe.min.js', 'utf8');
const SHOTS = process.env.ARTIFACTS ?? 'artifacts/screenshots';

const [edge, event, mode, ...seats] = process.argv.slice(2);
const browser = await launch();
const page = await browser.newPage();

// Presses Tab until the focused element matches `selector` (at most `max` times).
async function tabTo(selector, max = 120) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
  }
  throw new Error(`Tab never reached ${selector}`);
}

// From an event's page: joins the line, holds `quantity` standing places, pays on Stripe's page
// (which has the buyer's address already) and comes back to the order. Answers the hold's lines.
async function buyStanding(quantity, email) {
  await Promise.all([page.waitForURL(/\/events\/[^/]+\/buy$/, { timeout: 30000 }), page.click('#join button')]);
  await page.waitForSelector('#standing:not([hidden]) #ga-0', { timeout: 30000 });
  await page.fill('#ga-0', quantity);
  await page.click('form.ga button');
  await page.waitForSelector('#summary:not([hidden]) #total', { timeout: 30000 });
  const lines = await page.$$eval('#summary-lines tbody tr', (rows) => rows.map((r) => r.textContent));
  await page.fill('#email', email);
  await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/, { timeout: 30000 }), page.click('form#pay button[type=submit]')]);
  await page.waitForSelector('#pay', { timeout: 30000 });
  await Promise.all([page.waitForURL(/\/c\/pay\/cs_/), page.click('#pay')]);
  if ((await page.inputValue('input[name=email]')) !== email) throw new Error('the e-mail was not passed to Stripe');
  await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/), page.click('button[type=submit]')]);
  return lines;
}

try {
  let summary;
  if (mode === 'keyboard') {
    await page.goto(`${edge}/`);
    await tabTo(`a[href="/events/${event}"]`);
    await Promise.all([page.waitForURL(`${edge}/events/${event}`), page.keyboard.press('Enter')]);
    await page.waitForSelector('table.tiers');
    await tabTo('#join button');
    await Promise.all([page.waitForURL(`${edge}/events/${event}/buy`, { timeout: 30000 }), page.keyboard.press('Enter')]);
    // The second seated tier, with the arrow keys in its radio group.
    await page.waitForSelector('#tiers:not([hidden]) input[name=tier]:checked', { timeout: 30000 });
    await tabTo('input[name=tier]:checked');
    await page.keyboard.press('ArrowDown');
    if (!(await page.isChecked('#tier-1'))) throw new Error('the arrow key did not choose the second tier');
    // The list view: open it, tick two seats with Space, hold them.
    await tabTo('#list-view summary');
    await page.keyboard.press('Enter');
    const map = await (await fetch(`${edge}/api/v1/events/${event}/seatmap`)).json();
    const ids = map.sections.flatMap((s) => s.rows.flatMap((r) => r.seats.map((x) => x[0])));
    for (const seat of seats) {
      await tabTo(`#seat-${ids.indexOf(seat)}`);
      await page.keyboard.press('Space');
    }
    await tabTo('#hold-chosen');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#summary:not([hidden]) #total', { timeout: 30000 });
    summary = await page.$$eval('#summary-lines tbody tr', (rows) => rows.map((r) => r.textContent));
    await tabTo('#email');
    await page.keyboard.type('keys@e2e.test');
    await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/, { timeout: 30000 }), page.keyboard.press('Enter')]);
    // The order page links to Stripe's page; the buyer pays there and comes back.
    await page.waitForSelector('#pay', { timeout: 30000 });
    await tabTo('#pay');
    await Promise.all([page.waitForURL(/\/c\/pay\/cs_/), page.keyboard.press('Enter')]);
    await tabTo('button[type=submit]');
    await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/), page.keyboard.press('Enter')]);
  } else if (mode === 'ga') {
    await page.goto(`${edge}/events/${event}`);
    summary = await buyStanding('3', 'standing@e2e.test');
  } else if (mode === 'series') {
    // The front page lists the series once, with a link to its dates (the isolate may show its
    // answer from before the series for up to 30 s: the buyer reloads).
    const [series] = seats;
    const link = `a[href="/series/${series}"]`;
    for (let i = 0; !(await page.goto(`${edge}/`) && await page.$(link)); i++) {
      if (i > 40) throw new Error('the front page never linked the series');
      await page.waitForTimeout(1000);
    }
    await Promise.all([page.waitForURL(`${edge}/series/${series}`), page.click(link)]);
    await Promise.all([page.waitForURL(`${edge}/events/${event}`), page.click(`ul.dates a[href="/events/${event}"]`)]);
    // The date's own page marks it among the series' dates.
    await page.waitForSelector('nav ul.dates strong[aria-current=page]');
    summary = await buyStanding('1', 'series@e2e.test');
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  await page.waitForFunction(() => document.getElementById('state')?.textContent === 'Paid', null, { timeout: 30000 });
  await page.waitForSelector('figure.qr svg', { timeout: 10000 });
  const tickets = await page.$$eval('#order li', (items) => items.map((li) => li.textContent));
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const [size, viewport] of [['desktop', { width: 1280, height: 900 }], ['phone', { width: 390, height: 844 }]]) {
    await page.setViewportSize(viewport);
    await page.evaluate(AXE);
    const found = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
      .filter((v) => ['serious', 'critical'].includes(v.impact)).map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`));
    if (found.length) throw new Error(`axe on the paid order page (${size}): ${found.join('; ')}`);
    await page.screenshot({ path: `${SHOTS}/order-paid-${mode}-${size}.png`, fullPage: true });
  }
  const order = new URL(page.url()).pathname.split('/').pop();
  const token = await page.evaluate((id) => sessionStorage.getItem(`order-${id}`), order);
  console.log(JSON.stringify({ order, token, summary, tickets }));
} catch (e) {
  console.error(`${e}\n--- page ${page.url()} ---\n${await page.content()}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
