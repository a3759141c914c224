// Tidings admin: the few things that need a script. Every page works without it.
// Text from the server is always set with textContent, never parsed as HTML.
"use strict";

(function () {
  function csrfToken() {
    var field = document.querySelector('input[name="csrf"]');
    return field ? field.value : "";
  }

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  // -- the project switcher opens the chosen project at once ------------------------------
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  document.querySelectorAll("[data-hide-with-js]").forEach(function (node) { node.hidden = true; });

  // -- buttons that ask first ---------------------------------------------------------------
  document.querySelectorAll("[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // -- copy a new key -------------------------------------------------------------------------
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) return;
      navigator.clipboard.writeText(source.textContent).then(function () {
        button.textContent = "Copied";
      });
    });
  });

  // -- the live stream: polls for newer events, bounded -----------------------------------------
  var stream = document.getElementById("stream");
  if (stream) {
    var MAX_ROWS = 200;          // rows kept on the page
    var INTERVAL = 3000;         // ms between polls while events come in
    var MAX_RUN = 10 * 60 * 1000; // then it pauses until asked to resume
    var body = stream.tBodies[0];
    var status = document.getElementById("stream-status");
    var toggle = document.getElementById("stream-toggle");
    var dot = document.querySelector(".live-dot");
    var after = stream.getAttribute("data-after") || "";
    var timer = null, running = false, startedAt = 0, failures = 0, wait = INTERVAL;

    var setStatus = function (text) { status.textContent = text; };

    var addRow = function (event) {
      var row = document.createElement("tr");
      row.className = "fresh";
      row.appendChild(el("td", event.name, "event-name"));
      var who = el("td");
      var link = el("a", event.who);
      link.href = event.profile_url;
      who.appendChild(link);
      row.appendChild(who);
      row.appendChild(el("td", event.time));
      var props = el("td");
      props.appendChild(el("code", JSON.stringify(event.data), "props"));
      row.appendChild(props);
      return row;
    };

    var schedule = function () {
      if (!running) return;
      if (Date.now() - startedAt > MAX_RUN) {
        stop("Paused after 10 minutes.");
        return;
      }
      timer = window.setTimeout(poll, wait);
    };

    var poll = function () {
      var url = stream.getAttribute("data-feed") + (after ? "?after=" + encodeURIComponent(after) : "");
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (response.status === 401) throw new Error("signed out");
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (answer) {
          failures = 0;
          wait = INTERVAL;
          var events = answer.events || [];
          if (events.length) {
            after = events[0].cursor;
            var empty = document.getElementById("stream-empty");
            if (empty) empty.hidden = true;
            for (var i = events.length - 1; i >= 0; i--) {
              body.insertBefore(addRow(events[i]), body.firstChild);
            }
            while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
          }
          setStatus("Live: up to date (checked every few seconds).");
          schedule();
        })
        .catch(function (error) {
          failures += 1;
          if (String(error.message) === "signed out" || failures >= 5) {
            stop(String(error.message) === "signed out" ? "Signed out: reload to sign in." : "Stopped: the server does not answer.");
            return;
          }
          wait = Math.min(wait * 2, 60000);
          setStatus("Retrying…");
          schedule();
        });
    };

    var start = function () {
      running = true;
      startedAt = Date.now();
      toggle.textContent = "Pause";
      if (dot) dot.classList.add("on");
      setStatus("Live.");
      poll();
    };

    var stop = function (why) {
      running = false;
      if (timer) window.clearTimeout(timer);
      timer = null;
      toggle.textContent = "Resume";
      if (dot) dot.classList.remove("on");
      setStatus(why || "Paused.");
    };

    toggle.hidden = false;
    toggle.addEventListener("click", function () { if (running) stop(); else start(); });
    document.addEventListener("visibilitychange", function () {
      if (document.hidden && running) stop("Paused while the tab is hidden.");
    });
    start();
  }

  // -- the rule editor: checks and counts as one types --------------------------------------------
  var rule = document.querySelector("textarea[data-preview]");
  if (rule) {
    var check = document.getElementById("rule-check");
    var field = rule.closest("[data-rule-field]");
    var pending = null, sequence = 0;

    var fit = function () {
      rule.rows = Math.max(8, Math.min(40, rule.value.split("\n").length + 1));
    };

    var show = function (answer) {
      if (!pending) check.setAttribute("aria-busy", "false"); // else newer text is waiting
      check.textContent = "";
      if (answer.error) { check.appendChild(el("p", answer.message, "error")); return; }
      if (answer.errors && answer.errors.length) {
        field.classList.add("has-error");
        var list = el("ul", null, "errors");
        answer.errors.forEach(function (problem) {
          var item = el("li");
          item.appendChild(el("code", problem.param));
          item.appendChild(document.createTextNode(": " + problem.message));
          list.appendChild(item);
        });
        check.appendChild(list);
        return;
      }
      field.classList.remove("has-error");
      var count = answer.count;
      var line = el("p", null, "ok");
      line.appendChild(el("span", count.matched.toLocaleString(), "count"));
      line.appendChild(document.createTextNode(
        count.exact
          ? " of " + count.scanned.toLocaleString() + " users match."
          : " of the newest " + count.scanned.toLocaleString() + " users match (a sample)."
      ));
      line.setAttribute("data-count", String(count.matched));
      check.appendChild(line);
    };

    var run = function () {
      pending = null;
      var mine = ++sequence;
      fetch(rule.getAttribute("data-preview"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": rule.getAttribute("data-csrf") },
        body: JSON.stringify({ rule: rule.value })
      })
        .then(function (response) { return response.json(); })
        .then(function (answer) { if (mine === sequence) show(answer); })
        .catch(function () {
          if (mine !== sequence) return;
          check.setAttribute("aria-busy", "false");
          check.textContent = "Could not check the rule just now.";
        });
    };

    rule.addEventListener("input", function () {
      check.setAttribute("aria-busy", "true");
      fit();
      if (pending) window.clearTimeout(pending);
      pending = window.setTimeout(run, 400);
    });
    var types = document.querySelectorAll("input[data-type]");
    var follow = function () {
      var chosen = document.querySelector("input[data-type]:checked");
      field.hidden = chosen ? chosen.value !== "dynamic" : false;
    };
    types.forEach(function (input) { input.addEventListener("change", follow); });
    follow();
    fit();
    if (!field.classList.contains("has-error")) {
      check.setAttribute("aria-busy", "true");
      run();
    }
  }

  // -- CSV import of a file, in chunks, with progress ----------------------------------------------
  var importer = document.querySelector("form[data-csv-import]");
  if (importer) {
    var file = importer.querySelector("[data-csv-file]");
    var box = importer.querySelector("[data-csv-progress]");
    var bar = box.querySelector("progress");
    var said = box.querySelector("span");
    var CHUNK = 2000; // rows a request; each request is one transaction

    importer.addEventListener("submit", function (event) {
      if (!file.files || !file.files.length) return; // a pasted CSV goes as a plain form
      event.preventDefault();
      box.hidden = false;
      file.files[0].text().then(function (text) {
        var lines = text.split(/\r?\n/);
        var header = lines.shift();
        var rows = lines.filter(function (line) { return line.trim() !== ""; });
        var total = { added: 0, already_member: 0, not_found: 0, invalid: 0, rows: [] };
        var send = function (start) {
          if (start >= rows.length) {
            bar.value = 100;
            said.textContent = "Done: " + total.added + " added, " + total.already_member +
              " already members, " + total.not_found + " not found, " + total.invalid + " invalid." +
              (total.rows.length ? " Unknown users on rows " + total.rows.slice(0, 20).join(", ") + "." : "");
            return;
          }
          var chunk = [header].concat(rows.slice(start, start + CHUNK)).join("\n") + "\n";
          fetch(importer.action + "?offset=" + start, {
            method: "POST",
            credentials: "same-origin",
            headers: { "Content-Type": "text/csv", "X-CSRF-Token": csrfToken() },
            body: chunk
          })
            .then(function (response) { return response.json(); })
            .then(function (answer) {
              if (answer.error) { said.textContent = "Stopped: " + answer.error; return; }
              total.added += answer.added;
              total.already_member += answer.already_member;
              total.not_found += answer.not_found;
              total.invalid += answer.invalid;
              total.rows = total.rows.concat(answer.not_found_rows || []);
              var done = Math.min(start + CHUNK, rows.length);
              bar.value = Math.round((100 * done) / rows.length);
              said.textContent = done.toLocaleString() + " of " + rows.length.toLocaleString() + " rows";
              send(start + CHUNK);
            })
            .catch(function () { said.textContent = "Stopped: the server does not answer."; });
        };
        send(0);
      });
    });
  }
})();
