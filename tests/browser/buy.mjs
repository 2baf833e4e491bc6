// A buyer in headless Chromium (Debian's, driven by playwright-core) buys through the real stack:
// finds the event on the shop's front page, joins its line from its page, is admitted, picks two
// seats on the map, sees the core's price summary and checks out, pays
// on the test provider's page, comes back to the order page and sees it paid with its ticket.
// With a recipient's address, it then offers the ticket to them with the order page's form; with a
// phone number, it gives it for a text (the field is there only where the shop sends texts), and
// the recipient's number (+44 7700 900124) for the offer's text.
// Run by tests/tests/checkout.rs:  node tests/browser/buy.mjs <edge url> <event id> [<give to> [<phone>]]
import { launch } from './chromium.mjs';

const [edge, event, giveTo, phone] = process.argv.slice(2);
const browser = await launch();
const page = await browser.newPage();
try {
  // Found from the shop's front page: the event's link, its page, the line.
  await page.goto(`${edge}/`);
  await Promise.all([page.waitForURL(`${edge}/events/${event}`), page.click(`a[href="/events/${event}"]`)]);
  await page.waitForSelector('table.tiers');
  await Promise.all([page.waitForURL(`${edge}/events/${event}`, { waitUntil: 'load' }), page.click('#join button')]);
  await page.waitForURL(`${edge}/events/${event}/buy`, { timeout: 30000 });
  // Two specific seats on the map (A-3 and A-4: the test's later steps hold the others).
  await page.waitForSelector('#map circle.seat', { timeout: 30000 });
  const map = await (await fetch(`${edge}/api/v1/events/${event}/seatmap`)).json();
  const ids = map.sections.flatMap((s) => s.rows.flatMap((r) => r.seats.map((x) => x[0])));
  for (const seat of ['A-3', 'A-4']) await page.click(`#map circle[data-i="${ids.indexOf(seat)}"]`);
  await page.click('#hold-chosen');
  // The core's price summary: a line per seat, and the total.
  await page.waitForSelector('#summary:not([hidden]) #total', { timeout: 30000 });
  const lines = await page.$$eval('#summary-lines tbody tr', (rows) => rows.map((r) => r.textContent));
  if (lines.length !== 2 || !lines.every((l) => / — seat A-[34]/.test(l))) throw new Error(`summary: ${JSON.stringify(lines)}`);
  const total = await page.textContent('#total');
  if (!/^\d+\.\d\d [A-Z]{3}$/.test(total)) throw new Error(`the summary's total: ${total}`);
  await page.fill('#email', 'browser@e2e.test');
  if (phone) {
    await page.waitForSelector('#phone-box:not([hidden]) #phone', { timeout: 10000 });
    await page.fill('#phone', phone);
  } else if (await page.isVisible('#phone')) {
    throw new Error('a phone field on a shop that sends no texts');
  }
  await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/, { timeout: 30000 }), page.click('form#pay button[type=submit]')]);
  await page.waitForSelector('#pay', { timeout: 30000 });
  if (!(await page.textContent('#state')).includes('Waiting for your payment')) throw new Error('not awaiting payment');
  await Promise.all([page.waitForURL(/\/testpay\/pay\//), page.click('#pay')]);
  await Promise.all([page.waitForURL(/\/approve$/), page.click('button:text-is("Approve")')]);
  await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/), page.click('text=Back to your order')]);
  await page.waitForFunction(() => document.getElementById('state')?.textContent === 'Paid', null, { timeout: 30000 });
  await page.waitForSelector('figure.qr svg', { timeout: 10000 });
  const tickets = await page.$$eval('#order li', (items) => items.map((li) => li.textContent));
  if (tickets.length !== 2 || !tickets.every((t) => /^Seat A-[34] — valid$/.test(t))) throw new Error(`tickets: ${JSON.stringify(tickets)}`);
  let offered = null;
  if (giveTo) {
    await page.fill('form.give input[name=to]', giveTo);
    // The order has a number: the offer can go by text to the recipient's too.
    if (phone) await page.fill('form.give input[name=phone]', '+44 7700 900124');
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
