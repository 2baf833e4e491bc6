// Pages that follow something (the line) update in place: every `data-refresh` seconds the page is
// fetched again and what changed is written into it, rather than reloading it (which loses the
// reader's place and is announced by no screen reader). The place, wait and progress are written
// into the status box that is already there, so its `role="status"` announces them. A page that
// changed in kind (the line opened, the buyer's turn came, the place was lost) is loaded as a page,
// with its own scripts; an answer that says to wait (429, 503) is waited out. Browsers without
// JavaScript use the `<meta refresh>` in `<noscript>` instead.
(function () {
  'use strict';
  var secs = +document.body.getAttribute('data-refresh');
  if (!secs) return;
  var FOLLOWED = ['position', 'wait'];
  // Writes what changed into this page; false when the fresh page is of another kind.
  function apply(doc) {
    var sameKind = doc.title === document.title && doc.body.getAttribute('data-refresh') &&
      FOLLOWED.every(function (id) { return !!document.getElementById(id) === !!doc.getElementById(id); });
    if (!sameKind) return false;
    if (!!document.getElementById('paused') !== !!doc.getElementById('paused')) {
      var main = document.querySelector('main');
      main.replaceChildren.apply(main, Array.from(doc.querySelector('main').childNodes));
      return true;
    }
    FOLLOWED.forEach(function (id) {
      var now = doc.getElementById(id);
      var here = document.getElementById(id);
      if (now && here && here.textContent !== now.textContent) here.textContent = now.textContent;
    });
    var bar = document.getElementById('progress');
    var next = doc.getElementById('progress');
    if (bar && next) {
      bar.value = next.value;
      bar.setAttribute('aria-valuetext', next.getAttribute('aria-valuetext'));
      bar.textContent = next.textContent;
    }
    secs = +doc.body.getAttribute('data-refresh') || secs;
    return true;
  }
  async function tick() {
    var wait = secs;
    try {
      var r = await fetch(location.href, { headers: { accept: 'text/html' }, cache: 'no-store' });
      if (r.status === 429 || r.status === 503) {
        wait = Math.max(secs, +r.headers.get('retry-after') || 0);
      } else if (r.redirected || !r.ok) {
        location.replace(r.url);
        return;
      } else if (!apply(new DOMParser().parseFromString(await r.text(), 'text/html'))) {
        location.replace(r.url);
        return;
      }
    } catch (e) { /* the next tick tries again */ }
    setTimeout(tick, wait * 1000);
  }
  setTimeout(tick, secs * 1000);
})();
