/* codexweb: the ChatKit token keeper of /codex/chatkit (loaded by that page only).
 *
 * The ChatKit area of an active session keeps a ChatKit token fresh: countdown, refresh at
 * ~80 % of its lifetime, and recovery (404 → /current, 401 → refresh the login once,
 * 429 → wait Retry-After), and hands the token to <openai-chatkit> when the page has one.
 *
 * Tabs agree: the tabs of this browser showing one session share one token. One of them
 * holds the session's Web Lock and mints; the others ask it for the token and receive every
 * refresh (codexweb.tabs). When the minting tab goes away, the lock passes to another tab.
 * A session closed in one tab is announced to the others at once; a session closed anywhere
 * else (another browser, expiry) is noticed by a cheap status check every few seconds.
 */
(function () {
  "use strict";

  var REFRESH_AT = 0.8; // of the token's lifetime, by the tab that mints
  var FOLLOWER_REFRESH_AT = 0.95; // a tab that did not hear the minting tab's refresh mints itself
  var MIN_REFRESH_MS = 1000;
  var RETRY_BACKOFF_MS = [2000, 5000, 15000, 30000];
  var STATUS_CHECK_MS = 4000; // how soon a tab notices a session ended elsewhere
  var LEADER_ANSWER_MS = 1500; // how long a new tab waits for the minting tab's token

  var app = window.codexweb;

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

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
    this.lifetime = 0;
    this.chatkitSessionId = null;
    this.timer = null;
    this.ticker = null;
    this.checker = null;
    this.failures = 0;
    this.issued = 0;
    this.stopped = false;
    this.pending = null;
    this.leader = !(navigator.locks && window.AbortController); // alone: mint for itself
    this.el = function (name) {
      return area.querySelector("[data-" + name + "]");
    };
  }

  TokenKeeper.prototype.start = function () {
    var keeper = this;
    this.showLiveParts();
    this.ticker = window.setInterval(function () {
      keeper.tick();
    }, 1000);
    this.checker = window.setInterval(function () {
      if (document.visibilityState === "visible") keeper.checkSession();
    }, STATUS_CHECK_MS);
    this.onVisible = function () {
      if (document.visibilityState !== "visible") return;
      // A laptop woke up or the tab came back: look again before anything else.
      keeper.checkSession();
      if (keeper.remaining() <= 0) keeper.fetchToken();
    };
    document.addEventListener("visibilitychange", this.onVisible);
    this.unlisten = app.tabs.listen(function (message) {
      keeper.onTabMessage(message);
    });
    this.report("chatkit.opened", { chatkit: this.el("chatkit-element") ? "mounted" : "absent" });
    this.mountChatKit();
    if (this.leader) {
      this.fetchToken();
    } else {
      this.claimLeadership();
      this.askOtherTabs();
    }
  };

  TokenKeeper.prototype.stop = function () {
    if (this.stopped) return;
    this.stopped = true;
    window.clearInterval(this.ticker);
    window.clearInterval(this.checker);
    window.clearTimeout(this.timer);
    window.clearTimeout(this.answerTimer);
    document.removeEventListener("visibilitychange", this.onVisible);
    if (this.unlisten) this.unlisten();
    if (this.resign) this.resign(); // hands the lock to the next tab on this session
    if (this.lockWait) this.lockWait.abort();
  };

  /* JavaScript runs: the "needs JavaScript" note goes, the live parts appear. */
  TokenKeeper.prototype.showLiveParts = function () {
    var note = this.el("needs-js");
    if (note) note.remove();
    Array.prototype.forEach.call(
      this.area.querySelectorAll("[data-token-status], [data-live]"),
      function (part) {
        part.hidden = false;
      }
    );
  };

  // Tabs -----------------------------------------------------------------------------------

  /* The tab holding the session's lock mints; the lock is held until this keeper stops. */
  TokenKeeper.prototype.claimLeadership = function () {
    var keeper = this;
    this.lockWait = new AbortController();
    navigator.locks
      .request("codexweb-chatkit-" + this.sessionId, { signal: this.lockWait.signal }, function () {
        if (keeper.stopped) return null;
        keeper.lockWait = null;
        keeper.leader = true;
        keeper.becameLeader();
        return new Promise(function (resolve) {
          keeper.resign = resolve;
        });
      })
      .catch(function () {
        // Aborted: this keeper stopped while waiting.
      });
  };

  TokenKeeper.prototype.becameLeader = function () {
    window.clearTimeout(this.answerTimer);
    if (this.token && this.remaining() > this.lifetime * (1 - REFRESH_AT)) {
      this.schedule(this.remaining() - this.lifetime * (1 - REFRESH_AT));
    } else {
      this.fetchToken();
    }
  };

  TokenKeeper.prototype.askOtherTabs = function () {
    var keeper = this;
    app.tabs.post({ type: "token-wanted", sessionId: this.sessionId });
    // The minting tab may be frozen in the background: do not wait for it forever.
    this.answerTimer = window.setTimeout(function () {
      if (!keeper.token && !keeper.stopped) keeper.fetchToken();
    }, LEADER_ANSWER_MS);
  };

  TokenKeeper.prototype.shareToken = function () {
    if (!this.token || this.remaining() <= 0) return;
    app.tabs.post({
      type: "token",
      sessionId: this.sessionId,
      token: this.token,
      remainingMs: this.remaining(),
      lifetime: this.lifetime,
      expiresAt: this.expiresAtText,
      chatkitSessionId: this.chatkitSessionId,
    });
  };

  TokenKeeper.prototype.onTabMessage = function (message) {
    if (this.stopped || message.sessionId !== this.sessionId) return;
    if (message.type === "token-wanted" && this.leader) this.shareToken();
    if (message.type === "token" && message.remainingMs > this.remaining()) {
      this.useToken(message.token, message.remainingMs, message.lifetime, message.expiresAt,
        message.chatkitSessionId);
    }
    if (message.type === "ended") this.recover();
  };

  /* A session ended in another browser, or expired: do not wait for the next token refresh. */
  TokenKeeper.prototype.checkSession = function () {
    var keeper = this;
    if (this.stopped || this.pending) return;
    this.request(this.area.dataset.sessionUrl).then(
      function (response) {
        if (keeper.stopped) return;
        if (response.status === 404) {
          keeper.recover();
          return;
        }
        if (!response.ok) return; // the token keeper reports trouble; this check stays quiet
        readJson(response).then(function (session) {
          if (session && session.status !== "active" && !keeper.stopped) keeper.recover();
        });
      },
      function () {}
    );
  };

  // The token --------------------------------------------------------------------------------

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
      this.setState("expired", "Your access lapsed; reconnecting…");
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
      keeper.failures = 0;
      keeper.useToken(body.token, lifetime, lifetime, body.expires_at, body.chatkit_session_id);
      if (keeper.issued > 1) keeper.report("chatkit.token.refreshed", { tokens_issued: keeper.issued });
      keeper.shareToken();
      return body.token;
    });
  };

  /* A token to use, minted here or shared by another tab; the next refresh is scheduled
   * early by the tab that mints and late by the others (a safety net, normally unused). */
  TokenKeeper.prototype.useToken = function (token, remainingMs, lifetime, expiresAt, chatkitId) {
    this.token = token;
    this.expiresAt = performance.now() + remainingMs;
    this.lifetime = lifetime || remainingMs;
    this.expiresAtText = expiresAt;
    this.chatkitSessionId = chatkitId;
    this.issued += 1;
    window.clearTimeout(this.answerTimer);
    this.area.dataset.tokensIssued = String(this.issued);
    this.el("token-count").textContent = String(this.issued);
    this.el("chatkit-session").textContent = chatkitId || "—";
    this.el("token-expires").textContent = "at " + app.formatTime(new Date(expiresAt));
    this.setState("live", "Connected.");
    this.tick();
    var share = this.leader ? REFRESH_AT : FOLLOWER_REFRESH_AT;
    this.schedule(remainingMs - this.lifetime * (1 - share));
  };

  /* 404 or an ended session: ask /current for this agent and placement: re-attach to an
   * active one, or put the start form back. */
  TokenKeeper.prototype.recover = function () {
    if (this.recovering || this.stopped) return null;
    this.recovering = true;
    var keeper = this;
    var data = this.area.dataset;
    var url = data.currentUrl + "?placement=" + encodeURIComponent(data.placement) +
      "&agent_id=" + encodeURIComponent(data.agentId);
    this.setState("recovering", "This session has ended; looking for your current one…");
    return this.request(url).then(
      function (response) {
        keeper.recovering = false;
        if (keeper.stopped) return null;
        if (response.ok) {
          return readJson(response).then(function (session) {
            if (session && session.session_id && session.session_id !== keeper.sessionId) {
              app.showToast("Reconnected to your current session.", "info");
              return keeper.reloadPanel(data.resumeUrl.replace("SESSION_ID", session.session_id));
            }
            if (session && session.session_id === keeper.sessionId) {
              // Still this session, still active: only its token was refused. The page (with
              // what the user typed) stays; a fresh token comes by the usual back-off (not
              // at once: this may be the token fetch's own recovery, waiting on itself).
              return keeper.retryLater("Could not get a token for this session.");
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
        keeper.recovering = false;
        return keeper.retryLater("Could not reach codexweb.");
      }
    );
  };

  TokenKeeper.prototype.offerNewSession = function () {
    app.showToast("Your Codex session has ended. Start a new one to continue.", "info");
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
    app.showToast("Your login has expired. Please log in again.", "warning");
    window.location.assign(this.area.dataset.loginUrl);
    return null;
  };

  TokenKeeper.prototype.backOffRateLimited = function (response) {
    var keeper = this;
    return readJson(response).then(function (body) {
      var seconds = retryAfterSeconds(response, body);
      app.showToast("Codex is busy, please retry in " + seconds + " seconds", "warning");
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
    if (this.failures === 1 || this.failures % 5 === 0) app.showToast(message, "error");
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
      // initialThread resumes the session's current thread after a reload (null: a new one).
      element.setOptions({ api: api, initialThread: element.dataset.initialThread || null });
      keeper.forwardChatKitEvents(element);
      keeper.report("chatkit.ready", { api: element.dataset.apiUrl ? "custom" : "hosted" });
    });
  };

  /* The component's errors and thread changes become lifecycle events; never message text. */
  TokenKeeper.prototype.forwardChatKitEvents = function (element) {
    var keeper = this;
    element.addEventListener("chatkit.error", function (event) {
      var error = event.detail && event.detail.error;
      keeper.report("chatkit.error", {
        name: String((error && error.name) || "Error").slice(0, 64),
        message: String((error && error.message) || "").slice(0, 200),
      });
    });
    element.addEventListener("chatkit.thread.change", function (event) {
      var threadId = event.detail && event.detail.threadId;
      keeper.report("chatkit.thread.changed", { thread_id: threadId ? String(threadId).slice(0, 64) : null });
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

  // htmx.onLoad runs for the page and for every swapped-in fragment.
  if (window.htmx) {
    window.htmx.onLoad(startTokenKeepers);
  } else {
    document.addEventListener("DOMContentLoaded", function () {
      startTokenKeepers(document.body);
    });
  }
})();
