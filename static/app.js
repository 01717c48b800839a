/* codexweb: the one script of the pages (no framework, no inline scripts).
 *
 * - every htmx request carries the CSRF token from <meta name="csrf-token">;
 * - toasts in the #toasts live region: server toasts (HX-Trigger "codexweb:toast", e.g. the
 *   429 "Codex is busy, please retry in N seconds"), network errors and 5xx answers;
 * - focus moves to the new panel's heading after a swap (keyboard and screen-reader users);
 * - <time data-localize> is shown in the reader's own time zone;
 * - the ChatKit area keeps a ChatKit token fresh: countdown, refresh at ~80 % of its lifetime,
 *   and recovery (404 → /current, 401 → refresh the login once, 429 → wait Retry-After).
 */
(function () {
  "use strict";

  var TOAST_LIMIT = 4;
  var TOAST_TTL_MS = { success: 6000, info: 8000, warning: 12000, error: 15000 };

  // CSRF -----------------------------------------------------------------------------------

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRFToken"] = csrfToken();
  });

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

  /* Keyboard and screen-reader users stay oriented: a new panel takes focus on its heading;
   * when the focused control was swapped away (a row's Close), focus goes to its replacement. */
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail.target;
    if (!target) return;
    if (target.id === "codex-panel") {
      var heading = target.querySelector("[data-focus-after-swap]");
      if (heading) heading.focus();
      return;
    }
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

  // ChatKit token keeper ---------------------------------------------------------------------

  var REFRESH_AT = 0.8; // of the token's lifetime
  var MIN_REFRESH_MS = 1000;
  var RETRY_BACKOFF_MS = [2000, 5000, 15000, 30000];

  function formatRemaining(ms) {
    if (ms <= 0) return "0:00";
    var total = Math.ceil(ms / 1000);
    var hours = Math.floor(total / 3600);
    var minutes = Math.floor((total % 3600) / 60);
    var seconds = total % 60;
    var mmss = (hours ? String(minutes).padStart(2, "0") : String(minutes)) + ":" +
      String(seconds).padStart(2, "0");
    return hours ? hours + ":" + mmss : mmss;
  }

  function retryAfterSeconds(response, body) {
    var header = parseInt(response.headers.get("Retry-After"), 10);
    if (!isNaN(header) && header > 0) return header;
    if (body && body.retry_after > 0) return body.retry_after;
    return 30;
  }

  function readJson(response) {
    return response.json().catch(function () {
      return null;
    });
  }

  function TokenKeeper(area) {
    this.area = area;
    this.sessionId = area.dataset.sessionId;
    this.bearer = null; // set only if the login session lapsed and /api/auth/refresh helped
    this.token = null;
    this.expiresAt = 0; // performance.now() at which the token expires
    this.timer = null;
    this.ticker = null;
    this.failures = 0;
    this.issued = 0;
    this.stopped = false;
    this.pending = null;
    this.el = function (name) {
      return area.querySelector("[data-" + name + "]");
    };
  }

  TokenKeeper.prototype.start = function () {
    var keeper = this;
    this.ticker = window.setInterval(function () {
      keeper.tick();
    }, 1000);
    this.onVisible = function () {
      // A laptop woke up after the token expired: do not wait for the (throttled) timer.
      if (document.visibilityState === "visible" && keeper.remaining() <= 0) keeper.fetchToken();
    };
    document.addEventListener("visibilitychange", this.onVisible);
    this.report("chatkit.opened", { chatkit: this.el("chatkit-element") ? "mounted" : "absent" });
    this.mountChatKit();
    this.fetchToken();
  };

  TokenKeeper.prototype.stop = function () {
    this.stopped = true;
    window.clearInterval(this.ticker);
    window.clearTimeout(this.timer);
    document.removeEventListener("visibilitychange", this.onVisible);
  };

  TokenKeeper.prototype.remaining = function () {
    return this.token ? this.expiresAt - performance.now() : 0;
  };

  TokenKeeper.prototype.tick = function () {
    if (!this.area.isConnected) {
      this.stop(); // the panel was swapped away (closed, another session resumed)
      this.report("chatkit.closed", { tokens_issued: this.issued });
      return;
    }
    var countdown = this.el("countdown");
    if (!countdown || !this.token) return;
    var remaining = this.remaining();
    countdown.textContent = formatRemaining(remaining);
    countdown.classList.toggle("countdown-low", remaining < 60000);
    if (remaining <= 0 && this.area.dataset.state === "live") {
      this.setState("expired", "The ChatKit token expired; fetching a new one…");
    }
  };

  TokenKeeper.prototype.setState = function (state, message) {
    this.area.dataset.state = state;
    var status = this.el("token-status");
    if (status) status.dataset.state = state;
    var text = this.el("token-state");
    if (text && text.textContent !== message) text.textContent = message;
  };

  TokenKeeper.prototype.schedule = function (delayMs) {
    var keeper = this;
    window.clearTimeout(this.timer);
    // Never a tight loop, whatever a clock or a response says.
    var delay = isFinite(delayMs) ? Math.max(MIN_REFRESH_MS, delayMs) : RETRY_BACKOFF_MS[0];
    this.timer = window.setTimeout(function () {
      keeper.fetchToken();
    }, delay);
  };

  TokenKeeper.prototype.request = function (url, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    if (this.bearer) headers.Authorization = "Bearer " + this.bearer;
    if (options.method && options.method !== "GET") headers["X-CSRFToken"] = csrfToken();
    return fetch(url, {
      method: options.method || "GET",
      headers: headers,
      credentials: "same-origin",
      cache: "no-store",
    });
  };

  /* Lifecycle analytics (POST /api/codex/events): best effort, never in the user's way. */
  TokenKeeper.prototype.report = function (event, properties) {
    var url = this.area.dataset.eventsUrl;
    if (!url) return;
    var headers = { "Content-Type": "application/json", "X-CSRFToken": csrfToken() };
    if (this.bearer) headers.Authorization = "Bearer " + this.bearer;
    fetch(url, {
      method: "POST",
      headers: headers,
      credentials: "same-origin",
      keepalive: true,
      body: JSON.stringify({
        event: event,
        session_id: this.sessionId,
        properties: properties || {},
      }),
    }).catch(function () {});
  };

  /* Fetch a token; resolves to the token string, or null while recovering. Concurrent
   * callers (the timer, ChatKit's getClientSecret) share one request. */
  TokenKeeper.prototype.fetchToken = function () {
    if (this.stopped) return Promise.resolve(null);
    if (!this.pending) {
      var keeper = this;
      this.pending = this.fetchTokenOnce(false).then(
        function (token) {
          keeper.pending = null;
          return token;
        },
        function () {
          keeper.pending = null;
          return null;
        }
      );
    }
    return this.pending;
  };

  TokenKeeper.prototype.fetchTokenOnce = function (afterLoginRefresh) {
    var keeper = this;
    var url = this.area.dataset.tokenUrl + "?session_id=" + encodeURIComponent(this.sessionId);
    return this.request(url).then(
      function (response) {
        if (keeper.stopped) return null;
        if (response.ok) return keeper.accept(response);
        keeper.report("chatkit.token.failed", { status: response.status });
        if (response.status === 404) return keeper.recover();
        if (response.status === 401 && !afterLoginRefresh) {
          return keeper.refreshLogin().then(function (refreshed) {
            return refreshed ? keeper.fetchTokenOnce(true) : keeper.toLogin();
          });
        }
        if (response.status === 401) return keeper.toLogin();
        if (response.status === 403) return keeper.reloadPanel();
        if (response.status === 429) return keeper.backOffRateLimited(response);
        return keeper.retryLater("Codex had a problem (HTTP " + response.status + ").");
      },
      function () {
        keeper.report("chatkit.token.failed", { status: 0 });
        return keeper.retryLater("Could not reach codexweb.");
      }
    );
  };

  TokenKeeper.prototype.accept = function (response) {
    var keeper = this;
    var serverNow = Date.parse(response.headers.get("Date") || "") || Date.now();
    return response.json().then(function (body) {
      var lifetime = Date.parse(body.expires_at) - serverNow;
      keeper.token = body.token;
      keeper.expiresAt = performance.now() + lifetime;
      keeper.failures = 0;
      keeper.issued += 1;
      if (keeper.issued > 1) keeper.report("chatkit.token.refreshed", { tokens_issued: keeper.issued });
      keeper.area.dataset.tokensIssued = String(keeper.issued);
      keeper.el("token-count").textContent = String(keeper.issued);
      keeper.el("chatkit-session").textContent = body.chatkit_session_id || "—";
      keeper.el("token-expires").textContent =
        "at " + (timeFormat ? timeFormat.format(new Date(body.expires_at)) : body.expires_at);
      keeper.setState("live", "ChatKit token ready.");
      keeper.tick();
      keeper.schedule(lifetime * REFRESH_AT);
      return body.token;
    });
  };

  /* 404: the session ended or is not ours. Ask /current for this agent and placement:
   * re-attach to an active one, or put the start form back. */
  TokenKeeper.prototype.recover = function () {
    var keeper = this;
    var data = this.area.dataset;
    var url = data.currentUrl + "?placement=" + encodeURIComponent(data.placement) +
      "&agent_id=" + encodeURIComponent(data.agentId);
    this.setState("recovering", "The session is no longer active; looking for your current one…");
    return this.request(url).then(
      function (response) {
        if (keeper.stopped) return null;
        if (response.ok) {
          return readJson(response).then(function (session) {
            if (session && session.session_id && session.session_id !== keeper.sessionId) {
              showToast("Reconnected to your current session.", "info");
              return keeper.reloadPanel(data.resumeUrl.replace("SESSION_ID", session.session_id));
            }
            return keeper.offerNewSession();
          });
        }
        if (response.status === 404) return keeper.offerNewSession();
        if (response.status === 401) return keeper.toLogin();
        if (response.status === 429) return keeper.backOffRateLimited(response);
        return keeper.retryLater("Codex had a problem (HTTP " + response.status + ").");
      },
      function () {
        return keeper.retryLater("Could not reach codexweb.");
      }
    );
  };

  TokenKeeper.prototype.offerNewSession = function () {
    showToast("Your Codex session has ended. Start a new one to continue.", "info");
    return this.reloadPanel();
  };

  TokenKeeper.prototype.reloadPanel = function (url) {
    this.stop();
    if (window.htmx) {
      return window.htmx
        .ajax("GET", url || this.area.dataset.panelUrl, { target: "#codex-panel" })
        .then(function () {
          return null;
        });
    }
    window.location.assign(url || this.area.dataset.panelUrl);
    return Promise.resolve(null);
  };

  /* 401: the login session lapsed. The refresh cookie may still hold: it answers with an
   * access token, which this page then sends as Bearer. */
  TokenKeeper.prototype.refreshLogin = function () {
    var keeper = this;
    return this.request(this.area.dataset.refreshUrl, { method: "POST" }).then(
      function (response) {
        if (!response.ok) return false;
        return readJson(response).then(function (body) {
          if (!body || !body.access_token) return false;
          keeper.bearer = body.access_token;
          return true;
        });
      },
      function () {
        return false;
      }
    );
  };

  TokenKeeper.prototype.toLogin = function () {
    this.stop();
    showToast("Your login has expired. Please log in again.", "warning");
    window.location.assign(this.area.dataset.loginUrl);
    return null;
  };

  TokenKeeper.prototype.backOffRateLimited = function (response) {
    var keeper = this;
    return readJson(response).then(function (body) {
      var seconds = retryAfterSeconds(response, body);
      showToast("Codex is busy, please retry in " + seconds + " seconds", "warning");
      keeper.setState("waiting", "Codex is busy; trying again in " + seconds + " seconds.");
      keeper.schedule(seconds * 1000);
      return null;
    });
  };

  TokenKeeper.prototype.retryLater = function (reason) {
    var delay = RETRY_BACKOFF_MS[Math.min(this.failures, RETRY_BACKOFF_MS.length - 1)];
    this.failures += 1;
    var seconds = Math.round(delay / 1000);
    var message = reason + " Retrying in " + seconds + " seconds.";
    if (this.failures === 1 || this.failures % 5 === 0) showToast(message, "error");
    this.setState("waiting", message);
    this.schedule(delay);
    return null;
  };

  /* A token with some life left, fetching a fresh one when needed (for ChatKit). */
  TokenKeeper.prototype.usableToken = function (forceFresh) {
    if (!forceFresh && this.token && this.remaining() > 30000) return Promise.resolve(this.token);
    return this.fetchToken().then(function (token) {
      if (!token) throw new Error("No ChatKit token available");
      return token;
    });
  };

  /* With CHATKIT_SCRIPT_URL the page carries <openai-chatkit>: hand it our tokens. Hosted
   * ChatKit asks for a client secret; a self-hosted ChatKit server (data-api-url) gets every
   * request with the token as Bearer, and a 401 from it (token expired mid-chat) is retried
   * once with a fresh token. */
  TokenKeeper.prototype.mountChatKit = function () {
    var element = this.el("chatkit-element");
    if (!element || !window.customElements) return;
    var keeper = this;
    window.customElements.whenDefined("openai-chatkit").then(function () {
      if (keeper.stopped) return;
      var api;
      if (element.dataset.apiUrl) {
        api = {
          url: element.dataset.apiUrl,
          domainKey: element.dataset.domainKey,
          fetch: function (input, init) {
            return keeper.chatkitFetch(input, init, false);
          },
        };
      } else {
        api = {
          getClientSecret: function (current) {
            // A first call may reuse a fresh token; a call with one means "that one expired".
            return keeper.usableToken(!!current);
          },
        };
      }
      element.setOptions({ api: api });
      keeper.report("chatkit.ready", { api: element.dataset.apiUrl ? "custom" : "hosted" });
    });
  };

  TokenKeeper.prototype.chatkitFetch = function (input, init, isRetry) {
    var keeper = this;
    return this.usableToken(isRetry).then(function (token) {
      var headers = new Headers((init && init.headers) || {});
      headers.set("Authorization", "Bearer " + token);
      var options = Object.assign({}, init || {}, { headers: headers });
      return fetch(input, options).then(function (response) {
        if (response.status === 401 && !isRetry) return keeper.chatkitFetch(input, init, true);
        return response;
      });
    });
  };

  function startTokenKeepers(root) {
    if (!root.querySelectorAll) return;
    var areas = root.matches && root.matches("[data-chatkit-area]") ? [root] : [];
    areas = areas.concat(Array.prototype.slice.call(root.querySelectorAll("[data-chatkit-area]")));
    areas.forEach(function (area) {
      if (area.codexwebKeeper) return;
      area.codexwebKeeper = new TokenKeeper(area);
      area.codexwebKeeper.start();
    });
  }

  // Start-up: htmx.onLoad runs for the page and for every swapped-in fragment.
  function onContent(root) {
    localizeTimes(root);
    startTokenKeepers(root);
  }

  if (window.htmx) {
    window.htmx.onLoad(onContent);
  } else {
    document.addEventListener("DOMContentLoaded", function () {
      onContent(document.body);
    });
  }

  window.codexweb = { showToast: showToast };
})();
