// The page a waiting list's offer mail links to (`/events/{event}/offer#<offer token>`): takes the
// offer (`POST /api/v1/events/{event}/waitlist/offer`), which sets this browser's admission for as
// long as the offer stands and answers the hold that carries it, then opens the purchase page at
// that hold's summary (buy.js reads what this page kept in the tab). The token stays in the tab.
(function () {
  'use strict';
  var box = document.getElementById('offer');
  if (!box) return;
  var ev = box.getAttribute('data-offer');
  var token = location.hash.slice(1) || sessionStorage.getItem('offer-token-' + ev);
  if (location.hash) {
    sessionStorage.setItem('offer-token-' + ev, token);
    history.replaceState(null, '', location.pathname);
  }
  function say(text) {
    box.textContent = '';
    var p = document.createElement('p');
    p.textContent = text;
    box.appendChild(p);
  }
  async function take() {
    if (!token) { say('Open this page from the link in your mail.'); return; }
    var r = await fetch('/api/v1/events/' + encodeURIComponent(ev) + '/waitlist/offer', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: token }),
    });
    var j = {};
    try { j = await r.json(); } catch (e) { /* not JSON */ }
    if (r.status !== 200) {
      say(j.reason === 'offer-ended'
        ? 'This offer has ended: it was taken, declined, or its time ran out.'
        : 'This offer could not be opened: ' + (j.detail || r.status));
      return;
    }
    j.taken_at = Date.now();
    sessionStorage.setItem('offer-' + ev, JSON.stringify(j));
    location.replace(j.next);
  }
  take().catch(function (e) { say('Something went wrong: ' + e); });
})();
