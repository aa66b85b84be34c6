// The little JS there is (the Content-Security-Policy allows no inline script): live sockets that
// only say "look again", the trace's placement of live steps, filters, shortcuts and local times.
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
    htmx.ajax("GET", url, { target: selector, swap: "outerHTML" }).then(function () { localTimes(document.querySelector(selector)); });
  }

  function debounce(fn, ms) {
    var timer = null;
    return function () { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  // ---- time: relative in the page, absolute local time (with the zone) on hover ----
  var zone = (Intl.DateTimeFormat().resolvedOptions().timeZone || "local");
  function localTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.local) return;
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      var text = d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }) + " " + zone;
      el.title = text + " · " + (el.title || "");
      if (el.classList.contains("abs")) el.textContent = text;
      el.dataset.local = "1";
    });
  }

  // ---- header counters, live on every page; a desktop notification when an approval arrives (opt-in) ----
  var lastApprovals = null;
  function updateCounts() {
    var badges = document.querySelectorAll("[data-count]");
    if (!badges.length) return;
    fetch("/live/counts/", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (counts) {
        if (!counts) return;
        badges.forEach(function (b) {
          var n = counts[b.dataset.count] || 0;
          b.dataset.n = String(n);
          b.textContent = n ? String(n) : "";
        });
        if (lastApprovals !== null && counts.approvals > lastApprovals) notifyApproval(counts.approvals - lastApprovals);
        lastApprovals = counts.approvals;
      })
      .catch(function () {});
  }
  function notifyApproval(n) {
    if (localStorage.getItem("agentops.notify") !== "1" || !("Notification" in window) || Notification.permission !== "granted") return;
    var note = new Notification("agentops: " + n + " new approval" + (n > 1 ? "s" : ""), { body: "An agent is waiting for a person.", tag: "agentops-approval" });
    note.onclick = function () { window.focus(); location.href = "/approvals/"; };
  }
  function setupNotifyToggle() {
    var button = document.getElementById("notify-toggle");
    if (!button || !("Notification" in window)) { if (button) button.hidden = true; return; }
    function show() {
      var on = localStorage.getItem("agentops.notify") === "1" && Notification.permission === "granted";
      button.textContent = on ? "Desktop notifications: on" : "Notify me of new approvals";
      button.setAttribute("aria-pressed", on ? "true" : "false");
    }
    button.addEventListener("click", function () {
      if (localStorage.getItem("agentops.notify") === "1") { localStorage.removeItem("agentops.notify"); show(); return; }
      Notification.requestPermission().then(function (p) { if (p === "granted") localStorage.setItem("agentops.notify", "1"); show(); });
    });
    show();
  }

  function startOverview() {
    if (!document.body.dataset.liveOverview) return;
    var refreshCounts = debounce(updateCounts, 600);
    var refreshLive = debounce(function () {
      // Never replace a section under a person who is typing or choosing in it.
      var live = document.getElementById("live");
      if (live && !live.contains(document.activeElement)) refresh("#live", location.pathname + location.search);
    }, 800);
    updateCounts();
    socket("/ws/overview/", null, function (msg) {
      if (msg.type === "kill_switch") {
        var bar = document.getElementById("killswitch");
        var shown = bar && bar.dataset.engaged === "1";
        if (bar && shown !== msg.engaged) refresh("#killswitch", "/kill-switch/");
        refreshLive();
        refreshCounts();
      } else if (msg.type === "runs") {
        refreshLive();
        refreshCounts();
      }
    });
  }

  // ---- the run page: live spans placed under their turn or call ----
  function lastTurnList(list) {
    var turns = list.querySelectorAll(":scope > li.turn");
    var last = turns.length ? turns[turns.length - 1] : null;
    // A status or input after the last turn closes it: later steps stand at the top.
    if (!last || list.lastElementChild !== last) return null;
    return last.querySelector("ol.spans");
  }

  function placeStep(list, step) {
    var holder = document.createElement("ol");
    holder.innerHTML = step.html;
    var el = holder.firstElementChild;
    if (!el) return null;
    if (step.kind === "model_call" || step.kind === "status" || step.kind === "input" || step.kind === "output") {
      list.appendChild(el);
    } else if (step.kind === "observation" && step.call_id) {
      var call = list.querySelector('li.tool[data-call-id="' + CSS.escape(step.call_id) + '"]');
      if (call) {
        el.classList.remove("span");
        call.querySelector("ol.result").appendChild(el);
        var dur = call.querySelector(":scope > details > summary .m-dur");
        if (dur && el.dataset.duration) dur.textContent = el.dataset.duration;
        var state = call.querySelector(".tool-state");
        if (state) state.innerHTML = el.querySelector(".s-failed") ? '<span class="pill s-failed">error</span>' : '<span class="pill s-succeeded">ok</span>';
        if (el.querySelector(".s-failed")) call.classList.add("is-error");
      } else {
        (lastTurnList(list) || list).appendChild(el);
      }
    } else {
      (lastTurnList(list) || list).appendChild(el);
    }
    return el;
  }

  function startRun() {
    var timeline = document.getElementById("timeline");
    if (!timeline) return;
    var runId = timeline.dataset.runId;
    var list = document.getElementById("steps");
    var state = document.getElementById("live-state");
    var follow = document.getElementById("follow");
    var gap = timeline.dataset.gap === "1";
    var MAX_ROWS = 2000;
    var refreshActions = debounce(function () {
      var actions = document.getElementById("run-actions");
      if (actions && !actions.contains(document.activeElement)) refresh("#run-actions", location.pathname + "?part=actions");
    }, 300);
    socket("/ws/runs/" + runId + "/", function () { return "after=" + timeline.dataset.lastSeq; }, function (msg) {
      if (msg.type !== "steps") return;
      if (!gap) {
        msg.steps.forEach(function (step) {
          if (document.getElementById("step-" + step.seq)) return;
          var el = placeStep(list, step);
          if (el) { el.classList.add("fresh"); localTimes(el); }
        });
      } else {
        var later = list.querySelector("li.more.later a");
        if (later) later.textContent = "Newer steps up to #" + msg.last_seq + ": go to the latest";
      }
      timeline.dataset.lastSeq = String(msg.last_seq);
      // Keep the page light on very long runs: drop the oldest rows; "show earlier" brings them back.
      var rows = list.querySelectorAll(":scope > li.step");
      if (rows.length > MAX_ROWS) {
        for (var i = 0; i < rows.length - MAX_ROWS; i++) rows[i].remove();
        var more = list.querySelector(":scope > li.more");
        var first = list.querySelector(":scope > li.step");
        if (first && !more) {
          var url = "/runs/" + runId + "/steps/?before=" + first.dataset.seq;
          list.insertAdjacentHTML("afterbegin", '<li class="more"><a href="' + url + '" hx-get="' + url + '" hx-target="closest li" hx-swap="outerHTML">Show earlier steps</a></li>');
          if (window.htmx) htmx.process(list.firstElementChild);
        }
      }
      var summary = document.getElementById("run-summary");
      var before = summary ? summary.dataset.status : null;
      if (summary && msg.summary_html) { summary.outerHTML = msg.summary_html; localTimes(document.getElementById("run-summary")); }
      if (msg.run && msg.run.status !== before) refreshActions();
      if (msg.run && !msg.run.active) {
        var stop = document.getElementById("stop-form");
        if (stop) stop.remove();
      }
      if (!gap && follow && follow.checked) window.scrollTo(0, document.body.scrollHeight);
    }, function (s) {
      if (!state) return;
      state.textContent = s === "live" ? "live" : s === "reconnecting" ? "reconnecting…" : "";
      state.className = "live-state " + s;
    });
  }

  // ---- trace tools: filters, expand/collapse, jumps, long payloads ----
  function openTo(el) {
    for (var p = el; p; p = p.parentElement) if (p.tagName === "DETAILS") p.open = true;
    el.scrollIntoView({ block: "center" });
    el.classList.add("flash");
    setTimeout(function () { el.classList.remove("flash"); }, 1600);
  }

  function setupTrace() {
    var list = document.getElementById("steps");
    if (!list) return;
    document.querySelectorAll("[data-kind-filter]").forEach(function (box) {
      box.addEventListener("change", function () { list.classList.toggle("hide-" + box.dataset.kindFilter, !box.checked); });
    });
    document.querySelectorAll("[data-spans]").forEach(function (button) {
      button.addEventListener("click", function () {
        var open = button.dataset.spans === "open";
        list.querySelectorAll("details.span-box").forEach(function (d) { d.open = open; });
      });
    });
    if (location.hash && location.hash.indexOf("#step-") === 0) {
      var target = document.getElementById(location.hash.slice(1));
      if (target) openTo(target);
    }
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-keys-help]")) { var help = helpDialog(); if (!help.open) help.showModal(); return; }
    var expand = event.target.closest("[data-expand]");
    if (expand) {
      var pre = expand.previousElementSibling;
      if (pre) { pre.classList.toggle("open"); expand.textContent = pre.classList.contains("open") ? "show less" : "show all"; }
      return;
    }
    var jump = event.target.closest("[data-jump]");
    if (jump) {
      var el = document.getElementById("step-" + jump.dataset.jump);
      if (el) { event.preventDefault(); history.replaceState(null, "", "#step-" + jump.dataset.jump); openTo(el); }
      return;
    }
    // "Expand" in one layout expands the same gap in the other, so switching layouts loses nothing.
    var gapBtn = event.target.closest("[data-gap]");
    if (gapBtn && event.isTrusted && window.htmx) {
      var file = gapBtn.closest(".file-diff");
      if (file) {
        file.querySelectorAll("[data-gap]").forEach(function (twin) {
          if (twin !== gapBtn && twin.dataset.gap === gapBtn.dataset.gap) window.htmx.trigger(twin, "click");
        });
      }
      return;
    }
    var view = event.target.closest("[data-diff-view]");
    if (view) {
      var box = document.getElementById("diff-view");
      var split = view.dataset.diffView === "split";
      if (box) box.classList.toggle("split", split);
      document.querySelectorAll("[data-diff-view]").forEach(function (b) { b.setAttribute("aria-pressed", b === view ? "true" : "false"); });
      try { localStorage.setItem("agentops.diffView", split ? "split" : "unified"); } catch (e) { /* private mode */ }
    }
  });

  function setupDiff() {
    var box = document.getElementById("diff-view");
    if (!box) return;
    var saved = null;
    try { saved = localStorage.getItem("agentops.diffView"); } catch (e) { /* private mode */ }
    // Narrow screens read a unified diff better; a saved choice wins.
    var split = saved ? saved === "split" : window.innerWidth > 1100;
    box.classList.toggle("split", split);
    document.querySelectorAll("[data-diff-view]").forEach(function (b) { b.setAttribute("aria-pressed", (b.dataset.diffView === "split") === split ? "true" : "false"); });
  }

  // ---- keyboard shortcuts, with a help dialog on "?" ----
  var KEYS = [
    ["?", "show this help"], ["g o", "overview"], ["g r", "runs"], ["g a", "approvals"], ["g p", "pull requests"], ["g e", "errors"],
    ["/", "search runs (on Runs)"], ["j / k", "next / previous span (on a run)"], ["o", "open or close the span"], ["e", "first error (on a run)"], ["Esc", "close"],
  ];
  var GO = { o: "/", r: "/runs/", a: "/approvals/", p: "/pulls/", e: "/errors/" };

  function helpDialog() {
    var dialog = document.getElementById("keys-help");
    if (dialog) return dialog;
    dialog = document.createElement("dialog");
    dialog.id = "keys-help";
    dialog.className = "keys";
    var html = '<h2>Keyboard shortcuts</h2><table><tbody>';
    KEYS.forEach(function (k) { html += "<tr><td>" + k[0].split(" ").map(function (p) { return p === "/" && k[0] !== "/" ? " / " : "<kbd>" + p + "</kbd>"; }).join(" ") + "</td><td>" + k[1] + "</td></tr>"; });
    html += '</tbody></table><form method="dialog"><button class="btn small">Close</button></form>';
    dialog.innerHTML = html;
    document.body.appendChild(dialog);
    return dialog;
  }

  var pendingG = false;
  var cursor = -1;
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var t = event.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) {
      if (event.key === "Escape") t.blur();
      return;
    }
    var key = event.key;
    if (pendingG) {
      pendingG = false;
      if (GO[key]) { event.preventDefault(); location.href = GO[key]; }
      return;
    }
    if (key === "?") { event.preventDefault(); var d = helpDialog(); if (d.open) d.close(); else d.showModal(); return; }
    if (key === "g") { pendingG = true; setTimeout(function () { pendingG = false; }, 1200); return; }
    if (key === "/") {
      var search = document.querySelector("input[type=search]");
      if (search) { event.preventDefault(); search.focus(); search.select(); }
      return;
    }
    var spans = Array.prototype.slice.call(document.querySelectorAll("#steps li.span"));
    if ((key === "j" || key === "k") && spans.length) {
      event.preventDefault();
      cursor = Math.max(0, Math.min(spans.length - 1, cursor + (key === "j" ? 1 : -1)));
      spans.forEach(function (s) { s.classList.remove("flash"); });
      openTo(spans[cursor]);
      return;
    }
    if (key === "o" && cursor >= 0 && spans[cursor]) {
      var det = spans[cursor].querySelector("details");
      if (det) det.open = !det.open;
      return;
    }
    if (key === "e") {
      var first = document.querySelector("[data-key=e]");
      if (first) first.click();
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    setupTrace();
    setupDiff();
    setupNotifyToggle();
    startOverview();
    startRun();
  });
})();

// Configuration a person can read: chip inputs for scope lists, the new grant's keys narrowed to the
// selected tool, the reason and confirmation for raising the trust phase, and numbers with units.
// Everything here is an enhancement: the forms post and validate the same without it.
(function () {
  "use strict";

  function chipFor(container, name, value) {
    var label = document.createElement("label");
    label.className = "chip";
    var box = document.createElement("input");
    box.type = "checkbox"; box.name = name; box.value = value; box.checked = true;
    var text = document.createElement("span");
    text.textContent = value;
    label.appendChild(box); label.appendChild(text);
    addRemove(label, value);
    container.insertBefore(label, container.querySelector(".chip-new"));
  }

  function addRemove(label, value) {
    var x = document.createElement("button");
    x.type = "button"; x.className = "chip-x"; x.textContent = "×";
    x.setAttribute("aria-label", "remove " + value);
    x.addEventListener("click", function () {
      var input = label.parentNode && label.parentNode.querySelector(".chip-new");
      label.remove();
      if (input) input.focus();
    });
    label.appendChild(x);
  }

  function setupChips(container) {
    container.classList.add("js");
    var input = container.querySelector(".chip-new");
    if (!input) return;
    container.querySelectorAll("label.chip").forEach(function (label) {
      var box = label.querySelector("input[type=checkbox]");
      if (box) addRemove(label, box.value);
    });
    function commit() {
      var existing = Array.prototype.map.call(container.querySelectorAll("label.chip input"), function (b) { return b.value; });
      input.value.split(/[,\n]/).forEach(function (part) {
        part = part.trim();
        if (part && existing.indexOf(part) < 0) { chipFor(container, input.name, part); existing.push(part); }
      });
      input.value = "";
    }
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === ",") {
        event.preventDefault();
        commit();
      } else if (event.key === "Backspace" && !input.value) {
        var chips = container.querySelectorAll("label.chip");
        if (chips.length) chips[chips.length - 1].remove();
      }
    });
    input.addEventListener("blur", commit);
    container.addEventListener("click", function (event) { if (event.target === container) input.focus(); });
  }

  function setupNewGrant(form) {
    var select = form.querySelector("select[name$='-tool']");
    if (!select) return;
    function show() {
      var tool = select.value, any = false;
      form.querySelectorAll(".scope-key[data-tools]").forEach(function (key) {
        var on = (" " + key.dataset.tools + " ").indexOf(" " + tool + " ") >= 0;
        key.hidden = !on;
        // Hidden keys do not post: the scope is exactly what the person sees.
        key.querySelectorAll("input, textarea").forEach(function (i) { i.disabled = !on; });
        any = any || on;
      });
      var none = form.querySelector(".scope-none");
      if (none) none.hidden = any;
    }
    select.addEventListener("change", show);
    show();
  }

  function setupTrustRaise(form) {
    var select = form.querySelector("select[name=trust_phase]");
    var box = form.querySelector("[data-trust-raise]");
    if (!select || !box) return;
    var current = parseInt(select.dataset.currentPhase || "0", 10);
    var reason = box.querySelector("textarea"), confirm = box.querySelector("input[type=checkbox]");
    box.classList.add("js");
    function update() {
      var phase = parseInt(select.value, 10), raising = current && phase > current;
      box.hidden = !raising;
      if (reason) reason.required = !!raising;
      if (confirm) { confirm.required = !!raising; if (!raising) confirm.checked = false; }
      box.querySelectorAll(".phase-text").forEach(function (t) { t.hidden = parseInt(t.dataset.phase, 10) !== phase; });
    }
    select.addEventListener("change", update);
    update();
  }

  function formatUnit(unit, raw) {
    if (raw === "" || raw === null) return "";
    var n = Number(raw);
    if (!isFinite(n)) return "";
    if (unit === "tokens") return "= " + Math.round(n).toLocaleString("en-US") + " tokens";
    if (unit === "count") return "= " + Math.round(n).toLocaleString("en-US");
    if (unit === "usd") return "= $" + (n >= 1 || Math.round(n * 100) === n * 100 ? n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) : n.toFixed(4).replace(/0+$/, ""));
    if (unit === "seconds") {
      var s = Math.round(n), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60, parts = [];
      if (h) parts.push(h + "h");
      if (m) parts.push(m + "m");
      if (r) parts.push(r + "s");
      return "= " + (parts.join(" ") || "0s");
    }
    return "";
  }

  function setupUnits(root) {
    root.querySelectorAll("input[data-unit]").forEach(function (input) {
      var hint = document.createElement("span");
      hint.className = "unit-hint";
      hint.setAttribute("aria-live", "polite");
      input.insertAdjacentElement("afterend", hint);
      function update() { hint.textContent = formatUnit(input.dataset.unit, input.value); }
      input.addEventListener("input", update);
      update();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chips]").forEach(setupChips);
    document.querySelectorAll("[data-new-grant]").forEach(setupNewGrant);
    document.querySelectorAll("[data-agent-form]").forEach(function (form) { setupTrustRaise(form); setupUnits(form); });
  });
})();
