// The join form's browser check: finds a number n such that SHA-256 of `challenge.n` starts with
// `data-difficulty` zero bits, puts it in the form, then submits it.
(function () {
  var f = document.getElementById('join'), s = document.getElementById('check');
  if (!f || !f.elements.challenge) return;
  var d = parseInt(f.getAttribute('data-difficulty'), 10) || 0;
  function zeros(b) {
    var n = 0;
    for (var i = 0; i < b.length; i++) {
      if (b[i] === 0) { n += 8; continue; }
      return n + Math.clz32(b[i]) - 24;
    }
    return n;
  }
  f.addEventListener('submit', async function (e) {
    var sol = f.elements.solution;
    if (sol.value) return;
    e.preventDefault();
    f.querySelector('button').disabled = true;
    s.textContent = 'Checking your browser, one moment...';
    var ch = f.elements.challenge.value, enc = new TextEncoder();
    for (var n = 0; ; n++) {
      var h = new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(ch + '.' + n)));
      if (zeros(h) >= d) { sol.value = String(n); break; }
    }
    s.textContent = 'Joining...';
    f.submit();
  });
})();
