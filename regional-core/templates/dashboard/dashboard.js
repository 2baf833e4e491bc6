// The organizer dashboard's only script: refreshes the live panel every few seconds by fetching
// its HTML from the core (same origin, the sign-in cookie) and swapping it in. Without script the
// page is still complete; it only stops refreshing.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var state = document.getElementById("refresh-state");
  if (!live) return;
  var every = (parseInt(live.getAttribute("data-refresh-secs"), 10) || 5) * 1000;
  var src = live.getAttribute("data-src");
  var failures = 0;
  function say(text) { if (state) state.textContent = text; }
  function refresh() {
    fetch(src, { credentials: "same-origin", headers: { accept: "text/html" } })
      .then(function (resp) {
        if (resp.status === 401) { window.location.assign("/dashboard"); return null; }
        if (!resp.ok) throw new Error("the core answered " + resp.status);
        return resp.text();
      })
      .then(function (html) {
        if (html === null) return;
        live.innerHTML = html;
        failures = 0;
        say("Refreshes every " + every / 1000 + " s.");
      })
      .catch(function (e) {
        failures += 1;
        say("Not refreshed (" + e.message + "); trying again.");
      })
      .then(function () { setTimeout(refresh, every * Math.min(1 + failures, 6)); });
  }
  say("Refreshes every " + every / 1000 + " s.");
  setTimeout(refresh, every);
})();
