/* codexweb: the script of every page (no framework, no inline scripts).
 *
 * - toasts in the #toasts live region: server toasts (HX-Trigger "codexweb:toast", e.g. the
 *   429 "Codex is busy, please retry in N seconds"), network errors and 5xx answers;
 * - when a swap removed the focused control (a row's Close), focus goes to its replacement
 *   (a new panel's heading takes focus through `autofocus`, which htmx honours);
 * - <time data-localize> is shown in the reader's own time zone;
 * - tabs of this browser tell each other about sessions (codexweb.tabs): a session closed
 *   here is announced, so the ChatKit area of another tab (static/token_keeper.js) ends at once.
 * The CSRF header of htmx requests comes from hx-headers on <body>.
 */
(function () {
  "use strict";

  var TOAST_LIMIT = 4;
  var TOAST_TTL_MS = { success: 6000, info: 8000, warning: 12000, error: 15000 };

  // Toasts ---------------------------------------------------------------------------------

  function toastRegion() {
    return document.getElementById("toasts");
  }

  function showToast(message, level) {
    var region = toastRegion();
    if (!region || !message) return null;
    level = TOAST_TTL_MS[level] ? level : "info";
    // The same message twice (a retried 429) replaces the old toast instead of stacking.
    Array.prototype.forEach.call(region.querySelectorAll(".toast"), function (existing) {
      if (existing.dataset.message === message) existing.remove();
    });
    while (region.children.length >= TOAST_LIMIT) region.firstElementChild.remove();

    var toast = document.createElement("div");
    toast.className = "toast toast-" + level;
    toast.dataset.message = message;
    toast.dataset.level = level;
    var text = document.createElement("p");
    text.className = "toast-message";
    text.textContent = message;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss notification");
    close.textContent = "×";
    close.addEventListener("click", function () {
      toast.remove();
    });
    toast.appendChild(text);
    toast.appendChild(close);
    region.appendChild(toast);

    var timer = window.setTimeout(function () {
      toast.remove();
    }, TOAST_TTL_MS[level]);
    // Someone reading or about to dismiss it: keep it.
    toast.addEventListener("mouseenter", function () {
      window.clearTimeout(timer);
    });
    toast.addEventListener("focusin", function () {
      window.clearTimeout(timer);
    });
    return toast;
  }

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var region = toastRegion();
    if (region && region.lastElementChild) region.lastElementChild.remove();
  });

  document.addEventListener("codexweb:toast", function (event) {
    var detail = event.detail || {};
    var payload = detail.value && typeof detail.value === "object" ? detail.value : detail;
    showToast(payload.message, payload.level || "error");
  });

  function serverSentToast(xhr) {
    var trigger = xhr && xhr.getResponseHeader("HX-Trigger");
    return !!trigger && trigger.indexOf("codexweb:toast") !== -1;
  }

  function statusMessage(status) {
    if (status >= 500) {
      return "Codex had a problem (HTTP " + status + "). Please try again in a moment.";
    }
    return "That did not work (HTTP " + status + "). Reload the page and try again.";
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (serverSentToast(xhr)) return; // errors.py already said what went wrong
    showToast(statusMessage(xhr.status), "error");
  });

  document.addEventListener("htmx:sendError", function () {
    showToast("Could not reach codexweb. Check your connection and try again.", "error");
  });

  document.addEventListener("htmx:timeout", function () {
    showToast("codexweb took too long to answer. Please try again.", "error");
  });

  // Swaps: focus and local times -------------------------------------------------------------

  /* Keyboard and screen-reader users stay oriented: when the focused control was swapped
   * away (a row's Close), focus goes to its replacement rather than to the page body. */
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail.target;
    if (!target) return;
    var active = document.activeElement;
    if (active && active !== document.body && active.isConnected) return;
    var replacement = target.id ? document.getElementById(target.id) : null;
    if (replacement && replacement.hasAttribute("tabindex")) replacement.focus();
  });

  var timeFormat;
  try {
    timeFormat = new Intl.DateTimeFormat(undefined, {
      dateStyle: "medium",
      timeStyle: "short",
    });
  } catch (error) {
    timeFormat = null;
  }

  function localizeTimes(root) {
    if (!timeFormat || !root.querySelectorAll) return;
    Array.prototype.forEach.call(root.querySelectorAll("time[data-localize]"), function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment.getTime())) return;
      el.title = el.textContent;
      el.textContent = timeFormat.format(moment);
      el.removeAttribute("data-localize");
    });
  }

  // Tabs of this browser ------------------------------------------------------------------

  /* One message bus between the tabs of this origin: BroadcastChannel, or where a browser
   * lacks it, the storage event (a message written and removed at once: the other tabs see
   * the write, nothing stays behind). A tab does not hear its own messages. */
  var TAB_CHANNEL = "codexweb-tabs";
  var tabListeners = [];

  function deliver(message) {
    if (!message || typeof message !== "object") return;
    tabListeners.slice().forEach(function (listener) {
      listener(message);
    });
  }

  var broadcast = null;
  if (window.BroadcastChannel) {
    broadcast = new BroadcastChannel(TAB_CHANNEL);
    broadcast.onmessage = function (event) {
      deliver(event.data);
    };
  } else {
    window.addEventListener("storage", function (event) {
      if (event.key !== TAB_CHANNEL || !event.newValue) return;
      try {
        deliver(JSON.parse(event.newValue));
      } catch (error) {
        // Not one of ours.
      }
    });
  }

  var tabs = {
    post: function (message) {
      if (broadcast) {
        broadcast.postMessage(message);
        return;
      }
      try {
        // A nonce makes every message a change, even the same one twice.
        var stamped = Object.assign({ nonce: Math.random() }, message);
        window.localStorage.setItem(TAB_CHANNEL, JSON.stringify(stamped));
        window.localStorage.removeItem(TAB_CHANNEL);
      } catch (error) {
        // Storage refused (private mode, quota): the tabs find out by polling instead.
      }
    },
    listen: function (listener) {
      tabListeners.push(listener);
      return function () {
        tabListeners = tabListeners.filter(function (other) {
          return other !== listener;
        });
      };
    },
  };

  /* A Close button (ChatKit panel or sessions list) that worked: tell the other tabs. */
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    var sessionId = form && form.dataset && form.dataset.closesSession;
    if (sessionId && event.detail.successful) tabs.post({ type: "ended", sessionId: sessionId });
  });

  // Start-up: htmx.onLoad runs for the page and for every swapped-in fragment.
  if (window.htmx) {
    window.htmx.onLoad(localizeTimes);
  } else {
    document.addEventListener("DOMContentLoaded", function () {
      localizeTimes(document.body);
    });
  }

  function formatTime(moment) {
    return timeFormat ? timeFormat.format(moment) : moment.toISOString();
  }

  window.codexweb = { showToast: showToast, tabs: tabs, formatTime: formatTime };
})();
