// A person on a waiting list follows the link of the offer mailed to them, in headless Chromium:
// the offer page takes it and opens the purchase page at the summary of the seats held for them;
// they pay on the test provider's page and see their ticket on the order page.
// Run by tests/tests/waitlist.rs:  node tests/browser/waitlist.mjs <offer link>
import { launch } from './chromium.mjs';

const [link] = process.argv.slice(2);
const browser = await launch();
const page = await browser.newPage();
try {
  await page.goto(link);
  await page.waitForURL(/\/events\/[^/]+\/buy$/, { timeout: 30000 });
  // The summary of the seat kept for them, without choosing anything.
  await page.waitForSelector('#summary:not([hidden]) #total', { timeout: 30000 });
  const lines = await page.$$eval('#summary-lines tbody tr', (rows) => rows.map((r) => r.textContent));
  if (lines.length !== 1 || !/seat A-1/.test(lines[0])) throw new Error(`summary: ${JSON.stringify(lines)}`);
  const status = await page.textContent('#shop-status');
  if (!/waiting list/.test(status)) throw new Error(`status: ${status}`);
  await page.fill('#email', 'first@e2e.test');
  await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/, { timeout: 30000 }), page.click('form#pay button[type=submit]')]);
  await page.waitForSelector('#pay', { timeout: 30000 });
  await Promise.all([page.waitForURL(/\/testpay\/pay\//), page.click('#pay')]);
  await Promise.all([page.waitForURL(/\/approve$/), page.click('button:text-is("Approve")')]);
  await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/), page.click('text=Back to your order')]);
  await page.waitForFunction(() => document.getElementById('state')?.textContent === 'Paid', null, { timeout: 30000 });
  const tickets = await page.$$eval('#order li', (items) => items.map((li) => li.textContent));
  console.log(JSON.stringify({ order: new URL(page.url()).pathname, summary: lines, tickets }));
} catch (e) {
  console.error(`${e}\n--- page ${page.url()} ---\n${await page.content()}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
