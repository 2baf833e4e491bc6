// An event's page: keeps "what is left" of each tier current from the edge's availability snapshot
// (`GET /api/v1/events/{event}/availability?counts`, which each isolate keeps a second: viewers
// cost the seat objects nothing more; counts only, not a character per seat). Asks every 5 s while
// the page is visible; says nothing aloud (a changing count is not worth interrupting a screen
// reader for). A tier whose sale has not started or is over keeps what the page said.
(function () {
  var table = document.querySelector('table.tiers[data-event]');
  if (!table) return;
  var url = '/api/v1/events/' + table.getAttribute('data-event') + '/availability?counts';
  // The page's words for a tier's counts (about.rs Left::of and Left::text say the same).
  function left(c) {
    if (c.available === 0) return 'Sold out';
    if (c.available <= 10 || c.available * 10 <= c.capacity) return 'Only ' + c.available + ' left';
    return 'Available';
  }
  function apply(a) {
    var counts = {};
    (a.tiers || []).concat(a.seated_tiers || []).forEach(function (t) { counts[t[0]] = t[1]; });
    if ((a.sections || []).length) {
      counts['*seats'] = a.sections.reduce(function (sum, s) {
        return { capacity: sum.capacity + s[1].capacity, available: sum.available + s[1].available };
      }, { capacity: 0, available: 0 });
    }
    table.querySelectorAll('[data-left]:not([data-closed])').forEach(function (cell) {
      var c = counts[cell.getAttribute('data-left')];
      if (c) cell.textContent = left(c);
    });
  }
  async function poll() {
    if (document.visibilityState !== 'visible') return;
    try {
      var r = await fetch(url);
      if (r.ok) { var a = await r.json(); if (a) apply(a); }
    } catch (e) { /* the next poll tries again */ }
  }
  setInterval(poll, 5000);
})();
