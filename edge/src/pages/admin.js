"use strict";
(() => {
  const { el, table, form, section, badge, money, day, say, why } = UI;
  const api = UI.api;
  const enc = encodeURIComponent;

  async function load() {
    const r = await api("GET", "/api/partners?limit=1");
    if (!r.ok) return false;
    await Promise.all([applications(), deals(), requests(), claims(), partners({}), budgets()]);
    return true;
  }

  // Approve / reject with a reason; `done` reloads the queue.
  function decide(id, path, body, done) {
    const reason = el("input", { "aria-label": "Reason for " + id, placeholder: "reason", name: "reason" });
    const act = (approve) => async () => {
      const b = body(approve, reason.value.trim());
      const r = await api("POST", path, b);
      if (r.ok) say((approve ? "Approved " : "Rejected ") + id + ".");
      else say("Not done (" + id + "): " + why(r), true);
      await done();
    };
    return el("div", { class: "acts" }, reason,
      el("button", { type: "button", "data-id": id, class: "approve", onclick: act(true), text: "Approve" }),
      el("button", { type: "button", "data-id": id, class: "no reject", onclick: act(false), text: "Reject" }));
  }
  const dec = (approve, reason) => ({ decision: approve ? "approve" : "reject", reason: reason || undefined });

  async function applications() {
    const r = await api("GET", "/api/partners?status=applied");
    section("applications", "Applications",
      table([["Partner", (p) => [p.name || "", el("br"), el("code", { text: p.id })]], ["Company", (p) => p.company], ["Email", (p) => p.email],
        ["Website", (p) => (p.website ? el("a", { href: p.website, rel: "noopener noreferrer", target: "_blank", text: p.website }) : "")],
        ["Program", (p) => p.program], ["Applied", (p) => day(p.created_at)],
        ["", (p) => decide(p.id, "/api/partners/" + enc(p.id) + "/status", (a, reason) => ({ status: a ? "approved" : "rejected", reason: reason || (a ? undefined : "not a fit") }), applications)]],
        r.ok ? r.data.partners : [], "No applications waiting."));
  }

  async function deals() {
    const r = await api("GET", "/api/deals?status=pending");
    section("deals", "Deal registrations to review",
      table([["Partner", (d) => d.partner], ["Customer", (d) => d.customer], ["Company", (d) => d.company], ["Domain", (d) => d.domain],
        ["Value", (d) => money(d.value, d.currency)], ["Registered", (d) => day(d.created_at)], ["Expires", (d) => day(d.expires_at)],
        ["", (d) => decide(d.id, "/api/deals/" + enc(d.id) + "/decision", dec, deals)]], r.ok ? r.data.deals : [], "No deals waiting."));
  }

  async function requests() {
    const r = await api("GET", "/api/mdf?status=requested");
    section("requests", "MDF requests",
      table([["Partner", (q) => q.partner], ["Activity", (q) => q.activity], ["Amount", (q) => money(q.amount, q.currency)], ["Quarter", (q) => q.quarter],
        ["Requested", (q) => day(q.created_at)], ["", (q) => decide(q.id, "/api/mdf/" + enc(q.id) + "/decision", dec, async () => { await requests(); await budgets(); })]],
        r.ok ? r.data.requests : [], "No MDF requests waiting."));
  }

  async function claims() {
    const r = await api("GET", "/api/mdf?claim_status=claimed");
    section("claims", "MDF claims",
      table([["Partner", (q) => q.partner], ["Activity", (q) => q.activity], ["Approved", (q) => money(q.amount, q.currency)], ["Claimed", (q) => money(q.claim.amount, q.currency)],
        ["Proof", (q) => el("a", { href: q.claim.proof_url, rel: "noopener noreferrer", target: "_blank", text: "proof" })],
        ["", (q) => decide(q.id, "/api/mdf/" + enc(q.id) + "/claim-decision", dec, claims)]], r.ok ? r.data.requests : [], "No claims waiting."));
  }

  async function partners(filter) {
    const q = new URLSearchParams(filter);
    const r = await api("GET", "/api/partners?" + q);
    section("partners", "Partners",
      form("partner-search", [["q", "Search", { value: filter.q, placeholder: "name, email, company" }], ["status", "Status", { options: ["", "applied", "approved", "suspended", "rejected"] }],
        ["tag", "Tag", { value: filter.tag, size: 10 }], ["program", "Program", { value: filter.program, size: 10 }], ["tier", "Tier", { value: filter.tier, size: 8 }]],
        "Search", (d) => partners(d)),
      el("button", { type: "button", class: "sec", text: "Download CSV", onclick: async () => {
        const res = await fetch("/api/partners.csv?" + q, { headers: { Authorization: "Bearer " + UI.token() } });
        if (!res.ok) return say("CSV export failed: HTTP " + res.status, true);
        const a = el("a", { download: "partners.csv" });
        a.href = URL.createObjectURL(await res.blob());
        a.click();
        URL.revokeObjectURL(a.href);
      } }),
      table([["Partner", (p) => [p.name || "", el("br"), el("code", { text: p.id })]], ["Company", (p) => p.company], ["Program", (p) => p.program], ["Tier", (p) => p.tier],
        ["Status", (p) => [badge(p.status), p.status_reason ? el("div", { class: "mut", text: p.status_reason.replace(/_/g, " ") }) : null]],
        ["Manager", (p) => p.manager], ["Tags", (p) => (p.tags || []).join(" ")]], r.ok ? r.data.partners : [], "No partners match."));
    const sel = document.querySelector("#partner-search select");
    if (sel && filter.status) sel.value = filter.status;
  }

  async function budgets() {
    const r = await api("GET", "/api/mdf/budgets");
    section("budgets", "MDF budgets",
      table([["Budget", (b) => b.id], ["Program", (b) => b.program], ["For", (b) => (b.partner ? "partner " + b.partner : "tier " + b.tier)], ["Quarter", (b) => b.quarter],
        ["Amount", (b) => money(b.amount, b.currency)], ["Spent", (b) => money(b.spent, b.currency)], ["Remaining", (b) => money(b.remaining, b.currency)]],
        r.ok ? r.data.budgets : [], "No budgets yet: PUT /api/mdf/budgets/{id}."));
  }

  UI.start("ptrack.admin_token", load);
})();
