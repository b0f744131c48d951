"use strict";
// Shared by /portal and /admin. The DOM is built with textContent and
// attributes only: nothing anyone typed is ever parsed as HTML.
const UI = {
  store: "",
  el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "text") e.textContent = v;
      else if (k === "href") e.setAttribute(k, UI.safeUrl(v));
      else if (k === "width") e.style.width = v; // CSSOM: allowed by the CSP, style attributes are not
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of kids.flat()) if (c != null) e.append(c instanceof Node ? c : String(c));
    return e;
  },
  safeUrl(u) { return /^https?:\/\//i.test(u) || /^\/[^/]/.test(u) ? u : "#"; },
  token() { return sessionStorage.getItem(UI.store) || ""; },
  async api(method, path, body) {
    const headers = { Authorization: "Bearer " + UI.token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let r;
    try {
      r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      return { ok: false, status: 0, data: { error: { reason: "network error" } } };
    }
    let data = null;
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    if (r.status === 401) UI.signOut("Signed out: the key was not accepted.");
    return { ok: r.ok, status: r.status, data };
  },
  why(res) {
    const d = res.data || {};
    if (d.error) return (d.error.field ? d.error.field + ": " : "") + (d.error.reason || "refused");
    if (d.status) return d.status.replace(/_/g, " ");
    return "HTTP " + res.status;
  },
  say(text, bad) {
    const s = document.getElementById("status");
    s.textContent = text;
    s.className = bad ? "status bad" : "status";
  },
  badge(s) { return UI.el("span", { class: "badge b-" + s, text: s }); },
  money(a, c) { return a == null ? "" : a + " " + (c || ""); },
  day(t) { return t ? String(t).slice(0, 10) : ""; },
  table(cols, rows, empty) {
    if (!rows.length) return UI.el("p", { class: "empty", text: empty || "Nothing yet." });
    return UI.el("div", { class: "scroll" }, UI.el("table", {},
      UI.el("thead", {}, UI.el("tr", {}, cols.map(([h]) => UI.el("th", { scope: "col", text: h })))),
      UI.el("tbody", {}, rows.map((r) => UI.el("tr", {}, cols.map(([, f]) => UI.el("td", {}, f(r) ?? "")))))));
  },
  // fields: [name, label, {type, required, value, placeholder, options, size}]
  form(id, fields, submit, onsubmit) {
    const f = UI.el("form", { id, class: "row" },
      fields.map(([name, label, o = {}]) => UI.el("label", {}, UI.el("span", { text: label }),
        o.options
          ? UI.el("select", { name }, o.options.map((v) => UI.el("option", { value: v, text: v || "(any)" })))
          : UI.el("input", { name, type: o.type || "text", required: o.required, value: o.value,
              placeholder: o.placeholder, size: o.size, step: o.step, autocomplete: "off" }))),
      UI.el("button", { type: "submit", text: submit }));
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = {};
      for (const [k, v] of new FormData(f)) if (v !== "") data[k] = String(v).trim();
      const btn = f.querySelector("button");
      btn.disabled = true;
      try { await onsubmit(data, f); } finally { btn.disabled = false; }
    });
    return f;
  },
  section(id, title, ...kids) {
    const s = document.getElementById(id);
    s.replaceChildren(UI.el("h2", { text: title }), ...kids.flat().filter((k) => k != null));
    return s;
  },
  signOut(why) {
    sessionStorage.removeItem(UI.store);
    document.body.classList.remove("in");
    if (why) UI.say(why, true);
  },
  start(store, load) {
    UI.store = store;
    const f = document.getElementById("signin");
    f.addEventListener("submit", (e) => {
      e.preventDefault();
      const k = f.elements.key.value.trim();
      if (!k) return;
      sessionStorage.setItem(UI.store, k);
      f.reset();
      go();
    });
    document.getElementById("signout").addEventListener("click", () => UI.signOut("Signed out."));
    async function go() {
      document.body.classList.add("in");
      UI.say("Loading…");
      if (await load()) UI.say("");
    }
    if (UI.token()) go();
  },
};
