/* codexweb: the built-in conversation of /codex/chatkit (loaded by that page only, when no
 * ChatKit web component is configured).
 *
 * The server renders the session's current thread; this script takes over the form and
 * speaks the ChatKit protocol to /chatkit (threads.create for the first message, then
 * threads.add_user_message), showing the reply as its text deltas stream in. The ChatKit
 * token comes from the area's token keeper (static/token_keeper.js): a 401 gets one retry
 * with a fresh token; when the session is gone the keeper recovers and swaps this panel out.
 */
(function () {
  "use strict";

  var app = window.codexweb;
  var TEXT_DELTA = "assistant_message.content_part.text_delta";
  var HINT = "Enter sends; Shift+Enter starts a new line.";
  var UNAVAILABLE = "The agent is unavailable right now. Please try again.";

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

  function Conversation(area, root) {
    this.area = area;
    this.root = root;
    this.url = root.dataset.chatkitUrl;
    this.threadId = root.dataset.threadId || null;
    this.agentName = root.dataset.agentName;
    this.log = root.querySelector("[data-conversation-log]");
    this.list = root.querySelector("[data-messages]");
    this.input = root.querySelector("[data-message-input]");
    this.button = root.querySelector("[data-send]");
    this.hint = root.querySelector("[data-composer-hint]");
    this.streaming = false;
    this.waitTimer = null;
  }

  Conversation.prototype.start = function () {
    var conversation = this;
    this.root.querySelector("[data-composer]").addEventListener("submit", function (event) {
      event.preventDefault();
      conversation.send();
    });
    this.input.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      if (event.ctrlKey || event.altKey || event.metaKey) return;
      event.preventDefault();
      conversation.send();
    });
  };

  Conversation.prototype.keeper = function () {
    return this.area.codexwebKeeper;
  };

  Conversation.prototype.canSend = function () {
    var keeper = this.keeper();
    return !this.streaming && !this.waitTimer && this.area.isConnected && keeper && !keeper.stopped;
  };

  Conversation.prototype.updateButton = function () {
    this.button.disabled = !this.canSend();
  };

  // Messages ---------------------------------------------------------------------------------

  Conversation.prototype.addMessage = function (role, text) {
    var item = document.createElement("li");
    item.className = "message message-" + role;
    var meta = document.createElement("p");
    meta.className = "message-meta";
    var author = document.createElement("strong");
    author.textContent = role === "user" ? "You" : this.agentName;
    meta.appendChild(author);
    var body = document.createElement("div");
    body.className = "message-text";
    body.textContent = text;
    item.appendChild(meta);
    item.appendChild(body);
    this.list.appendChild(item);
    var empty = this.root.querySelector("[data-conversation-empty]");
    if (empty) empty.hidden = true;
    item.scrollIntoView({ block: "nearest" });
    return item;
  };

  Conversation.prototype.reply = function (itemId) {
    return this.list.querySelector('[data-item-id="' + CSS.escape(itemId) + '"]');
  };

  /* Forget the thread and its messages: the next message starts a new thread. */
  Conversation.prototype.startOver = function () {
    this.threadId = null;
    delete this.root.dataset.threadId;
    var earlier = this.root.querySelector(".conversation-earlier");
    if (earlier) earlier.remove();
    while (this.list.firstChild) this.list.removeChild(this.list.firstChild);
  };

  /* A message that was refused (never stored) goes back into the textbox to send again. */
  Conversation.prototype.giveBack = function (message, text) {
    message.remove();
    if (!this.input.value) this.input.value = text;
    if (!this.list.children.length) {
      var empty = this.root.querySelector("[data-conversation-empty]");
      if (empty) empty.hidden = false;
    }
  };

  // Sending ----------------------------------------------------------------------------------

  Conversation.prototype.send = function () {
    var text = this.input.value.trim();
    this.input.focus();
    if (!text || !this.canSend()) return;
    this.input.value = "";
    var message = this.addMessage("user", text);
    this.sending = message;
    this.setStreaming(true);
    var input = { content: [{ type: "input_text", text: text }], attachments: [], inference_options: {} };
    var request = this.threadId
      ? { type: "threads.add_user_message", params: { thread_id: this.threadId, input: input } }
      : { type: "threads.create", params: { input: input } };
    var conversation = this;
    this.post(request, false)
      .then(function (response) {
        return conversation.answer(response, message, text);
      })
      .catch(function (error) {
        // No token (the keeper is recovering and says so) or no network.
        if (error && error.message !== "No ChatKit token available") {
          app.showToast("Could not reach codexweb. Check your connection and try again.", "error");
        }
        conversation.dropUnfinished();
        if (!message.dataset.itemId) conversation.giveBack(message, text);
      })
      .then(function () {
        conversation.setStreaming(false);
      });
  };

  Conversation.prototype.setStreaming = function (streaming) {
    this.streaming = streaming;
    this.log.setAttribute("aria-busy", streaming ? "true" : "false");
    this.updateButton();
  };

  Conversation.prototype.post = function (request, isRetry) {
    var conversation = this;
    return this.keeper()
      .usableToken(isRetry)
      .then(function (token) {
        return fetch(conversation.url, {
          method: "POST",
          headers: {
            Authorization: "Bearer " + token,
            "Content-Type": "application/json",
            Accept: "text/event-stream",
          },
          credentials: "same-origin",
          cache: "no-store",
          body: JSON.stringify(request),
        });
      })
      .then(function (response) {
        if (response.status === 401 && !isRetry) return conversation.post(request, true);
        return response;
      });
  };

  Conversation.prototype.answer = function (response, message, text) {
    var conversation = this;
    if (response.ok) return this.readStream(response);
    if (response.status === 404) {
      // The thread is gone (deleted in another tab or through the API), not the session:
      // the message is kept in the box and starts a new thread when sent again.
      this.startOver();
      this.giveBack(message, text);
      app.showToast("This conversation was deleted elsewhere. Send your message again to start a new one.", "info");
      return null;
    }
    if (response.status === 401) {
      // The session ended: the keeper finds the current one or offers a new one.
      this.giveBack(message, text);
      this.keeper().recover();
      return null;
    }
    return readJson(response).then(function (problem) {
      conversation.giveBack(message, text);
      if (response.status === 429) {
        conversation.waitFor(retryAfterSeconds(response, problem));
      } else {
        var detail = problem && problem.detail;
        app.showToast(detail || "Codex had a problem (HTTP " + response.status + "). Please try again.", "error");
      }
    });
  };

  /* 429: Send stays unavailable until Retry-After has passed; the hint says until when. */
  Conversation.prototype.waitFor = function (seconds) {
    var conversation = this;
    var until = new Date(Date.now() + seconds * 1000);
    app.showToast("Codex is busy, please retry in " + seconds + " seconds", "warning");
    this.hint.textContent = "Codex is busy: you can send again at " + until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) + ".";
    window.clearTimeout(this.waitTimer);
    this.waitTimer = window.setTimeout(function () {
      conversation.waitTimer = null;
      conversation.hint.textContent = HINT;
      conversation.updateButton();
    }, seconds * 1000);
    this.updateButton();
  };

  // The stream -------------------------------------------------------------------------------

  /* `data: {json}` events separated by blank lines, handled as they arrive. */
  Conversation.prototype.readStream = function (response) {
    var conversation = this;
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        buffer += decoder.decode(chunk.value || new Uint8Array(), { stream: !chunk.done });
        var blocks = buffer.split(/\r?\n\r?\n/);
        buffer = chunk.done ? "" : blocks.pop();
        blocks.forEach(function (block) {
          conversation.onBlock(block);
        });
        if (!chunk.done) return pump();
        conversation.dropUnfinished();
        return null;
      });
    }
    return pump();
  };

  Conversation.prototype.onBlock = function (block) {
    var data = block
      .split(/\r?\n/)
      .filter(function (line) {
        return line.indexOf("data:") === 0;
      })
      .map(function (line) {
        return line.slice(5).replace(/^ /, "");
      })
      .join("\n");
    if (!data) return;
    var event;
    try {
      event = JSON.parse(data);
    } catch (error) {
      return;
    }
    this.onEvent(event);
  };

  Conversation.prototype.onEvent = function (event) {
    if (event.type === "thread.created") {
      this.threadId = event.thread.id;
      this.root.dataset.threadId = this.threadId;
    } else if (event.type === "thread.item.added") {
      this.itemAdded(event.item);
    } else if (event.type === "thread.item.updated") {
      var reply = this.reply(event.item_id);
      if (reply && event.update && event.update.type === TEXT_DELTA) {
        reply.querySelector(".message-text").textContent += event.update.delta;
      }
    } else if (event.type === "thread.item.done") {
      this.itemDone(event.item);
    } else if (event.type === "error") {
      app.showToast(event.message || UNAVAILABLE, "error");
      this.dropUnfinished();
    }
  };

  /* The server stored the user's message: from now on it stays, whatever happens to the
     reply (sending it again would store it twice). The server announces it only as done. */
  Conversation.prototype.markStored = function (item) {
    if (this.sending && !this.sending.dataset.itemId) this.sending.dataset.itemId = item.id;
  };

  Conversation.prototype.itemAdded = function (item) {
    if (item.type === "user_message") {
      this.markStored(item);
    } else if (item.type === "assistant_message") {
      var reply = this.addMessage("assistant", textOf(item));
      reply.dataset.itemId = item.id;
      reply.dataset.streaming = "true";
    }
  };

  Conversation.prototype.itemDone = function (item) {
    if (item.type === "user_message") this.markStored(item);
    if (item.type !== "assistant_message") return;
    var reply = this.reply(item.id) || this.addMessage("assistant", "");
    reply.dataset.itemId = item.id;
    reply.querySelector(".message-text").textContent = textOf(item);
    delete reply.dataset.streaming;
  };

  /* A reply cut off by an error is not kept (the server stores no half-written item). */
  Conversation.prototype.dropUnfinished = function () {
    Array.prototype.forEach.call(this.list.querySelectorAll("[data-streaming]"), function (reply) {
      reply.remove();
    });
  };

  function textOf(item) {
    return (item.content || [])
      .map(function (part) {
        return part.text || "";
      })
      .join("");
  }

  function startConversations(root) {
    if (!root.querySelectorAll) return;
    var areas = root.matches && root.matches("[data-chatkit-area]") ? [root] : [];
    areas = areas.concat(Array.prototype.slice.call(root.querySelectorAll("[data-chatkit-area]")));
    areas.forEach(function (area) {
      var panel = area.querySelector("[data-conversation]");
      if (!panel || panel.codexwebConversation) return;
      panel.codexwebConversation = new Conversation(area, panel);
      panel.codexwebConversation.start();
    });
  }

  // After token_keeper.js (loaded before this file), which starts the area's keeper.
  if (window.htmx) {
    window.htmx.onLoad(startConversations);
  } else {
    document.addEventListener("DOMContentLoaded", function () {
      startConversations(document.body);
    });
  }
})();
