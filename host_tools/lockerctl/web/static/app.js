// classlocker dashboard: live regions, pushed by the server (server-sent events, /live).
// An element with data-live="NAME" (lockers, events, alerts, outcome) is replaced by the
// fragment the server sends for NAME whenever it changes; the page never polls. Keyboard focus
// inside a region is never taken away: a region with the focus waits for the next change.
(function () {
  "use strict";

  function setAlertCount(n) {
    var badge = document.getElementById("alert-count");
    if (!badge || typeof n !== "number") return;
    badge.setAttribute("data-count", String(n));
    badge.textContent = n ? String(n) : "";
  }

  function subscribe() {
    var regions = {};
    var pending = {};
    var els = document.querySelectorAll("[data-live]");
    var query = [];
    var ref = "";
    for (var i = 0; i < els.length; i++) {
      var name = els[i].getAttribute("data-live");
      regions[name] = els[i];
      query.push("part=" + encodeURIComponent(name));
      if (els[i].hasAttribute("data-ref")) ref = els[i].getAttribute("data-ref");
    }
    if (!query.length && !document.getElementById("alert-count")) return;
    if (ref) query.push("ref=" + encodeURIComponent(ref));
    Object.keys(regions).forEach(function (name) {
      regions[name].addEventListener("focusout", function () {
        window.setTimeout(function () {
          var el = regions[name];
          if (pending[name] === undefined || el.contains(document.activeElement)) return;
          el.innerHTML = pending[name];
          delete pending[name];
        }, 0);
      });
    });
    var source = new EventSource("/live?" + query.join("&"));
    source.onmessage = function (e) {
      var data;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      var parts = data.parts || {};
      Object.keys(parts).forEach(function (name) {
        var el = regions[name];
        if (!el) return;
        var focused = document.activeElement && el.contains(document.activeElement);
        if (focused) {
          pending[name] = parts[name];  // applied once the focus has left the region
        } else {
          el.innerHTML = parts[name];
          delete pending[name];
        }
        el.setAttribute("data-updated", String(Date.now()));
      });
      setAlertCount(data.alerts);
    };
    source.addEventListener("signed-out", function () {
      source.close();
      window.location.href = "/login";
    });
    var leaving = false;
    source.onerror = function () {
      // A restart of the server: EventSource reconnects by itself. An answer that is not a
      // stream (the session has ended: the sign-in page) closes it for good: the page is
      // loaded again a little later (the server then sends the sign-in page).
      if (source.readyState !== EventSource.CLOSED) return;
      window.setTimeout(function () { if (!leaving) window.location.reload(); }, 5000);
    };
    window.addEventListener("beforeunload", function () { leaving = true; });
    window.addEventListener("pagehide", function () { leaving = true; source.close(); });
  }

  document.addEventListener("DOMContentLoaded", subscribe);
})();
