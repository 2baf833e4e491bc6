// The purchase page (templates/buy.html). Draws the seat map as SVG from
// `GET /api/v1/events/{event}/seatmap` (seats, zones, tiers and their prices) and keeps each seat's
// state current from the availability snapshot (`…/availability`, which each isolate keeps a
// second: a crowd of viewers costs the seat objects one request per isolate per second), changing
// only the seats whose state changed. The buyer picks seats by click or tap (or from the list view,
// by keyboard or screen reader), or asks for the best available, or standing places; holds them
// (the admission cookie authenticates); sees the price summary from the core
// (`POST /api/v1/checkout/quote`) with the hold's countdown; may apply a promo code, change the
// selection (the hold is released) or pay: checkout with an Idempotency-Key kept for the hold (a
// retry buys once), then the order page (its token in the fragment, never sent to a server).
(function () {
  'use strict';
  var shop = document.getElementById('shop');
  if (!shop) return;
  var $ = function (id) { return document.getElementById(id); };
  var ev = shop.getAttribute('data-event');
  var max = +shop.getAttribute('data-max');
  var api = '/api/v1/events/' + ev;
  var SVG = 'http://www.w3.org/2000/svg';
  var ZERO_DECIMAL = ['JPY', 'KRW', 'VND', 'CLP', 'ISK', 'UGX', 'XAF', 'XOF'];
  // Colours of the price zones: distinct for the common forms of colour blindness and from the
  // grey of held and sold seats; each zone is also named in the legend, and each seat's zone and
  // price in the list view (colour is never the only sign).
  var PALETTE = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#f0e442', '#332288'];
  var FLAGS = ['wheelchair space', 'companion seat', 'easy access', 'hearing loop', 'limited view'];
  var STATE_WORDS = { a: 'available', h: 'held', s: 'sold', x: 'not on sale' };

  var map = null;          // the seat map (seatmap.rs)
  var seats = [];          // every seat, in the snapshot's order
  var states = '';         // the last snapshot's `seats`
  var chosen = [];         // indices of chosen seats, in the order chosen
  var held = null;         // the placed hold { hold, hold_token }
  var tierIndex = 0;       // the seated tier chosen (index in map.seated_tiers)
  var busy = false;

  function say(text, bad) {
    var out = $('shop-status');
    out.textContent = text;
    out.className = bad ? 'box error' : 'muted';
  }
  function money(minor, currency) {
    if (ZERO_DECIMAL.indexOf(currency) >= 0) return minor + ' ' + currency;
    var sign = minor < 0 ? '-' : '';
    var abs = Math.abs(minor);
    return sign + Math.floor(abs / 100) + '.' + String(abs % 100).padStart(2, '0') + ' ' + currency;
  }
  async function json(r) { try { return await r.json(); } catch (e) { return {}; } }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function tier() { return map.seated_tiers[tierIndex]; }
  // A performance measure from `t0` (browsers without the options form of `measure` skip it).
  function measure(name, t0) {
    try {
      performance.measure(name, { start: t0 });
      requestAnimationFrame(function () { setTimeout(function () {
        try { performance.measure(name + '-frame', { start: t0 }); } catch (e) { /* unsupported */ }
      }); });
    } catch (e) { /* unsupported */ }
  }
  function seatPrice(s) { return tier() ? tier().prices[s.zone] : 0; }
  function seatName(s) {
    return s.section.name + ', row ' + s.row + ', seat ' + s.label;
  }
  function seatWords(s) {
    var extra = FLAGS.filter(function (_, i) { return s.flags & (1 << i); });
    return seatName(s) + ' — ' + map.zones[s.zone].name + ', ' + money(seatPrice(s), map.currency) +
      (extra.length ? ' (' + extra.join(', ') + ')' : '');
  }

  // ---- drawing ---------------------------------------------------------------------------------
  // Draw and update times are recorded as performance measures (`seatmap-draw`, `seatmap-update`:
  // the script; `…-frame`: until the frame after it is painted): scripts/bench-storefront.mjs
  // reads them.
  function draw() {
    var t0 = performance.now();
    var box = $('map-box');
    if (!seats.length) { box.hidden = true; $('list-view').hidden = true; $('best').hidden = true; return; }
    var minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    seats.forEach(function (s) {
      minX = Math.min(minX, s.x); minY = Math.min(minY, s.y); maxX = Math.max(maxX, s.x); maxY = Math.max(maxY, s.y);
    });
    var svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', (minX - 1) + ' ' + (minY - 2) + ' ' + (maxX - minX + 2) + ' ' + (maxY - minY + 3));
    svg.setAttribute('id', 'map');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', 'Seat map: ' + seats.length + ' seats. The list below offers the same seats.');
    var stage = document.createElementNS(SVG, 'text');
    stage.setAttribute('x', (minX + maxX) / 2);
    stage.setAttribute('y', minY - 1);
    stage.setAttribute('class', 'stage');
    stage.setAttribute('text-anchor', 'middle');
    stage.textContent = 'Stage';
    svg.appendChild(stage);
    var frag = document.createDocumentFragment();
    seats.forEach(function (s, i) {
      var c = document.createElementNS(SVG, 'circle');
      c.setAttribute('cx', s.x);
      c.setAttribute('cy', s.y);
      c.setAttribute('r', 0.42);
      c.setAttribute('fill', PALETTE[s.zone % PALETTE.length]);
      c.setAttribute('class', 'seat seat-a' + (s.flags & 1 ? ' access' : ''));
      c.setAttribute('data-i', i);
      s.el = c;
      frag.appendChild(c);
    });
    svg.appendChild(frag);
    svg.addEventListener('click', function (e) {
      var i = e.target.getAttribute && e.target.getAttribute('data-i');
      if (i !== null && i !== undefined) toggle(+i);
    });
    box.appendChild(svg);
    measure('seatmap-draw', t0);
  }

  function legend() {
    var l = $('legend');
    map.zones.forEach(function (z, i) {
      var item = el('span', { class: 'key' });
      var sw = document.createElementNS(SVG, 'svg');
      sw.setAttribute('viewBox', '0 0 2 2');
      sw.setAttribute('class', 'swatch');
      sw.setAttribute('aria-hidden', 'true');
      var c = document.createElementNS(SVG, 'circle');
      c.setAttribute('cx', 1); c.setAttribute('cy', 1); c.setAttribute('r', 0.9);
      c.setAttribute('fill', PALETTE[i % PALETTE.length]);
      sw.appendChild(c);
      item.appendChild(sw);
      item.appendChild(document.createTextNode(' ' + z.name + (tier() ? ': ' + money(tier().prices[i], map.currency) : '')));
      l.appendChild(item);
    });
    l.appendChild(el('span', { class: 'key muted' }, 'Grey: held or sold. Ringed: wheelchair space.'));
  }

  function onSale(t) {
    var now = Date.now();
    return !(t.sale_starts_at_ms && now < t.sale_starts_at_ms) && !(t.sale_ends_at_ms && now >= t.sale_ends_at_ms);
  }
  function priceRange(t) {
    var lo = Math.min.apply(null, t.prices), hi = Math.max.apply(null, t.prices);
    return lo === hi ? money(lo, map.currency) : money(lo, map.currency).split(' ')[0] + '–' + money(hi, map.currency);
  }
  function tierChoice() {
    var set = $('tiers');
    if (map.seated_tiers.length < 2) return;
    set.hidden = false;
    map.seated_tiers.forEach(function (t, i) {
      var id = 'tier-' + i;
      var input = el('input', { type: 'radio', name: 'tier', id: id, value: i });
      input.addEventListener('change', function () {
        tierIndex = i;
        $('legend').textContent = '';
        legend();
        showChosen();
        refreshList();
      });
      var label = el('label', { for: id }, ' ' + t.name + ', ' + priceRange(t));
      var left = el('span', { class: 'muted', id: id + '-left' }, onSale(t) ? '' : ' (not on sale now)');
      var p = el('p');
      p.appendChild(input);
      p.appendChild(label);
      p.appendChild(left);
      set.appendChild(p);
    });
  }
  // What each seated tier has left (the snapshot's counts): a tier that is full or not on sale
  // cannot be chosen, and the choice moves to the first that can.
  function tierCounts(a) {
    if (map.seated_tiers.length < 2) return;
    var left = {};
    (a.seated_tiers || []).forEach(function (t) { left[t[0]] = t[1].available; });
    var usable = [];
    map.seated_tiers.forEach(function (t, i) {
      var input = $('tier-' + i);
      var n = left[t.id];
      var ok = onSale(t) && n !== 0;
      input.disabled = !ok;
      if (ok) usable.push(i);
      $('tier-' + i + '-left').textContent = !onSale(t) ? ' (not on sale now)' : n === 0 ? ' (sold out)' :
        n !== undefined && n <= 10 ? ' (only ' + n + ' left)' : '';
    });
    if (held || !usable.length) return;
    var first = !document.querySelector('input[name=tier]:checked');
    if (first || usable.indexOf(tierIndex) < 0) {
      var was = tier().name;
      tierIndex = usable[0];
      $('tier-' + tierIndex).checked = true;
      $('legend').textContent = '';
      legend();
      showChosen();
      refreshList();
      if (!first) say(was + ' tickets are no longer available: ' + tier().name + ' is chosen instead.', true);
    }
  }

  // ---- the list view ---------------------------------------------------------------------------
  function listView() {
    var select = $('list-section');
    map.sections.forEach(function (s, i) { select.appendChild(el('option', { value: i }, s.name)); });
    select.addEventListener('change', refreshList);
    refreshList();
  }
  function refreshList() {
    var rows = $('list-rows');
    rows.textContent = '';
    var section = map.sections[+$('list-section').value || 0];
    if (!section) return;
    section.rows.forEach(function (r) {
      var set = el('fieldset', { class: 'row' });
      set.appendChild(el('legend', {}, 'Row ' + r.label));
      r.indices.forEach(function (i) {
        var s = seats[i];
        var id = 'seat-' + i;
        var box = el('input', { type: 'checkbox', id: id, 'data-i': i });
        box.checked = chosen.indexOf(i) >= 0;
        box.disabled = state(i) !== 'a' && !box.checked;
        box.addEventListener('change', function () { toggle(i); });
        var label = el('label', { for: id }, listWords(i));
        var line = el('span', { class: 'choice' });
        line.appendChild(box);
        line.appendChild(label);
        set.appendChild(line);
      });
      rows.appendChild(set);
    });
  }

  function listWords(i) {
    var s = seats[i];
    return ' Seat ' + s.label + ' — ' + map.zones[s.zone].name + ', ' + money(seatPrice(s), map.currency) +
      (state(i) === 'a' ? '' : ' (' + STATE_WORDS[state(i)] + ')');
  }

  // ---- choosing --------------------------------------------------------------------------------
  function state(i) { return states.charAt(i) || 'a'; }
  function toggle(i) {
    if (held || busy) return;
    var at = chosen.indexOf(i);
    if (at >= 0) {
      chosen.splice(at, 1);
    } else {
      if (state(i) !== 'a') { say(seatName(seats[i]) + ' is ' + STATE_WORDS[state(i)] + '.'); return; }
      if (chosen.length >= max) { say('You may choose up to ' + max + ' seats.', true); return; }
      if (map.sectioned && chosen.length && seats[chosen[0]].section !== seats[i].section) {
        say('Please choose seats in one section: ' + seats[chosen[0]].section.name + '.', true);
        return;
      }
      chosen.push(i);
    }
    mark(i);
    showChosen();
  }
  function mark(i) {
    var s = seats[i];
    var box = document.getElementById('seat-' + i);
    var isChosen = chosen.indexOf(i) >= 0;
    s.el.setAttribute('class', 'seat seat-' + state(i) + (s.flags & 1 ? ' access' : '') + (isChosen ? ' chosen' : ''));
    if (box) {
      box.checked = isChosen;
      box.disabled = state(i) !== 'a' && !isChosen;
      box.nextSibling.textContent = listWords(i);
    }
  }
  function showChosen() {
    var list = $('chosen');
    list.textContent = '';
    $('selection').hidden = chosen.length === 0;
    var total = 0;
    chosen.forEach(function (i) {
      var s = seats[i];
      total += seatPrice(s);
      var li = el('li', {}, seatWords(s) + ' ');
      var remove = el('button', { type: 'button', class: 'secondary', 'aria-label': 'Remove ' + seatName(s) }, 'Remove');
      remove.addEventListener('click', function () { toggle(i); });
      li.appendChild(remove);
      list.appendChild(li);
    });
    if (chosen.length) {
      list.appendChild(el('li', { class: 'muted' }, chosen.length + ' seats: ' + money(total, map.currency) +
        ' before fees and tax (the summary after holding shows the total).'));
    }
  }

  // ---- live availability ------------------------------------------------------------------------
  async function poll() {
    if (document.visibilityState !== 'visible' || !map) return;
    try {
      var r = await fetch(api + '/availability');
      if (!r.ok) return;
      var a = await r.json();
      if (!a || typeof a.seats !== 'string') return;
      // The map and the snapshot must describe the same seats in the same order: a new
      // inventory changed them, so the page starts again from the new map (once per version:
      // edges may take a few seconds to all have it).
      if (a.seats.length !== seats.length || (a.inventory_version && a.inventory_version !== map.version)) {
        var once = 'seatmap-reloaded-' + ev + '-' + a.inventory_version;
        if (!held && !sessionStorage.getItem(once)) { sessionStorage.setItem(once, '1'); location.reload(); }
        if (a.seats.length !== seats.length) return;
      }
      tierCounts(a);
      var t0 = performance.now();
      var before = states;
      states = a.seats;
      var lost = [];
      for (var i = 0; i < seats.length; i++) {
        if (before.charAt(i) === states.charAt(i)) continue;
        mark(i);
        var at = chosen.indexOf(i);
        if (at >= 0 && states.charAt(i) !== 'a' && !held) { chosen.splice(at, 1); mark(i); lost.push(seatName(seats[i])); }
      }
      if (lost.length) { showChosen(); say('Someone else just took ' + lost.join(', ') + '.', true); }
      if (before && before !== states) measure('seatmap-update', t0);
      (a.tiers || []).forEach(function (t) {
        var left = document.querySelector('[data-ga-left="' + CSS.escape(t[0]) + '"]');
        if (left) left.textContent = t[1].available ? ' ' + t[1].available + ' left' : ' Sold out';
      });
    } catch (e) { /* the next poll tries again */ }
  }

  // ---- holding, the summary, paying ---------------------------------------------------------------
  async function place(body) {
    if (busy || held) return;
    busy = true;
    say('Holding…');
    try {
      var r = await fetch(api + '/holds', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': crypto.randomUUID() },
        body: JSON.stringify(body),
      });
      var b = await json(r);
      if (r.status !== 201 && r.status !== 200) {
        say('We could not hold that: ' + (b.detail || r.status), true);
        await poll();
        return;
      }
      held = b;
      // The hold's end by this browser's clock: its length from now (the server's clock may differ).
      held.until = Date.now() + (b.hold.expires_at - b.hold.created_at);
      $('hold-left').textContent = '';
      showSummary();
      await summary();
    } catch (e) {
      say('Something went wrong: ' + e, true);
    } finally {
      busy = false;
    }
  }

  function showSummary() {
    $('choose').hidden = true;
    $('standing').hidden = true;
    $('summary').hidden = false;
    $('summary').focus();
  }

  // The core's price summary of the hold (with `promo`, if it applies; a code that does not
  // leaves the summary as it was and says why).
  async function summary(promo) {
    var body = { hold_token: held.hold_token };
    if (promo) body.promo_code = promo;
    var r, q;
    try {
      r = await fetch('/api/v1/checkout/quote', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
      });
      q = await json(r);
    } catch (e) {
      say('The price could not be worked out right now; you may still pay or change your selection.', true);
      return;
    }
    if (!r.ok) {
      say((promo ? 'That promo code did not work: ' : 'The price could not be worked out: ') + (q.detail || r.status), true);
      return;
    }
    var lines = $('summary-lines').tBodies[0];
    lines.textContent = '';
    q.lines.forEach(function (l) {
      var tr = el('tr');
      var what = l.tier_name + (l.seat ? ' — seat ' + l.seat : '');
      tr.appendChild(el('th', { scope: 'row' }, what));
      tr.appendChild(el('td', {}, money(l.price_minor, q.currency)));
      lines.appendChild(tr);
    });
    var totals = $('totals');
    totals.textContent = '';
    [['Tickets', q.subtotal_minor], ['Discount', -q.discount_minor], ['Fees', q.fee_minor],
      [q.tax_included ? 'Tax (included)' : 'Tax', q.tax_minor], ['Total', q.total_minor]].forEach(function (p) {
      if (p[0] !== 'Total' && !p[1]) return;
      totals.appendChild(el('dt', {}, p[0]));
      totals.appendChild(el('dd', { id: p[0] === 'Total' ? 'total' : null }, money(p[1], q.currency)));
    });
    held.promo = q.promo_code || '';
    // The number field only where the shop sends texts (the core says so in the quote).
    $('phone-box').hidden = !q.sms;
    say((promo ? 'Promo code applied. ' : 'Held. ') + 'Your order: ' + money(q.total_minor, q.currency) + '.');
  }

  function holdClock() {
    var left = $('hold-left');
    setInterval(function () {
      if (!held) return;
      var s = Math.max(0, Math.round((held.until - Date.now()) / 1000));
      left.textContent = Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
      if (s === 0 && !busy) {
        // Ended at the object already; the release only tidies up after a clock that runs slow.
        fetch(api + '/holds/' + encodeURIComponent(held.hold.id), { method: 'DELETE' }).catch(function () {});
        held = null;
        back();
        say('Your hold ended: the seats are free again. Please choose again.', true);
      }
    }, 1000);
  }

  function back() {
    chosen = [];
    $('summary').hidden = true;
    $('choose').hidden = false;
    $('standing').hidden = !map.ga_tiers.length;
    seats.forEach(function (_, i) { mark(i); });
    showChosen();
    $('choose-h').focus();
    poll();
  }

  // A waiting list's offer taken from its mail (offer.js kept it in this tab): its seats are held
  // for this buyer already, so the page opens at their summary.
  async function resumeOffer() {
    var kept = sessionStorage.getItem('offer-' + ev);
    if (!kept || held) return;
    var o = JSON.parse(kept);
    // What was left when the offer was taken, less the time since (a reload does not restart it).
    var left = o.expires_at_ms - o.now_ms - (Date.now() - (o.taken_at || Date.now()));
    if (!(left > 0)) { sessionStorage.removeItem('offer-' + ev); return; }
    held = { hold: o.hold, hold_token: o.hold_token, until: Date.now() + left };
    showSummary();
    await summary();
    if (held && held.promo !== undefined) say('Kept for you from the waiting list. ' + $('shop-status').textContent);
  }

  // Lets the hold go (an ended or unknown hold is gone already) and goes back to choosing.
  async function release() {
    if (!held || busy) return;
    busy = true;
    try {
      var r = await fetch(api + '/holds/' + encodeURIComponent(held.hold.id), { method: 'DELETE' });
      if (!r.ok && r.status !== 404 && r.status !== 409) {
        say('The hold could not be released: ' + ((await json(r)).detail || r.status), true);
        return;
      }
      held = null;
      sessionStorage.removeItem('offer-' + ev);
      say('Released. Choose again.');
      back();
    } catch (e) {
      say('The hold could not be released: ' + e, true);
    } finally {
      busy = false;
    }
  }

  async function pay(e) {
    e.preventDefault();
    if (!held || busy) return;
    busy = true;
    var f = $('pay');
    try {
      say('Creating your order…');
      var k = sessionStorage.getItem('checkout-' + held.hold.id);
      if (!k) { k = crypto.randomUUID(); sessionStorage.setItem('checkout-' + held.hold.id, k); }
      var body = { hold_token: held.hold_token, email: f.email.value, return_url: location.origin + '/orders/' };
      if (held.promo) body.promo_code = held.promo;
      if (!$('phone-box').hidden && f.phone.value.trim()) body.phone = f.phone.value.trim();
      var c = await fetch('/api/v1/checkout', {
        method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': k }, body: JSON.stringify(body),
      });
      var cb = await json(c);
      if (c.status !== 201 && c.status !== 200) { say('Your order could not be made: ' + (cb.detail || c.status), true); return; }
      sessionStorage.setItem('order-' + cb.order.id, cb.order_token);
      sessionStorage.removeItem('offer-' + ev);
      location.href = '/orders/' + cb.order.id + '#' + cb.order_token;
    } catch (err) {
      say('Something went wrong: ' + err, true);
    } finally {
      busy = false;
    }
  }

  // ---- standing and best available -----------------------------------------------------------------
  function standing() {
    if (!map.ga_tiers.length) return;
    $('standing').hidden = false;
    var box = $('ga-tiers');
    map.ga_tiers.forEach(function (t, n) {
      var form = el('form', { class: 'box ga' });
      var id = 'ga-' + n;
      form.appendChild(el('h3', {}, t.name + ' — ' + money(t.price_minor, map.currency)));
      var p = el('p');
      p.appendChild(el('label', { for: id }, 'Places '));
      var q = el('input', { id: id, type: 'number', min: 1, max: max, value: 1, required: '' });
      p.appendChild(q);
      p.appendChild(el('span', { class: 'muted', 'data-ga-left': t.id }, ''));
      form.appendChild(p);
      form.appendChild(el('button', { type: 'submit' }, 'Hold ' + t.name));
      form.addEventListener('submit', function (e) {
        e.preventDefault();
        place({ kind: 'general_admission', tier: t.id, quantity: +q.value });
      });
      box.appendChild(form);
    });
  }

  function best() {
    if (map.sectioned) {
      $('best-section-p').hidden = false;
      map.sections.forEach(function (s, i) { $('best-section').appendChild(el('option', { value: i }, s.name)); });
    }
    var zone = $('best-zone');
    map.zones.forEach(function (z) { zone.appendChild(el('option', { value: z.id }, z.name)); });
    $('best').addEventListener('submit', function (e) {
      e.preventDefault();
      var body = { kind: 'best_available', quantity: +$('quantity').value };
      if (zone.value) body.zone = zone.value;
      if ($('best-wheelchair').checked) body.accessibility = 'wheelchair';
      if (tier() && tier().id) body.tier = tier().id;
      if (map.sectioned) body.section = map.sections[+$('best-section').value || 0].id;
      place(body);
    });
  }

  async function load() {
    var r = await fetch(api + '/seatmap', { cache: 'no-cache' });
    if (!r.ok) { say('The seats cannot be shown right now: ' + ((await json(r)).detail || r.status), true); return; }
    map = await r.json();
    map.sections.forEach(function (section) {
      section.rows.forEach(function (row) {
        row.indices = [];
        row.seats.forEach(function (x) {
          row.indices.push(seats.length);
          seats.push({ id: x[0], label: x[1], x: x[2], y: x[3], zone: x[4], flags: x[5], section: section, row: row.label });
        });
      });
    });
    tierChoice();
    legend();
    draw();
    listView();
    best();
    standing();
    $('hold-chosen').addEventListener('click', function () {
      if (!chosen.length) return;
      var body = { kind: 'seats', seats: chosen.map(function (i) { return seats[i].id; }) };
      if (map.sectioned) body.section = seats[chosen[0]].section.id;
      if (tier() && tier().id) body.tier = tier().id;
      place(body);
    });
    $('clear-chosen').addEventListener('click', function () {
      var was = chosen;
      chosen = [];
      was.forEach(mark);
      showChosen();
    });
    $('apply-promo').addEventListener('click', async function () {
      if (!held || busy) return;
      busy = true;
      try { await summary($('promo').value.trim()); } catch (e) { say('Something went wrong: ' + e, true); } finally { busy = false; }
    });
    $('release').addEventListener('click', release);
    $('pay').addEventListener('submit', pay);
    holdClock();
    await poll();
    say(seats.length ? 'Choose seats on the map or from the list.' : 'Choose your places.');
    setInterval(poll, 1000);
    await resumeOffer();
  }

  load().catch(function (e) { say('The seats cannot be shown right now: ' + e, true); });
})();
