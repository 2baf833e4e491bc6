// Animates the countdown of `#countdown[data-until]` (the page also refreshes itself without this).
(function () {
  var c = document.getElementById('countdown');
  if (!c) return;
  var until = +c.dataset.until;
  function fmt(s) {
    return s < 60 ? s + ' s'
      : s < 3600 ? Math.floor(s / 60) + ' min ' + (s % 60) + ' s'
      : Math.floor(s / 3600) + ' h ' + Math.floor(s % 3600 / 60) + ' min';
  }
  setInterval(function () {
    var s = Math.max(0, Math.round((until - Date.now()) / 1000));
    c.textContent = fmt(s);
    if (s === 0) location.reload();
  }, 1000);
})();
