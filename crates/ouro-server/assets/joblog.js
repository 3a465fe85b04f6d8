// The live job log (build_job.html): follows the SSE stream of the job's log from the offset
// the page was rendered at and appends lines. Text goes in with textContent only; ANSI styles
// arrive as class names from the server ("ansi-fg-1 ansi-bold"), which are checked before use.
// At the `end` event the page reloads to show the final status.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log || log.getAttribute("data-live") !== "true" || !window.EventSource) return;
  var lines = parseInt(log.getAttribute("data-lines"), 10) || 0;
  var offset = log.getAttribute("data-offset") || "0";
  var openLine = log.getAttribute("data-open-line") === "true";
  var empty = document.getElementById("log-empty");
  var sections = {};
  var container = null;
  var follow = true;
  var CLASS = /^(ansi-(fg|bg)-\d{1,3}|ansi-(bold|dim|italic|underline))$/;

  // The container new lines go to: the open step, else a loose block at the end.
  function target() {
    if (container) return container;
    var last = log.lastElementChild;
    if (last && last.classList.contains("log-loose")) return (container = last);
    if (last && last.tagName === "DETAILS" && last.getAttribute("data-ended") !== "true") return (container = last);
    container = document.createElement("div");
    container.className = "log-loose";
    log.appendChild(container);
    return container;
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function clock(ms) {
    var d = new Date(ms);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }

  function addSpans(el, spans) {
    for (var i = 0; i < spans.length; i++) {
      var s = spans[i];
      var node;
      var classes = (s.c || "").split(" ").filter(function (c) { return CLASS.test(c); });
      if (classes.length) {
        node = document.createElement("span");
        node.className = classes.join(" ");
        node.textContent = s.t;
      } else {
        node = document.createTextNode(s.t);
      }
      el.appendChild(node);
    }
  }

  function newLine(piece) {
    lines += 1;
    var row = document.createElement("div");
    row.className = "log-line" + (piece.marker ? " log-marker" : "");
    row.id = "L" + lines;
    var a = document.createElement("a");
    a.className = "log-ln";
    a.href = "#L" + lines;
    a.textContent = String(lines);
    var t = document.createElement("time");
    t.className = "log-time";
    if (piece.time) {
      t.dateTime = new Date(piece.time).toISOString();
      t.textContent = clock(piece.time);
    }
    var text = document.createElement("span");
    text.className = "log-text";
    row.appendChild(a);
    row.appendChild(t);
    row.appendChild(text);
    target().appendChild(row);
    return text;
  }

  function lastText() {
    var all = log.querySelectorAll(".log-line .log-text");
    return all.length ? all[all.length - 1] : null;
  }

  function onLog(data) {
    if (empty) { empty.remove(); empty = null; }
    for (var i = 0; i < data.lines.length; i++) {
      var p = data.lines[i];
      var el = null;
      if (i === 0 && p.cont && openLine) el = lastText();
      if (!el) el = newLine(p);
      addSpans(el, p.spans);
    }
    openLine = data.text.length > 0 && data.text.charAt(data.text.length - 1) !== "\n";
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  }

  function sectionHeader(d, s) {
    var sum = d.querySelector("summary");
    sum.textContent = "";
    var name = document.createElement("span");
    name.className = "log-step-name";
    name.textContent = s.name;
    var badge = document.createElement("span");
    badge.className = "badge run-" + (/^[a-z_]+$/.test(s.status) ? s.status : "running");
    badge.textContent = s.status;
    var dur = document.createElement("span");
    dur.className = "log-step-dur";
    if (s.duration_ms != null) dur.textContent = s.duration_ms < 1000 ? s.duration_ms + "ms" : (s.duration_ms / 1000).toFixed(1) + "s";
    sum.appendChild(name);
    sum.appendChild(document.createTextNode(" "));
    sum.appendChild(badge);
    sum.appendChild(document.createTextNode(" "));
    sum.appendChild(dur);
    d.className = "log-section log-step-" + badge.className.replace("badge run-", "");
  }

  function onSection(s) {
    var d = sections[s.step] || log.querySelector('details[data-step="' + s.step + '"]');
    if (!d) {
      d = document.createElement("details");
      d.open = true;
      d.setAttribute("data-step", String(s.step));
      d.appendChild(document.createElement("summary"));
      log.appendChild(d);
      container = d;
      openLine = false;
    }
    sections[s.step] = d;
    sectionHeader(d, s);
    if (s.end != null) {
      d.setAttribute("data-ended", "true");
      if (container === d) container = null;
    }
  }

  window.addEventListener("scroll", function () {
    follow = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  });

  var url = log.getAttribute("data-stream");
  url += (url.indexOf("?") >= 0 ? "&" : "?") + "offset=" + encodeURIComponent(offset);
  var es = new EventSource(url);
  es.addEventListener("log", function (ev) { onLog(JSON.parse(ev.data)); });
  es.addEventListener("section", function (ev) { onSection(JSON.parse(ev.data)); });
  es.addEventListener("attempt", function () { es.close(); window.location.reload(); });
  es.addEventListener("end", function () { es.close(); window.location.reload(); });
})();
