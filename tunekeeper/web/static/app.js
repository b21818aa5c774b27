// tunekeeper status page: live updates without a reload. The page is complete without this script.
//
// Every data-interval ms, while the tab is visible, ask main's data-live URL for the view's live data (a
// snapshot the server shares among all viewers). Progress bars take the daemon's latest reading as the truth
// and move on from it at the observed step rate, drawn lighter and marked as an estimate; a new reading
// replaces the estimate. When the rest of the view has changed (its fingerprint), fetch the page again and
// swap its main element.
"use strict";
(function () {
  var progress = new Map(); // job id -> the latest reading (see present.Progress.as_json)
  var offset = 0; // server clock minus ours, ms
  var timer = null;
  var polls = 0;

  function main() { return document.querySelector("main[data-live]"); }

  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + (s % 60) + "s";
    return s + "s";
  }

  function readEmbedded() {
    document.querySelectorAll("[data-progress]").forEach(function (el) {
      try {
        var p = JSON.parse(el.getAttribute("data-progress"));
        if (!progress.has(p.id) || progress.get(p.id).reading_ms !== p.reading_ms) progress.set(p.id, p);
      } catch (e) { /* a malformed attribute: leave the server's rendering */ }
    });
  }

  function estimate(p, now) {
    // The measured percentage, and the estimate moved on from it (never past the end, never below the truth).
    var truth = p.percent == null ? 0 : p.percent;
    if (p.state !== "tuning" || !p.rate || !p.total || p.reading_ms == null || p.completed == null) {
      return { truth: truth, est: truth };
    }
    var steps = Math.min(p.total, p.completed + p.rate * Math.max(0, now - p.reading_ms) / 1000);
    return { truth: truth, est: Math.max(truth, Math.min(100, 100 * steps / p.total)) };
  }

  function tick() {
    var now = Date.now() + offset;
    document.querySelectorAll("[data-job]").forEach(function (el) {
      var p = progress.get(Number(el.getAttribute("data-job")));
      if (!p) return;
      var e = estimate(p, now);
      var truth = el.querySelector("rect.truth"), est = el.querySelector("rect.estimate");
      if (truth) truth.setAttribute("width", e.truth.toFixed(2));
      if (est) { est.setAttribute("x", e.truth.toFixed(2)); est.setAttribute("width", (e.est - e.truth).toFixed(2)); }
      var svg = el.querySelector("svg"); if (svg) svg.setAttribute("aria-valuenow", e.est.toFixed(1));
      var pct = el.querySelector(".pct");
      if (pct && p.percent != null) pct.textContent = Math.floor(e.truth) + "%";
      var steps = el.querySelector(".steps");
      if (steps && p.completed != null && p.total) steps.textContent = "step " + p.completed + "/" + p.total;
      var note = el.querySelector(".estimate-note");
      if (note) {
        var ahead = e.est - e.truth >= 0.5;
        note.hidden = !ahead;
        note.textContent = ahead ? "~" + e.est.toFixed(1) + "% estimated" : "";
        el.classList.toggle("estimated", ahead);
      }
    });
    document.querySelectorAll("time[data-ago]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at)) el.textContent = duration((now - at) / 1000) + " ago";
    });
    document.querySelectorAll("[data-elapsed]").forEach(function (el) {
      var from = Date.parse(el.getAttribute("data-elapsed"));
      var until = el.getAttribute("data-until") ? Date.parse(el.getAttribute("data-until")) : now;
      if (!isNaN(from)) el.textContent = duration((until - from) / 1000);
    });
    document.querySelectorAll("time[data-eta]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at)) el.textContent = at > now ? "~in " + duration((at - now) / 1000) : "~any moment";
    });
  }

  function typing() {
    // A form someone is filling in (a token, a search) is not swapped from under them: the next poll tries again.
    var m = main();
    if (!m) return false;
    var active = document.activeElement;
    if (active && m.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) return true;
    return Array.prototype.some.call(m.querySelectorAll("input[type=password], input[type=text], input[type=search]"),
      function (input) { return input.value !== input.defaultValue; });
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main[data-live]");
    var current = main();
    if (fresh && current) { current.replaceWith(document.adoptNode(fresh)); readEmbedded(); tick(); }
  }

  function schedule() {
    clearTimeout(timer);
    var m = main();
    if (!m || document.visibilityState !== "visible") return; // hidden: no requests until visible again
    timer = setTimeout(poll, Number(m.getAttribute("data-interval")) || 2000);
  }

  function poll() {
    var m = main();
    if (!m || document.visibilityState !== "visible") return;
    polls += 1;
    document.documentElement.setAttribute("data-polls", String(polls));
    var sent = Date.now();
    fetch(m.getAttribute("data-live"), { headers: { Accept: "application/json" }, cache: "no-store", credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (live) {
        offset = live.now_ms - (sent + Date.now()) / 2;
        live.progress.forEach(function (p) { progress.set(p.id, p); });
        tick();
        if (live.fingerprint !== main().getAttribute("data-fingerprint") && !typing()) {
          return fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-store", credentials: "same-origin" })
            .then(function (r) { return r.ok ? r.text() : null; })
            .then(function (html) { if (html) swap(html); });
        }
      })
      .catch(function () { /* the server may be restarting: try again at the next interval */ })
      .then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") poll(); else clearTimeout(timer);
  });
  document.addEventListener("DOMContentLoaded", function () {
    readEmbedded();
    tick();
    setInterval(tick, 250);
    schedule();
  });
})();
