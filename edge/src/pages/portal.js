"use strict";
(() => {
  const { el, table, form, section, badge, money, day, say, why } = UI;
  const api = UI.api;
  let me = null;

  async function load() {
    const r = await api("GET", "/partner/v1/me");
    if (!r.ok) {
      const e = (r.data || {}).error || {};
      if (r.status === 403) UI.signOut("This partner account is " + (e.status || "not active") + (e.status_reason ? " (" + e.status_reason.replace(/_/g, " ") + ")" : "") + ".");
      return false;
    }
    me = r.data;
    document.getElementById("who").textContent = (me.name || me.id) + " · " + (me.program_info.name || me.program);
    profile();
    await Promise.all([numbers(), links(), deals(), mdf(), assets(), statements()]);
    return true;
  }

  const cur = () => me.currency || me.program_info.currency || "USD";
  const kpi = (label, value) => el("div", { class: "kpi" }, el("span", { class: "mut", text: label }), el("b", {}, value));

  function profile() {
    section("profile", "Your partnership",
      el("div", { class: "kpis" },
        kpi("Status", badge(me.status)), kpi("Tier", me.tier || "—"), kpi("Partner id", me.id),
        kpi("Partner manager", me.manager || "—")),
      me.coupons.length ? el("p", {}, "Your coupon codes: ", me.coupons.map((c) => [el("code", { text: c }), " "])) : null,
      me.status !== "approved" ? el("p", { class: "mut", text: "Links, deals and MDF open once your application is approved." }) : null);
  }

  async function numbers(from, to) {
    const q = new URLSearchParams();
    if (from) q.set("from", from);
    if (to) q.set("to", to);
    const r = await api("GET", "/partner/v1/stats?" + q);
    const s = section("numbers", "Clicks and conversions");
    s.append(form("stats-form", [["from", "From", { type: "date", value: r.data && r.data.from }], ["to", "To", { type: "date", value: r.data && r.data.to }]],
      "Show", (d) => numbers(d.from, d.to)));
    if (!r.ok) return s.append(el("p", { class: "status bad", text: why(r) }));
    const t = r.data.totals;
    s.append(el("div", { class: "kpis" }, kpi("Clicks", t.clicks), kpi("Unique clicks", t.unique_clicks), kpi("Conversions", t.conversions)));
    const days = r.data.days.filter((d) => d.clicks || d.conversions);
    const max = Math.max(1, ...days.map((d) => d.clicks));
    s.append(table([["Day", (d) => d.date], ["Clicks", (d) => String(d.clicks)], ["", (d) => el("div", { class: "bar", width: Math.round((100 * d.clicks) / max) + "%" })],
      ["Unique", (d) => String(d.unique_clicks)], ["Conversions", (d) => String(d.conversions)]], days, "No activity in these days."));
  }

  async function links() {
    const r = await api("GET", "/partner/v1/links");
    const host = me.program_info.allowed_hosts.find((h) => !h.startsWith("*.")) || "shop.example";
    section("links", "Tracking links",
      r.ok ? table([["Link", (l) => el("code", { text: l.url })], ["Destination", (l) => l.destination], ["Status", (l) => badge(l.status)], ["Created", (l) => day(l.created_at)]], r.data.links, "No links yet.") : el("p", { text: why(r) }),
      me.status === "approved" ? form("link-form", [["destination", "Destination (" + me.program_info.allowed_hosts.join(", ") + ")", { required: true, size: 40, placeholder: "https://" + host + "/" }]],
        "Create link", async (d) => {
          const c = await api("POST", "/partner/v1/links", { program: me.program, destination: d.destination });
          if (c.ok) { say("Link created: " + c.data.url); await links(); } else say("Link refused: " + why(c), true);
        }) : null);
  }

  async function deals() {
    const r = await api("GET", "/partner/v1/deals");
    section("deals", "Deal registrations",
      el("p", { class: "mut", text: "Register a customer before you close: an approved registration protects it for " + me.program_info.deal_days + " days." }),
      r.ok ? table([["Customer", (d) => d.customer], ["Company", (d) => d.company], ["Domain", (d) => d.domain], ["Value", (d) => money(d.value, d.currency)],
        ["Expected close", (d) => d.expected_close], ["Status", (d) => badge(d.expired && d.status !== "rejected" ? "expired" : d.status)], ["Expires", (d) => day(d.expires_at)], ["Note", (d) => d.reason]], r.data.deals, "No deals registered yet.") : null,
      me.status === "approved" ? form("deal-form", [["customer", "Customer id", { required: true }], ["company", "Company"], ["domain", "Domain", { placeholder: "acme.example" }],
        ["value", "Estimated value", { placeholder: "10000.00", size: 10 }], ["currency", "Currency", { value: cur(), size: 4 }], ["expected_close", "Expected close", { type: "date" }]],
        "Register deal", async (d, f) => {
          if (!d.value) delete d.currency;
          const c = await api("POST", "/partner/v1/deals", Object.assign({ program: me.program }, d));
          if (c.ok) { say("Deal registered; it is pending review."); f.reset(); await deals(); }
          else if (c.status === 409) say("This customer is already registered by a partner.", true);
          else say("Deal refused: " + why(c), true);
        }) : null);
  }

  function claimForm(q) {
    return form("claim-" + q.id, [["amount", "Claim amount", { value: q.amount, size: 9, required: true }], ["proof_url", "Proof (URL)", { required: true, placeholder: "https://", size: 24 }]],
      "Claim", async (d) => {
        const c = await api("POST", "/partner/v1/mdf/" + encodeURIComponent(q.id) + "/claim", d);
        if (c.ok) { say("Claim sent."); await mdf(); } else say("Claim refused: " + why(c), true);
      });
  }

  async function mdf() {
    const r = await api("GET", "/partner/v1/mdf");
    section("mdf", "Market development funds",
      r.ok ? table([["Activity", (q) => q.activity], ["Amount", (q) => money(q.amount, q.currency)], ["Quarter", (q) => q.quarter], ["Status", (q) => badge(q.status)],
        ["Claim", (q) => q.claim ? [badge(q.claim.status), " ", money(q.claim.amount, q.currency)] : q.status === "approved" ? "" : "—"],
        ["", (q) => q.status === "approved" && (!q.claim || q.claim.status === "rejected") ? claimForm(q) : q.reason || (q.claim && q.claim.reason) || ""]],
        r.data.requests, "No requests yet.") : null,
      me.status === "approved" ? form("mdf-form", [["activity", "Activity", { required: true, size: 30, placeholder: "Webinar, trade show…" }], ["amount", "Amount", { required: true, size: 9 }], ["currency", "Currency", { value: cur(), size: 4 }]],
        "Request funds", async (d, f) => {
          const c = await api("POST", "/partner/v1/mdf", Object.assign({ program: me.program }, d));
          if (c.ok) { say("MDF requested."); f.reset(); await mdf(); } else say("Request refused: " + why(c), true);
        }) : null);
  }

  async function assets() {
    const r = await api("GET", "/partner/v1/assets");
    section("assets", "Co-marketing assets",
      r.ok ? table([["Title", (a) => el("a", { href: a.url, rel: "noopener noreferrer", target: "_blank", text: a.title })], ["Kind", (a) => a.kind], ["Tier", (a) => a.min_tier || "all"],
        ["Your tracking link", (a) => (a.tracking_link ? el("code", { text: a.tracking_link }) : el("span", { class: "mut", text: "after approval" }))]], r.data.assets, "No assets for your tier yet.") : null);
  }

  async function statements() {
    const r = await api("GET", "/partner/v1/statements");
    const n = (k) => [k.replace("_", " "), (s) => el("span", { text: s[k] })];
    section("statements", "Statements",
      r.ok ? table([["Period", (s) => s.period], ["Currency", (s) => s.currency], n("earned"), n("reversed"), n("adjusted"), n("carried_in"), n("pending"), n("payable"), n("carried_out")],
        r.data.statements, "No statements yet: they appear after the monthly settlement.") : null);
  }

  UI.start("ptrack.partner_key", load);
})();
