// The Savepoints page's script: plain JavaScript, no build step, nothing loaded from
// elsewhere.  It does three things:
//  - shows every <time> in local time (the UTC time stays in its tooltip);
//  - keeps the parts marked data-live="URL" up to date: it fetches URL again every
//    data-every milliseconds and puts in the HTML the server rendered (every value in it
//    escaped there), only when it changed;
//  - runs the buttons marked data-post="URL": asks data-confirm in a dialog, then POSTs
//    with the page's CSRF token and does data-after: "refresh" (the live parts now),
//    "open" (the execution the answer names), "home", or "savepoints";
//  - runs the button marked data-edit-post="URL" (Load with changes): the edit boxes
//    (input.edit) whose text was changed, each parsed as JSON, are POSTed as
//    {"set_locals": {data-key: value}}, then the execution's savepoints open;
//  - sends the form marked data-message-post="URL" (a message to an execution waiting
//    for one): {"topic": its topic, "value": its value parsed as JSON}, then refreshes.
// Every text it shows (an error the server answered with, too) goes in as text.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function pad(n, width) { return String(n).padStart(width || 2, "0"); }

  function localText(date) {
    const offset = -date.getTimezoneOffset();
    const sign = offset >= 0 ? "+" : "-";
    const zone = "UTC" + sign + pad(Math.floor(Math.abs(offset) / 60)) + ":" +
      pad(Math.abs(offset) % 60);
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      " " + pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" +
      pad(date.getSeconds()) + "." + pad(date.getMilliseconds(), 3) + " " + zone;
  }

  function localizeTimes(root) {
    for (const el of root.querySelectorAll("time[datetime]")) {
      const date = new Date(el.getAttribute("datetime"));
      if (!isNaN(date)) {
        el.textContent = localText(date);
      }
    }
  }

  function flash(text) {
    const el = document.getElementById("flash");
    el.textContent = text;
    el.hidden = !text;
  }

  // --- live parts ---
  const lastHtml = new WeakMap();

  async function refresh(el) {
    try {
      const response = await fetch(el.dataset.live, {credentials: "same-origin",
                                                       headers: {"Accept": "text/html"}});
      if (response.status === 404) {
        el.classList.add("gone");
        return;
      }
      if (!response.ok) {
        return;
      }
      const html = await response.text();
      if (lastHtml.get(el) !== html) {
        lastHtml.set(el, html);
        el.innerHTML = html;
        localizeTimes(el);
      }
      document.getElementById("live").classList.remove("stale");
    } catch (e) {
      document.getElementById("live").classList.add("stale");
    }
  }

  function refreshAll() {
    return Promise.all(Array.from(document.querySelectorAll("[data-live]"), refresh));
  }

  function keepLive() {
    for (const el of document.querySelectorAll("[data-live]")) {
      const every = parseInt(el.dataset.every || "2000", 10);
      setInterval(function () {
        if (!document.hidden) {
          refresh(el);
        }
      }, every);
    }
  }

  // --- buttons that change something ---
  function confirmed(text) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    return new Promise(function (resolve) {
      dialog.addEventListener("close", function () {
        resolve(dialog.returnValue === "ok");
      }, {once: true});
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  async function post(button) {
    if (button.dataset.confirm && !(await confirmed(button.dataset.confirm))) {
      return;
    }
    await send(button, button.dataset.post, null, button.dataset.after);
  }

  // The edit boxes changed, as {data-key: value}; null (and said) if one is not JSON.
  function edits() {
    const changes = {};
    for (const input of document.querySelectorAll("input.edit[data-key]")) {
      if (input.value === input.dataset.initial) {
        continue;
      }
      try {
        changes[input.dataset.key] = JSON.parse(input.value);
      } catch (e) {
        flash("the new value of " + input.dataset.key + " is not JSON: " + e.message);
        input.focus();
        return null;
      }
    }
    return changes;
  }

  async function postEdits(button) {
    flash("");
    const changes = edits();
    if (changes === null) {
      return;
    }
    const names = Object.keys(changes);
    if (!names.length) {
      flash("change a value in the boxes first (as JSON), then Load with changes");
      return;
    }
    if (!(await confirmed(button.dataset.confirm + " Changed: " + names.join(", ")))) {
      return;
    }
    await send(button, button.dataset.editPost, {set_locals: changes}, "savepoints");
  }

  async function postMessage(form) {
    flash("");
    const topic = form.elements.topic.value;
    let value;
    try {
      value = JSON.parse(form.elements.value.value);
    } catch (e) {
      flash("the value is not JSON: " + e.message);
      form.elements.value.focus();
      return;
    }
    await send(form.querySelector("button[type=submit]"), form.dataset.messagePost,
               {topic: topic, value: value}, "refresh");
  }

  async function send(button, url, body, after) {
    button.disabled = true;
    flash("");
    try {
      const headers = {"X-CSRF-Token": csrf, "Accept": "application/json"};
      if (body !== null) {
        headers["Content-Type"] = "application/json";
      }
      const response = await fetch(url, {
        method: "POST", credentials: "same-origin", headers: headers,
        body: body === null ? undefined : JSON.stringify(body)});
      const answer = await response.json().catch(function () { return {}; });
      if (!response.ok) {
        flash(answer.error || ("the server answered " + response.status));
        return;
      }
      if (after === "open") {
        window.location.assign("/executions/" + encodeURIComponent(answer.id));
      } else if (after === "home") {
        window.location.assign("/");
      } else if (after === "savepoints") {
        window.location.assign("/executions/" + encodeURIComponent(answer.id) + "/savepoints");
      } else {
        flash("");
        await refreshAll();
      }
    } catch (e) {
      flash("the server could not be reached: " + e);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-post]");
    if (button) {
      event.preventDefault();
      post(button);
    }
    const editing = event.target.closest("button[data-edit-post]");
    if (editing) {
      event.preventDefault();
      postEdits(editing);
    }
  });

  document.addEventListener("submit", function (event) {
    const form = event.target.closest("form[data-message-post]");
    if (form) {
      event.preventDefault();
      postMessage(form);
    }
  });

  document.addEventListener("input", function (event) {
    if (event.target.matches("input.edit[data-key]")) {
      event.target.classList.toggle("edited",
                                    event.target.value !== event.target.dataset.initial);
    }
  });

  localizeTimes(document);
  keepLive();
})();
