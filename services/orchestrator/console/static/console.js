// COO console: keeps [data-live] regions fresh by polling their partial every 2 s, shows a
// "Reconnecting…" banner with backoff (1, 2, 4, 8, 10 s) while the orchestrator does not answer,
// never blanks what is on screen, and shows every action's outcome (errors included).
(function () {
  "use strict";

  var INTERVAL_MS = 2000;
  var MAX_BACKOFF_MS = 10000;
  var TIMEOUT_MS = 8000;
  var banner = document.getElementById("connection");
  var flashArea = document.getElementById("flash");
  var pollers = [];
  var down = false;

  if (window.htmx) {
    // Errors of actions (4xx) are pages to show in the flash area, not failures to drop.
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "4..", swap: true, error: false },
      { code: "...", swap: false, error: true }
    ];
    htmx.config.includeIndicatorStyles = false;
  }

  function signInAgain() {
    var here = location.pathname + location.search;
    location.assign("/console/sign-in?next=" + encodeURIComponent(here));
  }

  function showFlash(ok, text) {
    if (!flashArea) return;
    var box = document.createElement("div");
    box.className = "flash " + (ok ? "flash--ok" : "flash--error");
    box.setAttribute("role", ok ? "status" : "alert");
    var p = document.createElement("p");
    p.className = "flash__text";
    if (!ok) {
      var strong = document.createElement("strong");
      strong.textContent = "Not done: ";
      p.appendChild(strong);
    }
    p.appendChild(document.createTextNode(text));
    var close = document.createElement("button");
    close.type = "button";
    close.className = "flash__close";
    close.setAttribute("data-dismiss", "");
    close.setAttribute("aria-label", "Dismiss this message");
    close.textContent = "×";
    box.appendChild(p);
    box.appendChild(close);
    flashArea.replaceChildren(box);
  }

  function connectionLost(delay) {
    down = true;
    if (!banner) return;
    var seconds = Math.round(delay / 1000);
    banner.replaceChildren();
    var spinner = document.createElement("span");
    spinner.className = "connection__spinner";
    spinner.setAttribute("aria-hidden", "true");
    banner.appendChild(spinner);
    banner.appendChild(document.createTextNode(
      "Reconnecting… the orchestrator is not answering; retrying in " + seconds + " s. What you see may be out of date."
    ));
    banner.setAttribute("data-state", "reconnecting");
  }

  function connectionBack() {
    if (!down) return;
    down = false;
    if (!banner) return;
    banner.replaceChildren();
    banner.removeAttribute("data-state");
  }

  // A part of the page the operator is using: typing in it, or with a changed field.
  function busy(el) {
    var active = document.activeElement;
    if (active && el.contains(active) && active.matches("input, textarea, select")) return true;
    var fields = el.querySelectorAll("input:not([type=hidden]), textarea");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== fields[i].defaultValue) return true;
    }
    return el.querySelector(".htmx-request") !== null;
  }

  // Swap ``fresh`` in for ``old``, keeping open <details> open and focus where it was.
  function replace(old, fresh) {
    var open = {};
    old.querySelectorAll("details[id][open]").forEach(function (d) { open[d.id] = true; });
    var active = document.activeElement;
    var focusId = active && old.contains(active) && active.id ? active.id : null;
    fresh.querySelectorAll("details[id]").forEach(function (d) { if (open[d.id]) d.open = true; });
    old.replaceWith(fresh);
    if (window.htmx) htmx.process(fresh);
    if (focusId) {
      var again = document.getElementById(focusId);
      if (again) again.focus({ preventScroll: true });
    }
  }

  // Each top-level child with an id is swapped on its own, only when it changed and is not busy.
  function apply(region, html) {
    var tpl = document.createElement("template");
    tpl.innerHTML = html;
    var fresh = Array.prototype.slice.call(tpl.content.children);
    var old = Array.prototype.slice.call(region.children);
    var sameShape = fresh.length === old.length && fresh.every(function (node, i) {
      return node.id && node.id === old[i].id;
    });
    if (!sameShape) {
      if (busy(region)) return;
      region.replaceChildren.apply(region, Array.prototype.slice.call(tpl.content.childNodes));
      remember(region);
      if (window.htmx) htmx.process(region);
      return;
    }
    fresh.forEach(function (node, i) {
      var html = node.outerHTML;
      if (old[i]._cooHtml === html || busy(old[i])) return;
      node._cooHtml = html;
      replace(old[i], node);
    });
  }

  // What each swappable child was last rendered as, to skip swaps that change nothing.
  function remember(region) {
    Array.prototype.forEach.call(region.children, function (child) { child._cooHtml = child.outerHTML; });
  }

  function Poller(region) {
    this.region = region;
    remember(region);
    this.url = region.getAttribute("data-live");
    this.failures = 0;
    this.timer = null;
    this.inFlight = false;
    this.schedule(INTERVAL_MS);
  }

  Poller.prototype.schedule = function (ms) {
    clearTimeout(this.timer);
    var self = this;
    this.timer = setTimeout(function () { self.poll(); }, ms);
  };

  Poller.prototype.failed = function () {
    this.failures += 1;
    var delay = Math.min(1000 * Math.pow(2, this.failures - 1), MAX_BACKOFF_MS);
    connectionLost(delay);
    this.schedule(delay);
  };

  Poller.prototype.poll = function () {
    var self = this;
    if (this.inFlight) return;
    this.inFlight = true;
    var controller = new AbortController();
    var timeout = setTimeout(function () { controller.abort(); }, TIMEOUT_MS);
    fetch(this.url, {
      headers: { "HX-Request": "true", "Accept": "text/html" },
      credentials: "same-origin",
      cache: "no-store",
      signal: controller.signal
    }).then(function (response) {
      if (response.status === 401) { signInAgain(); return null; }
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.text();
    }).then(function (html) {
      if (html === null) return;
      apply(self.region, html);
      self.failures = 0;
      connectionBack();
      self.schedule(INTERVAL_MS);
    }).catch(function () {
      self.failed();
    }).finally(function () {
      clearTimeout(timeout);
      self.inFlight = false;
    });
  };

  // A problem's "line N" button: select that line of the editor's text and scroll it into view.
  function gotoLine(area, line) {
    if (!area || !(line > 0)) return;
    var lines = area.value.split("\n");
    var start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    var end = start + (lines[line - 1] || "").length;
    area.focus();
    area.setSelectionRange(start, end);
    var height = parseFloat(getComputedStyle(area).lineHeight) || 20;
    area.scrollTop = Math.max(0, (line - 3) * height);
  }

  function start() {
    document.querySelectorAll("[data-live]").forEach(function (region) { pollers.push(new Poller(region)); });

    // After an action, refresh at once instead of waiting for the next tick.
    document.body.addEventListener("coo-refresh", function () {
      pollers.forEach(function (p) { p.schedule(0); });
    });

    document.addEventListener("click", function (event) {
      var button = event.target.closest ? event.target.closest("[data-dismiss]") : null;
      if (button) {
        var box = button.closest(".flash");
        if (box) box.remove();
      }
      var go = event.target.closest ? event.target.closest("[data-goto-line]") : null;
      if (go) gotoLine(document.getElementById(go.getAttribute("data-editor")), +go.getAttribute("data-goto-line"));
    });

    if (!window.htmx) return;
    document.body.addEventListener("htmx:afterRequest", function (event) {
      var xhr = event.detail.xhr;
      if (xhr && xhr.status === 401) { signInAgain(); return; }
      // A form whose action succeeded starts clean, so its region updates again.
      var form = event.detail.elt && event.detail.elt.closest ? event.detail.elt.closest("form") : null;
      if (form && event.detail.successful && xhr && xhr.status < 300) form.reset();
    });
    // A success message goes after a while; an error stays until dismissed.
    document.body.addEventListener("htmx:afterSwap", function (event) {
      var ok = event.detail.target && event.detail.target.querySelector
        ? event.detail.target.querySelector(".flash--ok") : null;
      if (ok) setTimeout(function () { ok.remove(); }, 10000);
    });
    document.body.addEventListener("htmx:sendError", function () {
      showFlash(false, "the orchestrator could not be reached, so the action was not sent. Try again once it is back.");
    });
    document.body.addEventListener("htmx:responseError", function (event) {
      var xhr = event.detail.xhr;
      showFlash(false, "the orchestrator answered " + (xhr ? xhr.status : "with an error") +
        "; the action may not have been applied. Check the page, then try again.");
    });
    document.body.addEventListener("htmx:timeout", function () {
      showFlash(false, "no answer from the orchestrator in time; check the page before trying again.");
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
