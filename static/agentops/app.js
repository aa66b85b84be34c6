// The little JS there is: live sockets that only say "look again", and a double-submit guard.
(function () {
  "use strict";

  // One submit per form: a double click sends one request (the server also decides only once).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.submitted) { event.preventDefault(); return; }
    form.dataset.submitted = "1";
    setTimeout(function () { form.querySelectorAll("button").forEach(function (b) { b.disabled = true; }); }, 0);
  });

  function socket(path, query, onMessage, onState) {
    var delay = 500;
    function connect() {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var ws = new WebSocket(scheme + location.host + path + (query ? "?" + query() : ""));
      ws.onopen = function () { delay = 500; if (onState) onState("live"); };
      ws.onmessage = function (event) { onMessage(JSON.parse(event.data)); };
      ws.onclose = function (event) {
        if (event.code === 4403 || event.code === 4404) { if (onState) onState("closed"); return; }
        if (onState) onState("reconnecting");
        // Reconnect with the last seq seen: the server catches up from the database.
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    connect();
  }

  function refresh(selector, url) {
    var el = document.querySelector(selector);
    if (!el || !window.htmx) return;
    htmx.ajax("GET", url, { target: selector, swap: "outerHTML" });
  }

  function debounce(fn, ms) {
    var timer = null;
    return function () { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  function startOverview() {
    if (!document.body.dataset.liveOverview) return;
    var refreshLive = debounce(function () {
      // Never replace a section under a person who is typing in it.
      var live = document.getElementById("live");
      if (live && !live.contains(document.activeElement)) refresh("#live", location.pathname + location.search);
    }, 800);
    socket("/ws/overview/", null, function (msg) {
      if (msg.type === "kill_switch") {
        var bar = document.getElementById("killswitch");
        var shown = bar && bar.dataset.engaged === "1";
        if (bar && shown !== msg.engaged) refresh("#killswitch", "/kill-switch/");
        refreshLive();
      } else if (msg.type === "runs") {
        refreshLive();
      }
    });
  }

  function startRun() {
    var timeline = document.getElementById("timeline");
    if (!timeline) return;
    var runId = timeline.dataset.runId;
    var list = document.getElementById("steps");
    var state = document.getElementById("live-state");
    var follow = document.getElementById("follow");
    var MAX_ROWS = 2000;
    socket("/ws/runs/" + runId + "/", function () { return "after=" + timeline.dataset.lastSeq; }, function (msg) {
      if (msg.type !== "steps") return;
      msg.steps.forEach(function (step) {
        if (document.getElementById("step-" + step.seq)) return;
        list.insertAdjacentHTML("beforeend", step.html);
        var row = list.lastElementChild;
        if (row) row.classList.add("fresh");
      });
      timeline.dataset.lastSeq = String(msg.last_seq);
      // Keep the page light on very long runs: drop the oldest rows; "show earlier" brings them back.
      var rows = list.querySelectorAll("li.step");
      if (rows.length > MAX_ROWS) {
        for (var i = 0; i < rows.length - MAX_ROWS; i++) rows[i].remove();
        var more = list.querySelector("li.more");
        var first = list.querySelector("li.step");
        if (first && !more) {
          var url = "/runs/" + runId + "/steps/?before=" + first.dataset.seq;
          list.insertAdjacentHTML("afterbegin", '<li class="more"><a href="' + url + '" hx-get="' + url + '" hx-target="closest li" hx-swap="outerHTML">Show earlier steps</a></li>');
          if (window.htmx) htmx.process(list.firstElementChild);
        }
      }
      var summary = document.getElementById("run-summary");
      if (summary && msg.summary_html) summary.outerHTML = msg.summary_html;
      if (msg.run && !msg.run.active) {
        var stop = document.getElementById("stop-form");
        if (stop) stop.remove();
      }
      if (follow && follow.checked) window.scrollTo(0, document.body.scrollHeight);
    }, function (s) {
      if (!state) return;
      state.textContent = s === "live" ? "live" : s === "reconnecting" ? "reconnecting…" : "";
      state.className = "live-state " + s;
    });
  }

  document.addEventListener("DOMContentLoaded", function () { startOverview(); startRun(); });
})();
