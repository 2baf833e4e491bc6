// A buyer who lost their mails, in headless Chromium: on "My tickets" they ask for a sign-in link
// (`ask`), then follow the mailed link (`open`): the page lists their orders, and the order's link
// opens its page, paid.
// Run by tests/tests/waitlist.rs:  node tests/browser/my-tickets.mjs ask <shop url> <address>
//                                  node tests/browser/my-tickets.mjs open <sign-in link>
import { launch } from './chromium.mjs';

const [mode, target, email] = process.argv.slice(2);
const browser = await launch();
const page = await browser.newPage();
try {
  if (mode === 'ask') {
    await page.goto(`${target}/`);
    await Promise.all([page.waitForURL(/\/my-tickets$/), page.click('a[href="/my-tickets"]')]);
    await page.fill('#email', email);
    await page.click('#ask button');
    await page.waitForSelector('#sent', { timeout: 30000 });
    console.log(JSON.stringify({ sent: await page.textContent('#sent') }));
  } else {
    await page.goto(target);
    await page.waitForSelector('#orders li a', { timeout: 30000 });
    // The token left the address bar (it stays in the tab).
    if (new URL(page.url()).hash) throw new Error(`the token is still in the URL: ${page.url()}`);
    const orders = await page.$$eval('#orders li', (items) => items.map((li) => li.textContent));
    await Promise.all([page.waitForURL(/\/orders\/[0-9a-f-]+$/), page.click('#orders li a')]);
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'Paid', null, { timeout: 30000 });
    const tickets = await page.$$eval('#order li', (items) => items.map((li) => li.textContent));
    console.log(JSON.stringify({ orders, tickets }));
  }
} catch (e) {
  console.error(`${e}\n--- page ${page.url()} ---\n${await page.content()}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
