// leadpulse weekly report view: GET /v1/reports/weekly, drawn as tables on the hot-list page.
// Plain JavaScript, no build step. Uses the key the hot list keeps in sessionStorage; an
// agent key gets only its own rows (the server decides). Figures over too few leads come
// back as null with a note, and are shown as "too few", never as a number.
"use strict";
(function () {
  const url = document.body.dataset.reportUrl;
  const toggle = document.getElementById("report-toggle");
  const view = document.getElementById("report");
  if (!url || !toggle || !view) return;
  toggle.hidden = false;
  const params = new URLSearchParams(location.search);
  const out = document.getElementById("report-body");
  const msg = document.getElementById("report-msg");

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text != null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function dur(s) {
    if (s == null) return "—";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }
  function pct(r) {
    if (!r) return "—";
    if (r.value == null) return `${r.num}/${r.den} (too few)`;
    return `${(100 * r.value).toFixed(1)} % (${r.num}/${r.den})`;
  }
  function table(caption, head, rows) {
    const t = el("table", null, "report-table");
    t.append(el("caption", caption));
    const hr = el("tr");
    for (const h of head) hr.append(Object.assign(el("th", h), { scope: "col" }));
    const th = el("thead");
    th.append(hr);
    t.append(th);
    const tb = el("tbody");
    for (const r of rows) {
      const tr = el("tr");
      r.forEach((c, i) => tr.append(i ? el("td", c) : Object.assign(el("th", c), { scope: "row" })));
      tb.append(tr);
    }
    t.append(tb);
    return t;
  }
  function speedRows(rows) {
    return rows.map((r) => {
      const over = r.note ? "—" : "> 24 h";
      return [r.name, r.clocks == null ? "" : String(r.clocks), String(r.responses),
              r.median_s == null ? over : dur(r.median_s), r.p90_s == null ? over : dur(r.p90_s),
              pct(r.within_sla)];
    });
  }
  function funnelRows(rows) {
    return rows.map((r) => [r.name, String(r.leads), pct(r.contacted), pct(r.appointments),
                            pct(r.converted), r.lift == null ? "—" : `${r.lift.toFixed(2)}×`]);
  }
  function render(rep) {
    out.replaceChildren();
    const who = rep.agent ? ` · agent ${rep.agent}` : "";
    out.append(el("h3", `${rep.since} to ${rep.until}${who}`));
    for (const n of rep.notes || []) out.append(el("p", n, "report-note"));
    const sh = ["", "alerts", "responses", "median", "p90", "within SLA"];
    for (const [dim, label] of [["all", "all leads"], ["trigger", "trigger"],
                                ["source", "source"], ["agent", "agent"]]) {
      const rows = (rep.speed || {})[dim];
      if (rows && rows.length) out.append(table(`Speed to lead by ${label}`, sh, speedRows(rows)));
    }
    const fh = ["", "leads", "contact rate", "appointment rate", "conversion", "lift"];
    if (!rep.agent) out.append(table("All leads", fh, funnelRows([rep.total])));
    for (const [dim, label] of [["bucket", "bucket at first alert"], ["source", "source"],
                                ["agent", "agent"]]) {
      const rows = (rep.funnel || {})[dim];
      if (rows && rows.length) out.append(table(`Conversion by ${label}`, fh, funnelRows(rows)));
    }
    const ah = ["agent", "responses", "within SLA", "late", "SLA misses (escalated)",
                "redistributed to", "SLA misses (delivery clock)"];
    out.append(table("SLA misses and redistributions by agent", ah, (rep.sla_by_agent || [])
      .map((a) => [a.agent, a.responses, a.within_sla, a.late, a.sla_missed, a.redistributed_to,
                   a.missed_on_clock].map(String))));
    const ch = (rep.optouts || {}).channel || {};
    if (Object.keys(ch).length) {
      out.append(table("Opt-outs by channel", ["channel", "leads"],
                       Object.entries(ch).map(([c, n]) => [c, String(n)])));
    }
    const plans = rep.cadence_plans || [];
    if (plans.length) {  // follow-up cadences: plan completion, replies and opt-outs by step
      out.append(table("Follow-up plans", ["plan", "entered", "completed", "ended otherwise",
                                           "completion"],
        plans.map((p) => [p.plan, String(p.entered), String(p.completed), String(p.ended),
                          pct(p.completion)])));
    }
    const steps = rep.cadence_steps || [];
    if (steps.length) {
      out.append(table("Follow-up steps", ["step", "sent", "replies", "reply rate", "opt-outs"],
        steps.map((s) => [s.step, String(s.sent), String(s.replies), pct(s.reply_rate),
                          String(s.optouts)])));
    }
    const timing = rep.send_time || [];
    if (timing.length) {
      out.append(table("Send time that learns (automatic messages)",
        ["timing", "sent", "replies", "reply rate"],
        timing.map((t) => [t.timing, String(t.sent), String(t.replies), pct(t.reply_rate)])));
    }
    const q = rep.quality;
    if (q && !rep.agent) {
      out.append(el("p", q.auc == null ? `Model quality: ${q.note}` :
        `Model quality: ${q.labels} labels, AUC ${q.auc.toFixed(3)}, log loss ` +
        `${q.log_loss.toFixed(3)}, ECE ${q.ece.toFixed(3)}`, "report-quality"));
    }
  }
  async function load() {
    const q = new URLSearchParams();
    for (const k of ["tenant", "since", "until"]) if (params.get(k)) q.set(k, params.get(k));
    const key = sessionStorage.getItem("leadpulse.key") || "";
    msg.textContent = "Loading…";
    try {
      const res = await fetch(url + (q.toString() ? "?" + q : ""),
        { headers: key ? { Authorization: "Bearer " + key } : {} });
      if (res.status === 401) {  // the hot list asks for the key; load once it has one
        msg.textContent = "Sign in with your API key first.";
        const timer = setInterval(() => {
          const now = sessionStorage.getItem("leadpulse.key") || "";
          if (now && now !== key) { clearInterval(timer); load(); }
        }, 300);
        return;
      }
      const data = await res.json();
      if (!res.ok) { msg.textContent = `Report unavailable: ${data.detail || res.status}`; return; }
      msg.textContent = "";
      render(data);
      view.dataset.loaded = "1";
    } catch (err) {
      msg.textContent = "Report unavailable: " + err.message;
    }
  }
  function show(open) {
    view.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) load();
  }
  toggle.addEventListener("click", () => show(view.hidden));
  if (params.get("view") === "report") show(true);
})();
