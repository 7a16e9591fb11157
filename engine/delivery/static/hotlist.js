// leadpulse hot list: loads the leads, then follows the tenant's feed over SSE.
// Plain JavaScript, no build step. Every button becomes an event on the lead's stream.
// Auth: if the server answers 401, the page asks for the API key once, keeps it in
// sessionStorage (this tab only) and sends it as "Authorization: Bearer" on every call;
// never in the URL. The feed is read with fetch() + a stream reader (EventSource cannot
// send headers) and resumes with the Last-Event-ID header. An agent key is bound to one
// agent: the server fills that agent in (the board names it) and the page adopts it.
"use strict";
(function () {
  const body = document.body;
  const urls = {
    board: body.dataset.boardUrl,
    stream: body.dataset.streamUrl,
    leads: body.dataset.leadsUrl,
    tasks: body.dataset.tasksUrl,
  };
  const params = new URLSearchParams(location.search);
  const tenant = params.get("tenant") || "";
  const team = params.get("team") || "";
  const KEY = "leadpulse.key";
  let key = sessionStorage.getItem(KEY) || "";
  let agent = params.get("agent") || localStorage.getItem("leadpulse.agent") || "";
  const rows = new Map(); // lead id -> row
  const seen = (window.leadpulseSeen = {}); // lead id -> ms when its alert first arrived live
  const words = { sms: "text", call: "call", email: "email", chat: "chat", none: "no channel open" };
  const $ = (root, sel) => root.querySelector(sel);
  let zone = ""; // the tenant's time zone (the board says which); "" = the browser's

  // A time with its date in the tenant's zone: "Mon 5 Jan 2026, 10:05 EST" (as the
  // server words it); the browser's own zone if the tenant's is unknown to it.
  function localTime(ts, tz) {
    if (ts == null || !isFinite(ts)) return "";
    const opts = { weekday: "short", day: "numeric", month: "short", year: "numeric",
                   hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short" };
    let parts;
    try {
      parts = new Intl.DateTimeFormat("en-US", Object.assign({ timeZone: tz || zone || undefined }, opts))
        .formatToParts(new Date(ts * 1000));
    } catch (err) {
      parts = new Intl.DateTimeFormat("en-US", opts).formatToParts(new Date(ts * 1000));
    }
    const p = {};
    for (const part of parts) p[part.type] = part.value;
    return `${p.weekday} ${p.day} ${p.month} ${p.year}, ${p.hour}:${p.minute} ${p.timeZoneName}`;
  }

  function query(extra) {
    const q = new URLSearchParams(extra || {});
    if (tenant) q.set("tenant", tenant);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  class Unauthorized extends Error {}

  // Ask for the key (once per tab); resolves when the agent submits it.
  function askKey(message) {
    key = "";
    sessionStorage.removeItem(KEY);
    const form = document.getElementById("key-form");
    const input = document.getElementById("api-key");
    document.getElementById("key-msg").textContent = message;
    form.hidden = false;
    input.focus();
    return new Promise((resolve) => {
      form.onsubmit = (e) => {
        e.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        key = value;
        sessionStorage.setItem(KEY, value);
        input.value = "";
        form.hidden = true;
        resolve();
      };
    });
  }

  function announce(text) {
    const el = document.getElementById("announce");
    el.textContent = "";
    setTimeout(() => { el.textContent = text; }, 50);
  }

  function fmt(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  // A row from the board JSON, or from a feed payload (alert / escalated).
  function fromPayload(p) {
    return {
      lead_id: p.lead_id,
      score: p.score_after,
      bucket: p.bucket,
      bucket_by: p.bucket_by || "score",
      bucket_label: p.bucket_label || p.bucket,
      tier: p.tier,
      reasons: p.reasons || [],
      blocked_channels: p.blocked_channels || [],
      blocked_reasons: p.blocked_reasons || {},
      assignment: p.assignment || null,
      clock: p.clock || null,
      alert: { alert_id: p.alert_id, triggers: p.triggers, first_touch: p.first_touch,
               sla: p.sla, event: p.event, script: p.script, lead: p.lead,
               why_now: p.why_now, text: p.text, bucket_label: p.bucket_label },
    };
  }

  function slaText(clock, now, tz) {
    if (!clock || !clock.status) return ["", "No SLA clock"];
    const late = clock.late_on_arrival === true || clock.late_on_arrival === "1"
      ? " · late on arrival (not the agent's delay)" : "";
    const [status, text] = slaWords(clock, now, tz);
    return [status, text + late];
  }

  function slaWords(clock, now, tz) {
    if (clock.status === "met" || clock.status === "late") {
      const t = fmt(clock.response_s || 0);
      const by = clock.stopped_by ? ` by ${clock.stopped_by}` : "";
      return [clock.status, clock.status === "met"
        ? `Responded in ${t}${by} (within SLA)` : `Responded in ${t}${by} (after the SLA)`];
    }
    if (clock.status === "missed") return ["missed", "SLA missed: no response"];
    const left = clock.deadline_ts - now;
    const due = localTime(clock.deadline_ts, tz);
    if (left >= 0) return ["open", `Respond within ${fmt(left)} (by ${due})`];
    return ["overdue", `Overdue by ${fmt(-left)} (was due ${due})`];
  }

  function ownerText(a) {
    if (!a) return ["Unassigned", ""];
    if (a.state === "assigned") return [a.agent, a.reason];
    if (a.state === "offered") return [`Offered to ${(a.offered_to || []).join(", ")} (first to claim)`, a.reason];
    return ["The pond (anyone may claim)", a.reason];
  }

  function render(li, row) {
    const now = Date.now() / 1000;
    li.id = "lead-" + row.lead_id;
    li.dataset.lead = row.lead_id;
    li.dataset.alertId = (row.alert && row.alert.alert_id) || "";
    $(li, ".lead-id").textContent = row.lead_id;
    $(li, ".score-n").textContent = row.score == null ? "–" : row.score;
    $(li, ".bucket-tag").textContent = row.bucket_label || row.bucket || "";
    $(li, ".bucket-tag").dataset.by = row.bucket_by || "score";
    $(li, ".tier").textContent = row.tier || "";
    const reasons = $(li, ".reasons");
    const whyNow = row.alert && row.alert.why_now;
    reasons.replaceChildren(...(whyNow ? [whyNow] : []).concat(row.reasons || []).map((r, i) => {
      const item = document.createElement("li"); item.textContent = r;
      if (whyNow && i === 0) item.className = "why-now";
      return item;
    }));
    const touch = row.alert && row.alert.first_touch;
    $(li, ".first-touch").textContent = touch ? (words[touch] || touch) : "—";
    const blocked = $(li, ".blocked");
    blocked.replaceChildren(...(row.blocked_channels || []).map((ch) => {
      const item = document.createElement("li");
      const why = (row.blocked_reasons || {})[ch] || "blocked";
      item.textContent = `No ${words[ch] || ch}: ${why}`;
      item.dataset.channel = ch;
      return item;
    }));
    const [owner, why] = ownerText(row.assignment);
    $(li, ".owner").textContent = owner;
    $(li, ".assign-reason").textContent = why || "";
    const script = row.alert && row.alert.script;
    $(li, ".script").hidden = !script;
    if (script) {
      $(li, ".script-text").textContent = script.text;
      $(li, ".script-tip").textContent = script.tip || "";
    }
    li.clock = row.clock;
    const sla = (row.alert && row.alert.sla) || {};
    li.zone = sla.timezone || "";
    if (li.clock && sla.late_on_arrival && li.clock.late_on_arrival == null) {
      li.clock = Object.assign({}, li.clock, { late_on_arrival: true });
    }
    tickOne(li, now);
    const mine = row.assignment && row.assignment.state === "assigned" && row.assignment.agent === agent;
    $(li, ".claim").disabled = !agent || mine;
    for (const b of li.querySelectorAll("button")) b.setAttribute("aria-describedby", li.id + "-id");
    $(li, ".lead-id").id = li.id + "-id";
  }

  function tickOne(li, now) {
    const el = $(li, ".sla");
    const [status, text] = slaText(li.clock, now, li.zone);
    el.dataset.status = status;
    el.textContent = text;
  }

  function place(li, bucket) {
    const section = document.getElementById(bucket) || document.getElementById("P4");
    const list = $(section, ".leads");
    const score = Number(li.dataset.score || 0);
    let before = null;
    for (const other of list.children) {
      if (other !== li && Number(other.dataset.score || 0) < score) { before = other; break; }
    }
    if (li.parentElement !== list || li.nextElementSibling !== before) list.insertBefore(li, before);
  }

  function counts() {
    for (const section of document.querySelectorAll(".bucket")) {
      const n = $(section, ".leads").children.length;
      const c = $(section, ".count");
      c.dataset.count = n; c.textContent = `(${n})`;
    }
  }

  function upsert(row, fresh) {
    const prev = rows.get(row.lead_id);
    if (prev && !row.alert && prev.alert) row.alert = prev.alert;
    rows.set(row.lead_id, row);
    let li = document.getElementById("lead-" + row.lead_id);
    if (!li) {
      li = document.getElementById("lead-template").content.firstElementChild.cloneNode(true);
      wire(li);
    }
    li.dataset.score = row.score == null ? 0 : row.score;
    render(li, row);
    place(li, row.bucket);
    if (fresh) {
      if (!(row.lead_id in seen)) seen[row.lead_id] = Date.now(); // for latency measurement
      li.classList.remove("new"); void li.offsetWidth; li.classList.add("new");
      announce(`New ${row.bucket_label || row.bucket} alert: lead ${row.lead_id}, score ${row.score}`);
    }
    counts();
  }

  function update(leadId, patch) {
    const row = rows.get(leadId);
    if (!row) return;
    Object.assign(row, patch);
    upsert(row, false);
  }

  async function post(li, action, extra) {
    const result = $(li, ".result");
    if (!agent) { result.textContent = "Enter your agent id first."; return; }
    const lead = li.dataset.lead;
    const bodyJson = Object.assign({ agent_id: agent, alert_id: li.dataset.alertId || "" }, extra || {});
    result.textContent = "Sending…";
    try {
      const resp = await fetch(`${urls.leads}/${encodeURIComponent(lead)}/${action}${query()}`, {
        method: "POST", headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify(bodyJson),
      });
      const data = await resp.json();
      if (resp.status === 401) { result.textContent = "Your API key was refused."; restart(); return; }
      if (!resp.ok) { result.textContent = data.detail || `Failed (${resp.status})`; return; }
      if (action === "claim") {
        result.textContent = "Claimed";
        if (data.assignment) update(lead, { assignment: data.assignment });
      } else if (action === "ack") {
        result.textContent = "Acknowledged";
        $(li, ".ack").disabled = true;
      } else {
        result.textContent = data.warning ? data.warning : "Contact logged";
      }
    } catch (err) {
      result.textContent = "Network error: " + err.message;
    }
  }

  function wire(li) {
    $(li, ".claim").addEventListener("click", () => post(li, "claim"));
    $(li, ".ack").addEventListener("click", () => post(li, "ack"));
    $(li, ".contact").addEventListener("click", () => post(li, "contact", { channel: $(li, ".channel").value }));
  }

  // One server-sent event: {id, event, data} from its lines.
  function parseEvent(block) {
    const ev = { id: null, event: "message", data: [] };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") ev.id = value;
      else if (field === "event") ev.event = value;
      else if (field === "data") ev.data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) ev.retry = Number(value);
    }
    return ev;
  }

  function dispatch(ev) {
    if (!ev.data.length) return;
    const data = JSON.parse(ev.data.join("\n"));
    if (ev.event === "alert" || ev.event === "escalated") upsert(fromPayload(data), true);
    else if (ev.event === "assignment") update(data.lead_id, { assignment: data });
    else if (ev.event === "sla") update(data.lead_id, { clock: data });
    else if (ev.event === "task") loadTasks();
  }

  // Today's follow-up tasks (GET /v1/tasks): lead, the step's line, due time in the
  // tenant's zone; read again whenever the feed brings a task.
  async function loadTasks() {
    if (!urls.tasks) return;
    const q = {};
    if (agent) q.agent = agent;
    const msg = document.getElementById("tasks-msg");
    let data;
    try {
      const resp = await fetch(urls.tasks + query(q), { headers: headers(), cache: "no-store" });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      data = await resp.json();
    } catch (err) {
      msg.textContent = "Could not load today's tasks: " + err.message;
      return;
    }
    const list = document.getElementById("task-list");
    list.replaceChildren();
    for (const t of data.tasks) {
      const li = document.createElement("li");
      li.className = "task";
      li.dataset.stepId = t.step_id;
      li.dataset.lead = t.lead_id;
      const due = document.createElement("time");
      due.className = "task-due";
      due.dateTime = new Date(t.due_ts * 1000).toISOString();
      due.textContent = t.due_local;
      const lead = document.createElement("strong");
      lead.className = "task-lead";
      lead.textContent = t.lead_id;
      const text = document.createElement("span");
      text.className = "task-text";
      text.textContent = t.text + (t.unassigned ? " (no agent yet)" : "");
      li.append(due, " ", lead, " ", text);
      list.append(li);
    }
    const count = document.getElementById("tasks-count");
    count.dataset.count = String(data.tasks.length);
    count.textContent = `(${data.tasks.length})`;
    msg.textContent = data.tasks.length ? "" : "No follow-up tasks due today.";
  }

  let stream = null; // the AbortController of the open feed

  // Follow the feed from `after`; on a drop, reconnect with Last-Event-ID.
  async function connect(after) {
    const q = {};
    if (agent) q.agent = agent;
    if (team) q.team = team;
    const conn = document.getElementById("conn");
    let last = after || "";
    let retry = 2000;
    const ctl = new AbortController();
    stream = ctl;
    window.leadpulseStream = ctl;
    while (!ctl.signal.aborted) {
      try {
        const resp = await fetch(urls.stream + query(q), {
          headers: headers(last ? { "Last-Event-ID": last, Accept: "text/event-stream" }
                                : { Accept: "text/event-stream" }),
          signal: ctl.signal, cache: "no-store",
        });
        if (resp.status === 401) throw new Unauthorized("API key refused");
        if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
        conn.dataset.state = "live"; conn.textContent = "Live";
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const ev = parseEvent(buf.slice(0, cut));
            buf = buf.slice(cut + 2);
            if (ev.retry) retry = ev.retry;
            if (ev.id) last = ev.id;
            dispatch(ev);
          }
        }
      } catch (err) {
        if (ctl.signal.aborted) return;
        if (err instanceof Unauthorized) { restart(); return; }
      }
      conn.dataset.state = "down"; conn.textContent = "Reconnecting…";
      await new Promise((r) => setTimeout(r, retry));
    }
  }

  async function load() {
    const q = {};
    if (agent) q.agent = agent;
    if (team) q.team = team;
    const resp = await fetch(urls.board + query(q), { headers: headers() });
    if (resp.status === 401) throw new Unauthorized(key ? "That API key was refused." : "");
    if (!resp.ok) {
      const why = await resp.json().then((d) => d.detail, () => "");
      throw new Error(why || `hot list: HTTP ${resp.status}`);
    }
    const board = await resp.json();
    zone = board.timezone || "";
    if (board.agent && board.agent !== agent) { // an agent key: the server says who we are
      agent = board.agent;
      document.getElementById("agent").value = agent;
    }
    for (const list of Object.values(board.buckets)) for (const row of list) upsert(row, false);
    counts();
    body.dataset.loaded = "true";
    connect(board.feed_id);
    loadTasks();
  }

  document.getElementById("agent").value = agent;
  document.getElementById("who").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = document.getElementById("agent").value.trim();
    localStorage.setItem("leadpulse.agent", value);
    params.set("agent", value);
    location.search = params.toString();
  });
  setInterval(() => {
    const now = Date.now() / 1000;
    for (const li of document.querySelectorAll(".lead")) tickOne(li, now);
  }, 1000);
  // Load the board and follow the feed; on a 401, ask for the key and start again.
  async function start() {
    for (;;) {
      try {
        await load();
        return;
      } catch (err) {
        const conn = document.getElementById("conn");
        conn.dataset.state = "down";
        if (!(err instanceof Unauthorized)) {
          conn.textContent = "Could not load the hot list: " + err.message;
          return;
        }
        conn.textContent = "Waiting for your API key";
        await askKey(err.message || "Enter your API key to see your team's leads.");
      }
    }
  }

  let restarting = false;
  function restart() {
    if (restarting) return;
    restarting = true;
    if (stream) stream.abort();
    askKey("Your API key was refused; enter it again.").then(() => {
      restarting = false;
      start();
    });
  }

  start();
})();
