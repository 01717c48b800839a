/* Form helpers for every page (plain script: strict CSP, no inline code).
 *
 * - A button whose action a rate limit refused stays disabled until the wait is over, with
 *   the time left next to it: on a page that kept its form after a 429 (`data-retry-after`,
 *   rendered by the server) and after an htmx request answered 429 (its `Retry-After`).
 *   The refused form's confirmation ("A new link is on its way") goes: it would be untrue.
 * - Show password toggles: a real button with `aria-pressed`; hidden in the markup because
 *   without this script it could do nothing.
 */
(function () {
  "use strict";

  function pad(number) {
    return number < 10 ? "0" + number : String(number);
  }

  function clock(seconds) {
    var minutes = Math.floor(seconds / 60);
    var hours = Math.floor(minutes / 60);
    if (hours) return hours + ":" + pad(minutes % 60) + ":" + pad(seconds % 60);
    return minutes + ":" + pad(seconds % 60);
  }

  function coolDown(button, seconds) {
    if (!(seconds > 0)) return;
    window.clearInterval(button.codexwebCooldown);
    var until = Date.now() + seconds * 1000;
    var note = button.parentNode.querySelector(".cooldown-note");
    if (!note) {
      note = document.createElement("span");
      note.className = "cooldown-note";
      button.insertAdjacentElement("afterend", note);
    }
    function tick() {
      var left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0) {
        window.clearInterval(button.codexwebCooldown);
        button.disabled = false;
        delete button.dataset.coolingDown;
        note.remove();
        return;
      }
      button.disabled = true;
      button.dataset.coolingDown = "true";
      note.textContent = "Available again in " + clock(left);
    }
    tick();
    button.codexwebCooldown = window.setInterval(tick, 1000);
  }

  function submitButtons(form) {
    if (form.matches("button")) return [form];
    return Array.prototype.slice.call(
      form.querySelectorAll("button[type=submit], button:not([type])")
    );
  }

  function refused(form, message) {
    var container = form.closest("section") || form.parentNode;
    Array.prototype.forEach.call(container.querySelectorAll(".confirmation"), function (el) {
      el.remove();
    });
    var notice = container.querySelector(".limit-message");
    if (!notice) {
      notice = document.createElement("p");
      notice.className = "form-error limit-message";
      form.insertAdjacentElement("beforebegin", notice);
    }
    notice.textContent = message;
  }

  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    if (!xhr || xhr.status !== 429) return;
    var seconds = parseInt(xhr.getResponseHeader("Retry-After"), 10);
    var form = event.detail.elt.closest("form") || event.detail.elt;
    submitButtons(form).forEach(function (button) {
      coolDown(button, seconds);
    });
    if (xhr.responseText && form.closest("[data-limited-action]")) refused(form, xhr.responseText);
  });

  function showPassword(button) {
    var input = document.getElementById(button.getAttribute("aria-controls"));
    var shown = input.type === "password";
    input.type = shown ? "text" : "password";
    button.setAttribute("aria-pressed", String(shown));
  }

  function enhance(root) {
    Array.prototype.forEach.call(root.querySelectorAll("[data-retry-after]"), function (button) {
      coolDown(button, parseInt(button.dataset.retryAfter, 10));
    });
    Array.prototype.forEach.call(root.querySelectorAll("[data-password-toggle]"), function (button) {
      if (!button.hidden) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        showPassword(button);
      });
      // A password shown while typing goes back to hidden before it is sent, so the browser
      // never stores it as ordinary text.
      var form = button.closest("form");
      if (form) {
        form.addEventListener("submit", function () {
          if (button.getAttribute("aria-pressed") === "true") showPassword(button);
        });
      }
    });
  }

  enhance(document);
  document.addEventListener("htmx:load", function (event) {
    enhance(event.detail.elt);
  });
})();
