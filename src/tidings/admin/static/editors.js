// Tidings admin: the journey step editor's live check and the template editor's live
// preview. Every page works without it (the forms check on save; Preview is a button).
// Text from the server is set with textContent only, never parsed as HTML.
"use strict";

(function () {
  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      if (timer) window.clearTimeout(timer);
      timer = window.setTimeout(function () { timer = null; fn(); }, ms);
    };
  }

  // -- the journey step editor: problems at their step, as one types -------------------------
  var steps = document.querySelector("textarea[data-steps-check]");
  if (steps) {
    var box = document.getElementById("steps-check");
    var field = steps.closest("[data-steps-field]");
    var sequence = 0;

    var problems = function (found, className) {
      var list = el("ul", null, "step-errors" + (className ? " " + className : ""));
      found.general.forEach(function (e) {
        var item = el("li");
        item.appendChild(el("code", e.param));
        item.appendChild(document.createTextNode(": " + e.message));
        list.appendChild(item);
      });
      found.steps.forEach(function (s) {
        var item = el("li");
        item.setAttribute("data-step", s.uuid);
        item.appendChild(document.createTextNode("Step "));
        item.appendChild(el("code", s.uuid));
        item.appendChild(document.createTextNode((s.line ? " (line " + s.line + ")" : "") + ":"));
        var inner = el("ul");
        s.errors.forEach(function (e) {
          var line = el("li");
          line.appendChild(el("code", e.param.slice(s.uuid.length) || "."));
          line.appendChild(document.createTextNode(" " + e.message));
          inner.appendChild(line);
        });
        item.appendChild(inner);
        list.appendChild(item);
      });
      return list;
    };

    var show = function (answer) {
      box.setAttribute("aria-busy", "false");
      box.textContent = "";
      var bad = answer.errors && (answer.errors.general.length || answer.errors.steps.length);
      field.classList.toggle("has-error", Boolean(bad));
      if (answer.message) { box.appendChild(el("p", answer.message, "error")); return; }
      if (bad) {
        box.appendChild(el("p", "Cannot be saved:", "error"));
        box.appendChild(problems(answer.errors, "steps-errors"));
        return;
      }
      var publish = answer.publish;
      if (publish.general.length || publish.steps.length) {
        box.appendChild(el("p", answer.steps + " steps; can be saved as a draft. Before it can go live:"));
        box.appendChild(problems(publish, "publish"));
      } else {
        box.appendChild(el("p", answer.steps + " steps; can be saved and go live.", "ok"));
      }
    };

    var run = function () {
      var mine = ++sequence;
      fetch(steps.getAttribute("data-steps-check"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": steps.getAttribute("data-csrf") },
        body: JSON.stringify({ steps: steps.value })
      })
        .then(function (response) { return response.json(); })
        .then(function (answer) { if (mine === sequence) show(answer); })
        .catch(function () {
          if (mine !== sequence) return;
          box.setAttribute("aria-busy", "false");
          box.textContent = "Could not check the steps just now.";
        });
    };
    var later = debounce(run, 400);
    steps.addEventListener("input", function () { box.setAttribute("aria-busy", "true"); later(); });
  }

  // -- the template editor: the preview frame and the errors follow the form -------------------
  var form = document.querySelector("form[data-template-check]");
  if (form) {
    var button = document.getElementById("preview-button");
    var checking = 0;

    var check = function () {
      var mine = ++checking;
      var body = new URLSearchParams(new FormData(form));
      fetch(form.getAttribute("data-template-check"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: body
      })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          if (mine !== checking) return;
          var errors = answer.errors || {};
          if (answer.message) errors = { form: answer.message };
          form.querySelectorAll("[data-error-for]").forEach(function (slot) {
            var text = errors[slot.getAttribute("data-error-for")] || "";
            slot.textContent = text;
            var wrap = slot.closest(".field");
            if (wrap) wrap.classList.toggle("has-error", text !== "");
          });
          var summary = answer.summary || {};
          document.querySelectorAll("[data-summary]").forEach(function (dd) {
            dd.textContent = summary[dd.getAttribute("data-summary")] || "";
          });
          form.setAttribute("data-checked", String(mine));
        })
        .catch(function () {});
    };

    var refresh = function () {
      check();
      if (form.requestSubmit) form.requestSubmit(button);  // into the sandboxed frame
    };
    form.addEventListener("input", debounce(refresh, 500));
    refresh();
  }
})();
