// The storefront's figures (docs/benchmarks.md), against the Worker in workerd (miniflare) on
// loopback, in headless Chromium:
//
// 1. The seat map of a 20,000-seat event (20 sections of 1,000, sold by section): how long the
//    purchase page takes to draw it (buy.js's `seatmap-draw` measure, and until the next frame is
//    painted), and to apply an availability snapshot in which 1,000 seats changed
//    (`seatmap-update`), at desktop speed and with the CPU slowed 4x (Chrome's "mid-tier mobile"
//    preset).
// 2. Live availability for 1,000 viewers of one event, each asking the snapshot once a second for
//    `VIEWERS_SECS` (the page's rhythm): the seat objects' requests per viewer per minute, read
//    from the objects' own request counters. One isolate here; in production, each isolate a
//    viewer lands on asks at most once a second, whatever the number of viewers.
//
// Usage: bash scripts/bench-storefront.sh  (builds the Worker first)   Prints one JSON document.
import { launch } from '../tests/browser/chromium.mjs';
import { startEdge, newKey, keyBindings, inventory, coreClient, admit } from '../tests/workerd/harness.mjs';

const VIEWERS = Number(process.env.VIEWERS ?? 1000);
const VIEWERS_SECS = Number(process.env.VIEWERS_SECS ?? 20);
const EVENT = 'bench-map';
const edgeKey = newKey('edge-bench');
const coreKey = newKey('core-bench');
const mf = await startEdge(keyBindings(edgeKey, coreKey), { host: '127.0.0.1', port: 0 });
const url = (await mf.ready).toString().replace(/\/$/, '');
const { core, publish } = coreClient(mf, coreKey);
const out = {};

// 20 sections of 20 rows x 50 seats, laid out in a 5 x 4 grid of blocks.
const inv = inventory(EVENT, { sections: 20, rows: 20, seats: 50, ga: 0, sharding: 'by_section' });
inv.seat_map.sections.forEach((s, i) => {
  for (const r of s.rows) for (const seat of r.seats) { seat.x += (i % 5) * 54; seat.y += Math.floor(i / 5) * 24; }
});
inv.settings.max_tickets_per_visitor = 10;
await publish(inv);
// A line that lets everyone in, ten tickets each (set by the first admission).
const ROOM = { max_tickets_per_buyer: 10, rate_limits: { joins_per_visitor_per_minute: 1000 } };
await admit(mf, core, EVENT, ROOM);

const browser = await launch();
let held = 0;
for (const [name, rate] of [['desktop', 1], ['phone_4x_slower_cpu', 4]]) {
  const context = await browser.newContext(name === 'desktop' ? { viewport: { width: 1280, height: 900 } } : { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Emulation.setCPUThrottlingRate', { rate });
  await page.goto(`${url}/events/${EVENT}`);
  await Promise.all([page.waitForURL(`${url}/events/${EVENT}/buy`, { timeout: 60000 }), page.click('#join button')]);
  const measured = (name) => page.evaluate((n) => ({
    script_ms: Math.round(performance.getEntriesByName(n)[0].duration),
    painted_ms: Math.round(performance.getEntriesByName(`${n}-frame`)[0].duration),
  }), name);
  await page.waitForFunction(() => performance.getEntriesByName('seatmap-draw-frame').length > 0, null, { timeout: 120000 });
  const draw = await measured('seatmap-draw');
  await page.waitForTimeout(1500); // the first snapshot is applied
  // The page's polls fail while 1,000 seats change (100 holds of 10 seats by 100 buyers, each in
  // its section); let through again, its next poll applies them all at once.
  await page.route('**/availability', (route) => route.abort());
  await page.waitForTimeout(1200);
  await page.evaluate(() => performance.clearMeasures());
  for (let n = 0; n < 100; n++, held++) {
    const { token } = await admit(mf, core, EVENT, ROOM);
    const section = held % 20;
    const row = Math.floor(held / 20) % 20;
    const seats = Array.from({ length: 10 }, (_, k) => `S${section}-${row}-${(Math.floor(held / 400) * 10 + k) % 50}`);
    const r = await mf.dispatchFetch(`http://edge/api/v1/events/${EVENT}/holds`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'user-agent': 'bench/1' },
      body: JSON.stringify({ kind: 'seats', seats, section: `S${section}` }),
    });
    if (r.status !== 201) throw new Error(`hold ${n}: ${r.status} ${await r.text()}`);
  }
  await page.unroute('**/availability');
  await page.waitForFunction(() => performance.getEntriesByName('seatmap-update-frame').length > 0, null, { timeout: 60000 });
  const update = await measured('seatmap-update');
  const heldShown = await page.locator('#map circle.seat-h').count();
  out[name] = { seats: await page.locator('#map circle.seat').count(), draw, update_1000_seats: update, held_shown: heldShown };
  await context.close();
}
await browser.close();

// 1,000 viewers polling the snapshot each second.
const stats = async () => {
  const r = await core('GET', `/internal/v1/events/${EVENT}/stats`);
  return r.body.shards.reduce((sum, s) => sum + (s.stats.requests ?? 0), 0);
};
const before = await stats();
const started = Date.now();
let answered = 0;
let failed = 0;
await Promise.all(Array.from({ length: VIEWERS }, async (_, v) => {
  await new Promise((r) => setTimeout(r, (v * 1000) / VIEWERS)); // spread over the second
  while (Date.now() - started < VIEWERS_SECS * 1000) {
    const t = Date.now();
    try {
      const r = await fetch(`${url}/api/v1/events/${EVENT}/availability`);
      await r.arrayBuffer();
      if (r.ok) answered++; else failed++;
    } catch { failed++; }
    await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - t))));
  }
}));
const minutes = (Date.now() - started) / 60000;
const objectRequests = (await stats()) - before - 20; // less the 20 reads of the stats themselves
out.viewers = {
  viewers: VIEWERS, seconds: Math.round(minutes * 60), snapshots_answered: answered, failed,
  object_requests: objectRequests,
  object_requests_per_viewer_per_minute: Number((objectRequests / VIEWERS / minutes).toFixed(4)),
  snapshot_requests_per_viewer_per_minute: Number((answered / VIEWERS / minutes).toFixed(1)),
};
await mf.dispose();
console.log(JSON.stringify(out, null, 2));
