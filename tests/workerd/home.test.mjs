// The shop's front page (GET /) in workerd: the events from the core's public catalog (played by a
// loopback peer that records what it is asked), the search passed on checked and bounded, each
// isolate's cache sparing the core a crowd, and a clear page when the catalog cannot be read.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEdge, startPeer } from './harness.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

const events = [
  { id: '7f0c1f6e-8a5e-4c55-9d38-0d0a3bd6e0b1', title: 'Jazz <script>alert(1)</script> Night', genre: 'jazz',
    starts_local: 'Fri 12 Mar 2027, 20:00', venue_name: 'Blue Hall', city: 'Berlin', state: 'on_sale' },
  { id: '1b4e28ba-2fa1-11d2-883f-0016d3cca427', title: 'Rock Festival', genre: 'rock',
    starts_local: 'Sat 3 Apr 2027, 18:00', venue_name: 'Field', city: 'Hamburg', state: 'sold_out' },
];

async function edgeWithCatalog() {
  const asked = [];
  let failing = false;
  const peer = await startPeer((req, res) => {
    asked.push({ url: req.url, traceparent: req.headers.traceparent });
    if (failing || !req.url.startsWith('/api/v1/catalog/events?')) {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end('{}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ items: events, next_cursor: null }));
  });
  const mf = await startEdge({ CORE_URL: peer.url });
  cleanups.push(() => peer.close(), () => mf.dispose());
  return { mf, asked, fail: () => { failing = true; } };
}

test('the front page lists the events, escaped, each linking to its page', async () => {
  const { mf, asked } = await edgeWithCatalog();
  const res = await mf.dispatchFetch('http://edge/');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('cache-control'), 'public, max-age=30');
  assert.match(res.headers.get('content-security-policy'), /default-src/);
  const html = await res.text();
  assert.ok(html.includes('<form method="get" action="/" class="search" role="search"'), 'a search form');
  assert.ok(html.includes(`href="/events/${events[0].id}"`) && html.includes(`href="/events/${events[1].id}"`));
  assert.ok(!html.includes('<script>alert(1)</script>') && /&(lt|#60);script/.test(html), 'titles are escaped');
  assert.ok(html.includes('Fri 12 Mar 2027, 20:00 · Blue Hall, Berlin') && html.includes('On sale'));
  assert.ok(html.includes('Sold out'));
  assert.equal(asked.length, 1);
  assert.equal(asked[0].url, '/api/v1/catalog/events?one_per_series=true&limit=24');
  assert.match(asked[0].traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/, 'the edge starts a trace');
});

test('a search is checked, bounded and passed on; the same search again is answered from the cache', async () => {
  const { mf, asked } = await edgeWithCatalog();
  const q = `?q=${encodeURIComponent(' jazz ')}&city=Berlin&from=2027-03-01&to=2027-03-31&genre=&junk=1`;
  for (let i = 0; i < 5; i++) {
    const res = await mf.dispatchFetch(`http://edge/${q}`);
    assert.equal(res.status, 200);
    const html = await res.text();
    assert.ok(html.includes('value="jazz"') && html.includes('value="2027-03-01"'), 'the form keeps the search');
    assert.ok(html.includes('<h1>Events found: 2</h1>'));
  }
  assert.equal(asked.length, 1, 'one request to the core for five visitors');
  assert.equal(asked[0].url,
    '/api/v1/catalog/events?q=jazz&city=berlin&from=2027-03-01T00%3A00%3A00Z&to=2027-04-01T00%3A00%3A00Z&one_per_series=true&limit=24');
  // What is not a date, or too long, is not passed on.
  await mf.dispatchFetch(`http://edge/?from=yesterday&q=${'a'.repeat(500)}`);
  assert.equal(asked[1].url, `/api/v1/catalog/events?q=${'a'.repeat(200)}&one_per_series=true&limit=24`);
});

test('a catalog that cannot be read gives a page that says so (503), and only GET is taken', async () => {
  const { mf, fail } = await edgeWithCatalog();
  fail();
  const res = await mf.dispatchFetch('http://edge/?q=anything');
  assert.equal(res.status, 503);
  assert.equal(res.headers.get('cache-control'), 'no-store');
  assert.match(await res.text(), /cannot be listed right now/);
  const post = await mf.dispatchFetch('http://edge/', { method: 'POST' });
  assert.equal(post.status, 405);
});

test('an item whose id is not an id is left out, and a core that hangs gets a few seconds', async () => {
  let hang = false;
  const peer = await startPeer((req, res) => {
    if (hang) return; // never answers
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ items: [...events, { ...events[0], id: '"><script>x</script>' }] }));
  });
  const mf = await startEdge({ CORE_URL: peer.url });
  cleanups.push(() => peer.close(), () => mf.dispose());
  const first = await (await mf.dispatchFetch('http://edge/?city=Paris')).text();
  assert.equal((first.match(/<li class="event">/g) || []).length, 2);
  hang = true;
  const started = Date.now();
  const slow = await mf.dispatchFetch('http://edge/?city=Oslo');
  assert.equal(slow.status, 503, 'nothing kept for this search');
  assert.equal(slow.headers.get('retry-after'), '5');
  assert.ok(Date.now() - started < 10000, 'the core gets a few seconds, not forever');
});
