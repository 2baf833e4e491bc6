// Animates the countdown of `#countdown[data-until]` (the page also refreshes itself without this).
// The element is looked up at each tick: refresh.js may have replaced it. It is a `role="timer"`,
// which screen readers do not announce at every tick.
(function () {
  function fmt(s) {
    return s < 60 ? s + ' s'
      : s < 3600 ? Math.floor(s / 60) + ' min ' + (s % 60) + ' s'
      : Math.floor(s / 3600) + ' h ' + Math.floor(s % 3600 / 60) + ' min';
  }
  if (!document.getElementById('countdown')) return;
  setInterval(function () {
    var c = document.getElementById('countdown');
    if (!c) return;
    var s = Math.max(0, Math.round((+c.dataset.until - Date.now()) / 1000));
    c.textContent = fmt(s);
    if (s === 0) location.reload();
  }, 1000);
})();
