// A buyer in headless Chromium (Debian's, driven by playwright-core) buys a seat through the real
// stack: joins the line, is admitted, holds the best seat on the purchase page, sees the core's price
// summary and checks out, pays
// on the test provider's page, comes back to the order page and sees it paid with its ticket.
// With a recipient's address, it then offers the ticket to them with the order page's form.
// Run by tests/tests/checkout.rs:  node tests/browser/buy.mjs <edge url> <event id> [<give to>]
import { chromium } from 'playwright-core';

const [edge, event, giveTo] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
const page = await browser.newPage();
try {
  await page.goto(`${edge}/events/${event}`);
  await Promise.all([page.waitForURL(`${edge}/events/${event}`, { waitUntil: 'load' }), page.click('button')]);
  await page.waitForURL(`${edge}/events/${event}/buy`, { timeout: 30000 });
  // The map is drawn from the seat map; the best seat is held, and the core's price summary shown.
  await page.waitForSelector('#map circle.seat', { timeout: 30000 });
  await page.fill('#quantity', '1');
  await page.click('form#best button[type=submit]');
  await page.waitForSelector('#summary:not([hidden]) #total', { timeout: 30000 });
  const total = await page.textContent('#total');
  if (!/^\d+\.\d\d [A-Z]{3}$/.test(total)) throw new Error(`the summary's total: ${total}`);
  await page.fill('#email', 'browser@e2e.test');
  await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/, { timeout: 30000 }), page.click('form#pay button[type=submit]')]);
  await page.waitForSelector('#pay', { timeout: 30000 });
  if (!(await page.textContent('#state')).includes('Waiting for your payment')) throw new Error('not awaiting payment');
  await Promise.all([page.waitForURL(/\/testpay\/pay\//), page.click('#pay')]);
  await Promise.all([page.waitForURL(/\/approve$/), page.click('button:text-is("Approve")')]);
  await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/), page.click('text=Back to your order')]);
  await page.waitForFunction(() => document.getElementById('state')?.textContent === 'Paid', null, { timeout: 30000 });
  await page.waitForSelector('figure.qr svg', { timeout: 10000 });
  const tickets = await page.$$eval('#order li', (items) => items.map((li) => li.textContent));
  if (tickets.length !== 1 || !/^Seat [A-Za-z0-9_-]+ — valid$/.test(tickets[0])) throw new Error(`tickets: ${JSON.stringify(tickets)}`);
  let offered = null;
  if (giveTo) {
    await page.fill('form.give input[name=to]', giveTo);
    await page.click('form.give button');
    await page.waitForFunction(() => /^Offered to /.test(document.querySelector('form.give .said')?.textContent ?? ''), null, { timeout: 10000 });
    offered = await page.textContent('form.give .said');
  }
  console.log(JSON.stringify({ order: new URL(page.url()).pathname, tickets, offered }));
} catch (e) {
  console.error(`${e}\n--- page ${page.url()} ---\n${await page.content()}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
