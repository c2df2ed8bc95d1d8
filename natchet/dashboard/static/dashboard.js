// natchet dashboard: live updates (Server-Sent Events) and copy buttons. No build step.
// The pages work without it; with it, a region marked data-live-region is fetched again
// (same URL) when the tenant's log tells of a run change, and swapped in place.
(function () {
  "use strict";
  function refresh(regionId) {
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById(regionId);
        var here = document.getElementById(regionId);
        if (fresh && here) here.replaceWith(fresh);
      });
  }
  function follow(el) {
    if (!window.EventSource) return;
    var regionId = el.getAttribute("data-live-region");
    var onlyRun = el.getAttribute("data-live-run");
    var timer = null, later = null;
    var source = new EventSource(el.getAttribute("data-live"));
    source.addEventListener("run", function (ev) {
      var data = JSON.parse(ev.data);
      if (onlyRun && data.run_id !== onlyRun) return;
      // The read model follows the log closely, not at once: read now, and once more.
      clearTimeout(timer); clearTimeout(later);
      timer = setTimeout(function () { refresh(regionId); }, 250);
      later = setTimeout(function () { refresh(regionId); }, 1500);
    });
    window.addEventListener("beforeunload", function () { source.close(); });
  }
  function copy(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) return;
    var text = target.value;
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      target.select(); document.execCommand("copy"); done();
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(follow);
    document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
    document.querySelectorAll("[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () { copy(b); });
    });
  });
})();
