// Tidings admin: the visual rule builder of a dynamic list.
//
// Rows of path / operator / value in groups joined by and, or or none, over the paths of
// the project's data schema. Every change writes the rule, as the API takes it, into the
// JSON text area (the form's real field) and lets the page's live count run on it. The
// JSON view stays for what the builder does not draw (event conditions, for one); without
// a script the form is the JSON editor alone. Text is always set with textContent.
"use strict";

(function () {
  var host = document.querySelector("[data-rule-builder]");
  var text = document.getElementById("f-rule");
  var views = document.querySelector("[data-rule-views]");
  if (!host || !text || !views) return;

  var config = JSON.parse(host.getAttribute("data-builder"));
  var OPERATORS = config.operators; // {type: [operator, ...]}
  var TYPES = Object.keys(OPERATORS);
  var PATHS = {};
  config.paths.forEach(function (p) { PATHS[p.path] = p.type; });
  var COMBINATORS = [["and", "All of"], ["or", "Any of"], ["none", "None of"], ["xor", "Exactly one of"]];
  var VALUELESS = ["is set", "is not set", "empty"];
  var NODE_KEYS = ["type", "group", "path", "operator", "value", "children"];
  var MAX_DEPTH = 8;
  var root = null;
  var note = document.createElement("p");
  note.className = "hint rule-builder-note";
  note.setAttribute("role", "status");

  function el(tag, attrs, textContent) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (textContent !== undefined) node.textContent = textContent;
    return node;
  }

  function options(select, values, chosen) {
    values.forEach(function (v) {
      var pair = Array.isArray(v) ? v : [v, v];
      var option = el("option", { value: pair[0] }, pair[1]);
      if (pair[0] === chosen) option.selected = true;
      select.appendChild(option);
    });
  }

  // -- rule JSON <-> builder model ------------------------------------------------------------

  function onlyKnownKeys(raw) {
    return Object.keys(raw).every(function (k) { return NODE_KEYS.indexOf(k) >= 0; });
  }

  // The model of a rule, or null when the builder cannot draw it faithfully.
  function fromRule(raw, depth) {
    if (!raw || typeof raw !== "object" || Array.isArray(raw) || !onlyKnownKeys(raw)) return null;
    if (raw.type === "wrapper") {
      if (raw.group !== "parent" && raw.group !== "user") return null;
      if (raw.path !== undefined || raw.value !== undefined || depth > MAX_DEPTH) return null;
      if (!COMBINATORS.some(function (c) { return c[0] === raw.operator; })) return null;
      var children = [];
      var list = raw.children || [];
      if (!Array.isArray(list)) return null;
      for (var i = 0; i < list.length; i++) {
        var child = fromRule(list[i], depth + 1);
        if (!child) return null;
        children.push(child);
      }
      return { kind: "group", operator: raw.operator, children: children };
    }
    if (TYPES.indexOf(raw.type) < 0 || raw.group !== "user" || typeof raw.path !== "string") return null;
    if (OPERATORS[raw.type].indexOf(raw.operator) < 0 || raw.children !== undefined) return null;
    var value = raw.value;
    var shown;
    if (value === undefined || value === null || VALUELESS.indexOf(raw.operator) >= 0) shown = "";
    else if (Array.isArray(value)) {
      if (!value.every(function (v) { return typeof v === "string"; })) return null;
      if (value.some(function (v) { return v.indexOf(",") >= 0; })) return null;
      shown = value.join(", ");
    } else if (raw.type === "array" && typeof value !== "string") return null;
    else if (typeof value === "object") return null;
    else shown = String(value);
    return { kind: "cond", type: raw.type, path: raw.path, operator: raw.operator, value: shown };
  }

  function toRule(node) {
    if (node.kind === "group") {
      return { type: "wrapper", group: "parent", operator: node.operator, children: node.children.map(toRule) };
    }
    var out = { type: node.type, group: "user", path: node.path.trim(), operator: node.operator };
    if (VALUELESS.indexOf(node.operator) >= 0) return out;
    var raw = node.value;
    if (node.type === "number") {
      var n = Number(raw);
      out.value = raw.trim() !== "" && isFinite(n) ? n : raw; // the check says what is wrong
    } else if (node.type === "boolean") {
      out.value = raw === "true" ? true : raw === "false" ? false : raw;
    } else if (node.type === "array") {
      out.value = raw.split(",").map(function (v) { return v.trim(); }).filter(function (v) { return v !== ""; });
    } else {
      out.value = raw;
    }
    return out;
  }

  function newCondition() {
    var first = config.paths.length ? config.paths[0] : { path: "email", type: "string" };
    return { kind: "cond", path: first.path, type: first.type, operator: OPERATORS[first.type][0], value: "" };
  }

  // -- drawing -----------------------------------------------------------------------------------

  function changed() {
    text.value = JSON.stringify(toRule(root), null, 2);
    text.dispatchEvent(new Event("input")); // the page's check and live count follow
  }

  function valueControl(node, label) {
    var control;
    if (node.type === "boolean") {
      control = el("select", { "aria-label": label, class: "rule-value" });
      options(control, [["true", "true"], ["false", "false"]], node.value || "true");
      node.value = control.value;
    } else {
      control = el("input", { type: "text", "aria-label": label, class: "rule-value" });
      control.value = node.value;
      var hints = {
        date: "2024-05-01 or 30 days ago",
        array: "values, separated by commas",
        number: "a number"
      };
      if (hints[node.type]) control.setAttribute("placeholder", hints[node.type]);
      if (node.type === "number") control.setAttribute("inputmode", "decimal");
    }
    control.hidden = VALUELESS.indexOf(node.operator) >= 0;
    control.addEventListener(control.tagName === "SELECT" ? "change" : "input", function () {
      node.value = control.value;
      changed();
    });
    return control;
  }

  function conditionRow(node, parent, number) {
    var row = el("li", { class: "rule-row" });
    var name = "condition " + number;
    var path = el("input", { type: "text", list: "rule-paths", "aria-label": "Path of " + name, class: "rule-path", spellcheck: "false" });
    path.value = node.path;
    var type = el("select", { "aria-label": "Type of " + name, class: "rule-type" });
    options(type, TYPES, node.type);
    var operator = el("select", { "aria-label": "Operator of " + name, class: "rule-operator" });
    options(operator, OPERATORS[node.type], node.operator);
    var value = valueControl(node, "Value of " + name);
    var remove = el("button", { type: "button", class: "button link small", "aria-label": "Remove " + name }, "Remove");

    var retype = function (kind) {
      node.type = kind;
      type.value = kind;
      operator.textContent = "";
      if (OPERATORS[kind].indexOf(node.operator) < 0) node.operator = OPERATORS[kind][0];
      options(operator, OPERATORS[kind], node.operator);
      if (kind === "boolean" && node.value !== "true" && node.value !== "false") node.value = "true";
      var fresh = valueControl(node, "Value of " + name);
      row.replaceChild(fresh, value);
      value = fresh;
    };
    path.addEventListener("input", function () {
      node.path = path.value;
      var known = PATHS[path.value.trim()];
      if (known && known !== node.type) retype(known);
      changed();
    });
    type.addEventListener("change", function () { retype(type.value); changed(); });
    operator.addEventListener("change", function () {
      node.operator = operator.value;
      value.hidden = VALUELESS.indexOf(node.operator) >= 0;
      changed();
    });
    remove.addEventListener("click", function () {
      parent.children.splice(parent.children.indexOf(node), 1);
      draw(name + " removed.");
    });
    [path, type, operator, value, remove].forEach(function (c) { row.appendChild(c); });
    return row;
  }

  function groupBox(node, parent, depth, counter) {
    var box = el("fieldset", { class: "rule-group" + (parent ? " nested" : "") });
    var head = el("legend", { class: "rule-group-head" });
    var combinator = el("select", { "aria-label": parent ? "How the conditions of this group combine" : "How the conditions combine", class: "rule-combinator" });
    options(combinator, COMBINATORS, node.operator);
    combinator.addEventListener("change", function () { node.operator = combinator.value; changed(); });
    head.appendChild(combinator);
    head.appendChild(el("span", { class: "muted" }, node.children.length ? " these:" : " (no conditions yet: add one)"));
    box.appendChild(head);
    var items = el("ul", { class: "rule-items" });
    node.children.forEach(function (child) {
      if (child.kind === "group") {
        var li = el("li", { class: "rule-nested" });
        li.appendChild(groupBox(child, node, depth + 1, counter));
        items.appendChild(li);
      } else {
        counter.n += 1;
        items.appendChild(conditionRow(child, node, counter.n));
      }
    });
    box.appendChild(items);
    var actions = el("div", { class: "rule-actions" });
    var addCondition = el("button", { type: "button", class: "button secondary small", "data-add": "condition" }, "Add condition");
    addCondition.addEventListener("click", function () {
      node.children.push(newCondition());
      draw("Condition added.", true);
    });
    actions.appendChild(addCondition);
    if (depth < MAX_DEPTH) {
      var addGroup = el("button", { type: "button", class: "button secondary small", "data-add": "group" }, "Add group");
      addGroup.addEventListener("click", function () {
        node.children.push({ kind: "group", operator: node.operator === "and" ? "or" : "and", children: [newCondition()] });
        draw("Group added.", true);
      });
      actions.appendChild(addGroup);
    }
    if (parent) {
      var remove = el("button", { type: "button", class: "button link small" }, "Remove group");
      remove.addEventListener("click", function () {
        parent.children.splice(parent.children.indexOf(node), 1);
        draw("Group removed.");
      });
      actions.appendChild(remove);
    }
    box.appendChild(actions);
    return box;
  }

  function draw(said, focusNew) {
    host.textContent = "";
    var list = el("datalist", { id: "rule-paths" });
    config.paths.forEach(function (p) { list.appendChild(el("option", { value: p.path }, p.type)); });
    host.appendChild(list);
    host.appendChild(groupBox(root, null, 1, { n: 0 }));
    host.appendChild(note);
    note.textContent = said || "";
    if (focusNew) {
      var paths = host.querySelectorAll(".rule-path");
      if (paths.length) paths[paths.length - 1].focus();
    } else if (said) {
      // A row or group was removed with its button: keep the keyboard in the builder.
      host.querySelector("[data-add=condition]").focus();
    }
    changed();
  }

  // -- the two views -------------------------------------------------------------------------------

  var jsonParts = document.querySelectorAll("[data-rule-json]");
  var buttons = views.querySelectorAll("[data-rule-view]");

  function show(view) {
    var builder = view === "builder";
    host.hidden = !builder;
    jsonParts.forEach(function (node) { node.hidden = builder; });
    buttons.forEach(function (b) { b.setAttribute("aria-pressed", String(b.getAttribute("data-rule-view") === view)); });
  }

  function openBuilder() {
    var parsed = null;
    try {
      var raw = text.value.trim() ? JSON.parse(text.value) : { type: "wrapper", group: "parent", operator: "and", children: [] };
      parsed = fromRule(raw, 1);
      if (parsed && parsed.kind !== "group") parsed = { kind: "group", operator: "and", children: [parsed] };
    } catch (e) {
      parsed = null;
    }
    if (!parsed) {
      show("json");
      note.textContent = "";
      var why = views.querySelector(".rule-views-note") || el("p", { class: "hint rule-views-note", role: "status" });
      why.textContent = "This rule has parts the builder does not draw (event conditions, for one) or is not valid JSON: edit it as JSON.";
      views.appendChild(why);
      return false;
    }
    var old = views.querySelector(".rule-views-note");
    if (old) old.remove();
    root = parsed;
    show("builder");
    draw();
    return true;
  }

  buttons.forEach(function (button) {
    button.addEventListener("click", function () {
      if (button.getAttribute("data-rule-view") === "builder") openBuilder();
      else show("json");
    });
  });
  views.hidden = false;
  // A rule the server refused opens where its errors are shown: the JSON view.
  var field = text.closest("[data-rule-field]");
  if (field && field.classList.contains("has-error")) show("json");
  else openBuilder();
})();
