/* Batchcalls dashboard: live figures without a reload. Polls the page's JSON at most once a
   second and writes the figures into the elements that name them (data-field="a.b"); draws the
   dials and live calls over a batch's life from its history JSON. The pages work without it. */
(function () {
  "use strict";
  var POLL_MS = 1000;

  function pick(data, path) {
    return path.split(".").reduce(function (v, k) { return v == null ? v : v[k]; }, data);
  }

  function fill(data) {
    document.querySelectorAll("[data-field]").forEach(function (el) {
      var value = pick(data, el.getAttribute("data-field"));
      if (value !== undefined && value !== null) { el.textContent = String(value); }
    });
  }

  function poll(url, each, keepGoing) {
    var timer = null;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (data) { each(data); if (keepGoing(data)) { timer = setTimeout(tick, POLL_MS); } })
        .catch(function () { timer = setTimeout(tick, POLL_MS * 5); });
    }
    timer = setTimeout(tick, POLL_MS);
    return function () { clearTimeout(timer); };
  }

  function rate(previous, dials, now) {
    if (!previous) { return null; }
    var seconds = (now - previous.at) / 1000;
    return seconds > 0 ? Math.max(0, (dials - previous.dials) / seconds) : null;
  }

  var SVG = "http://www.w3.org/2000/svg";
  function draw(svg, spans, seconds) {
    while (svg.lastChild && svg.lastChild.nodeName !== "title") { svg.removeChild(svg.lastChild); }
    if (!spans.length) { return; }
    var width = 600, height = 120, step = width / spans.length;
    var rates = spans.map(function (p) { return p.dials / seconds; });
    var top = Math.max(1, Math.max.apply(null, spans.map(function (p, i) { return Math.max(p.live, rates[i]); })));
    var line = [];
    spans.forEach(function (p, i) {
      var bar = document.createElementNS(SVG, "rect");
      var h = (p.live / top) * (height - 4);
      bar.setAttribute("x", String(i * step)); bar.setAttribute("width", String(step - 1));
      bar.setAttribute("y", String(height - h)); bar.setAttribute("height", String(h));
      bar.setAttribute("class", "live");
      svg.appendChild(bar);
      line.push((i * step + step / 2).toFixed(1) + "," + (height - (rates[i] / top) * (height - 4)).toFixed(1));
    });
    var path = document.createElementNS(SVG, "polyline");
    path.setAttribute("points", line.join(" ")); path.setAttribute("class", "dials");
    svg.appendChild(path);
  }

  function loadHistory(svg) {
    if (!svg) { return; }
    fetch(svg.getAttribute("data-history"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (h) {
        document.getElementById("span-seconds").textContent = h.span_seconds.toFixed(1);
        draw(svg, h.spans, h.span_seconds);
      })
      .catch(function () { /* the chart waits for the next reading */ });
  }

  function eventRow(e) {
    var tr = document.createElement("tr");
    var cells = [e.id, e.type, e.created, e.state, String(e.attempts), e.next_attempt, e.last_error];
    cells.forEach(function (text, i) {
      var cell = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) { cell.setAttribute("scope", "row"); }
      if (i === 3) {
        var badge = document.createElement("span");
        badge.className = "badge " + text.replace(" ", "-"); badge.textContent = text; cell.appendChild(badge);
      } else { cell.textContent = text; }
      if (i === 4) { cell.className = "num"; }
      tr.appendChild(cell);
    });
    return tr;
  }

  function batchPage(main) {
    var previous = null, ticks = 0, svg = document.getElementById("timeline");
    var note = document.getElementById("live-note");
    poll(main.getAttribute("data-live"), function (d) {
      fill(d);
      var progress = document.getElementById("batch-progress");
      progress.value = d.done;
      var badge = document.getElementById("batch-status");
      badge.className = "badge " + d.batch.status;
      d.outcomes.forEach(function (o) {
        var bar = document.querySelector('[data-outcome-bar="' + o.outcome + '"]');
        var count = document.querySelector('[data-outcome-count="' + o.outcome + '"]');
        if (bar) { bar.max = d.widest; bar.value = o.calls; }
        if (count) { count.textContent = String(o.calls); }
      });
      var events = document.getElementById("events");
      if (events) { events.replaceChildren.apply(events, d.events.map(eventRow)); }
      var now = Date.now(), perSecond = rate(previous, d.dials, now);
      previous = { at: now, dials: d.dials };
      if (perSecond !== null) { document.getElementById("rate").textContent = perSecond.toFixed(1); }
      ticks += 1;
      if (d.final || ticks % 5 === 0) { loadHistory(svg); }
      if (d.final && note) { note.textContent = "Final: the batch is " + d.batch.status + "."; }
    }, function (d) { return !d.final; });
  }

  function fleetPage(main) {
    var previous = null;
    poll(main.getAttribute("data-fleet-live"), function (f) {
      fill(f);
      var now = Date.now(), perSecond = rate(previous, f.dials_total, now);
      previous = { at: now, dials: f.dials_total };
      if (perSecond !== null) { document.getElementById("rate").textContent = perSecond.toFixed(1); }
    }, function () { return true; });
    fetch(main.getAttribute("data-workers"), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (body) {
        var list = document.getElementById("workers"), note = document.getElementById("workers-note");
        if (body.workers === null) { note.textContent = "The broker could not be asked."; return; }
        note.textContent = body.workers.length + " worker(s) answered within a second.";
        body.workers.forEach(function (name) {
          var li = document.createElement("li"); li.textContent = name; list.appendChild(li);
        });
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var main = document.getElementById("main");
    loadHistory(document.getElementById("timeline"));
    if (main.hasAttribute("data-live") && main.getAttribute("data-final") !== "yes") { batchPage(main); }
    if (main.hasAttribute("data-fleet-live")) { fleetPage(main); }
  });
}());
