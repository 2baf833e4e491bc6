// An organizer in headless Chromium signs in to the core's dashboard with their API key, opens the
// event, and reads the live sale; then, without reloading, waits for the panel to refresh itself
// to the next sale.
// Run by tests/tests/checkout.rs:
//   node tests/browser/dashboard.mjs <core url> <api key> <event id> <sold now> <sold next>
// Prints one JSON line of what the page showed, then "REFRESHED" once it showed <sold next>.
import { launch } from './chromium.mjs';

const [core, key, event, soldNow, soldNext] = process.argv.slice(2);
const browser = await launch();
const page = await browser.newPage();
const text = async (figure) => (await page.textContent(`[data-figure="${figure}"]`))?.trim();
try {
  await page.goto(`${core}/dashboard`);
  await page.fill('#key', key);
  await Promise.all([page.waitForURL(`${core}/dashboard`), page.click('button[type=submit]')]);
  await page.click(`a[href="/dashboard/events/${event}"]`);
  await page.waitForSelector('[data-figure="sold"]', { timeout: 15000 });
  const shown = {
    sold: await text('sold'),
    held: await text('held'),
    gross: await text('gross'),
    phase: await text('phase'),
    waiting: await text('waiting'),
    admit_rate: await text('admit-rate'),
    average_wait: await text('average-wait'),
    orders_paid: await text('orders-paid'),
    hold_to_order: await text('hold-to-order'),
    chart_total: await page.getAttribute('[data-figure="chart"]', 'data-total'),
    refusals: await page.$$eval('[data-refusal]', (cells) =>
      Object.fromEntries(cells.map((c) => [c.dataset.refusal, Number(c.textContent)]))),
  };
  if (shown.sold !== soldNow) throw new Error(`sold shows ${shown.sold}, expected ${soldNow}`);
  console.log(JSON.stringify(shown));
  // The page must not reload: a marker on the window survives only an in-place refresh.
  await page.evaluate(() => { window.__sameDocument = true; });
  await page.waitForFunction(
    (want) => document.querySelector('[data-figure="sold"]')?.textContent.trim() === want,
    soldNext,
    { timeout: 45000, polling: 250 },
  );
  if (!(await page.evaluate(() => window.__sameDocument === true))) throw new Error('the page reloaded');
  const chart = await page.getAttribute('[data-figure="chart"]', 'data-total');
  console.log(JSON.stringify({ refreshed: true, sold: await text('sold'), chart_total: chart }));
  console.log('REFRESHED');
} catch (e) {
  console.error(`${e}\n--- page ${page.url()} ---\n${await page.content()}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
