// A ticket's recipient in headless Chromium opens the link of the offer mail, sees the offer,
// accepts it, and is shown the ticket's QR code; then offers it on to someone else and withdraws
// that offer.
// Run by tests/tests/checkout.rs:  node tests/browser/accept.mjs <link from the mail>
import { launch } from './chromium.mjs';

const [link] = process.argv.slice(2);
const browser = await launch();
const page = await browser.newPage();
try {
  await page.goto(link);
  await page.waitForSelector('#accept', { timeout: 15000 });
  const offer = await page.textContent('#transfer');
  if (!/seat /.test(offer)) throw new Error(`the offer does not name the seat: ${offer}`);
  if (new URL(page.url()).hash) throw new Error('the token stayed in the address bar');
  await page.click('#accept');
  await page.waitForSelector('#qr svg', { timeout: 15000 });
  const state = await page.textContent('#state');
  if (!state.startsWith('It is yours')) throw new Error(`state: ${state}`);
  // Passing it on, then thinking better of it.
  await page.fill('#to', 'third@e2e.test');
  await page.click('#pass button');
  await page.waitForSelector('#onward', { timeout: 15000 });
  const onward = await page.textContent('#onward');
  if (!onward.includes('You offered it to third@e2e.test')) throw new Error(`onward: ${onward}`);
  await page.waitForSelector('#qr svg', { timeout: 15000 });
  await page.click('#withdraw');
  await page.waitForSelector('#pass', { timeout: 15000 });
  console.log(JSON.stringify({ state: 'accepted', offer }));
} catch (e) {
  console.error(`${e}\n--- page ${page.url()} ---\n${await page.content()}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
