// classlocker dashboard: live regions. An element with data-live="/api/..." is refreshed from
// that JSON endpoint ({"html": ..., "alerts": n}) every few seconds, without a reload. Only a
// changed fragment is replaced, so keyboard focus stays put while nothing changes.
(function () {
  "use strict";
  var PERIOD_MS = 1500;

  function setAlertCount(n) {
    var badge = document.getElementById("alert-count");
    if (!badge || typeof n !== "number") return;
    badge.setAttribute("data-count", String(n));
    badge.textContent = n ? String(n) : "";
  }

  function live(el) {
    var url = el.getAttribute("data-live");
    var last = el.innerHTML;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location.href = "/login"; return null; }
          return r.ok ? r.json() : null;
        })
        .then(function (data) {
          if (!data) return;
          if (typeof data.html === "string" && data.html !== last) {
            var focused = document.activeElement && el.contains(document.activeElement);
            if (!focused) { el.innerHTML = data.html; last = data.html; }
          }
          setAlertCount(data.alerts);
          el.setAttribute("data-updated", String(Date.now()));
        })
        .catch(function () { /* the server is restarting: try again next time */ })
        .then(function () { window.setTimeout(tick, PERIOD_MS); });
    }
    window.setTimeout(tick, PERIOD_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var els = document.querySelectorAll("[data-live]");
    for (var i = 0; i < els.length; i++) live(els[i]);
  });
})();
