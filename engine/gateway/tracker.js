/*! leadpulse IDX tracker v1 — served by `leadpulse serve` at /tracker.js.
 *
 * <script async src="https://GATEWAY/tracker.js" data-key="lpk_trk_..."></script>
 *
 * Sends contract-v1 events to GATEWAY/v1/events in batches (sendBeacon when the page
 * is hidden or left, fetch keepalive otherwise), as text/plain JSON with the tracker
 * key in the URL: a "simple" cross-origin request, no preflight, no cookies sent.
 *
 * Automatic: page_view (path only: query strings can carry personal data),
 * property_view for an element with data-lp-view (data-lp-property-id, data-lp-price,
 * data-lp-area), property_save / property_unsave on clicks of [data-lp-save] /
 * [data-lp-unsave], search on submit of form[data-lp-search] (its named fields as
 * filters, except password / email / tel inputs).
 * API: leadpulse.identify(leadId, traits[, token]), leadpulse.propertyView({...}),
 * leadpulse.search(filters), leadpulse.track(type, fields), leadpulse.flush(),
 * leadpulse.reset(), leadpulse.visitorId(), leadpulse.optOut(), leadpulse.optIn(),
 * leadpulse.optedOut().
 *
 * Privacy: nothing is sent and no cookie is set while the browser sends Global Privacy
 * Control (navigator.globalPrivacyControl), after leadpulse.optOut() (remembered in the
 * lp_optout cookie; optIn() clears it), or under Do Not Track with data-respect-dnt="true".
 */
(function (w, d) {
  "use strict";
  var existing = w.leadpulse;
  if (existing && existing.version) return; // loaded twice
  var script = d.currentScript || d.querySelector("script[data-key][src*='tracker.js']");
  if (!script) return;
  var KEY = script.getAttribute("data-key") || "";
  var ENDPOINT = (script.getAttribute("data-endpoint") || new URL(script.src, d.baseURI).origin)
    .replace(/\/+$/, "");
  var URL_ = ENDPOINT + "/v1/events?key=" + encodeURIComponent(KEY);
  var DAYS = parseInt(script.getAttribute("data-cookie-days") || "395", 10);
  var DOMAIN = script.getAttribute("data-cookie-domain") || "";
  var MAX_BATCH = 20, FLUSH_MS = 2000, MAX_TRIES = 3;
  var VID = "lp_vid", LID = "lp_lid", OPT = "lp_optout";
  var signalled = navigator.globalPrivacyControl === true ||
    (script.getAttribute("data-respect-dnt") === "true" && navigator.doNotTrack === "1");

  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : "";
  }
  function setCookie(name, value, days) {
    var c = name + "=" + encodeURIComponent(value) + "; path=/; max-age=" +
      Math.round(days * 86400) + "; SameSite=Lax";
    if (DOMAIN) c += "; domain=" + DOMAIN;
    if (location.protocol === "https:") c += "; Secure";
    d.cookie = c;
  }
  function rand(n) {
    var a = new Uint8Array(n), s = "", i;
    (w.crypto || w.msCrypto).getRandomValues(a);
    for (i = 0; i < n; i++) s += (a[i] % 36).toString(36);
    return s;
  }

  var off = signalled || cookie(OPT) === "1";
  var visitor = "", lead = "";
  function start() { // only when tracking is allowed: no cookie otherwise
    visitor = cookie(VID);
    if (!/^[a-z0-9]{8,64}$/.test(visitor)) visitor = rand(22);
    setCookie(VID, visitor, DAYS); // refresh the expiry on every visit
    lead = cookie(LID);
  }
  if (!off) start();
  var seq = 0, queue = [], timer = null;
  function optOut() {
    off = true; queue = []; visitor = ""; lead = "";
    if (timer) { clearTimeout(timer); timer = null; }
    setCookie(VID, "", 0); setCookie(LID, "", 0);
    setCookie(OPT, "1", DAYS);
  }
  function optIn() { // the visitor's choice; a browser privacy signal still wins
    setCookie(OPT, "", 0);
    if (off && !signalled) { off = false; start(); }
  }

  function clip(v) {
    return typeof v === "string" ? v.slice(0, 200) : v;
  }
  function track(type, fields) {
    if (off) return;
    var ev = {
      event_id: visitor + "." + Date.now().toString(36) + "." + (seq++).toString(36) + rand(4),
      type: type,
      ts: Date.now() / 1000,
      visitor_id: visitor
    };
    if (lead) ev.lead_id = lead;
    for (var k in fields || {}) {
      if (Object.prototype.hasOwnProperty.call(fields, k) && fields[k] !== undefined &&
          fields[k] !== null && fields[k] !== "") ev[k] = clip(fields[k]);
    }
    queue.push({ e: ev, n: 0 });
    if (queue.length >= MAX_BATCH) flush(false);
    else if (!timer) timer = setTimeout(function () { flush(false); }, FLUSH_MS);
  }

  function send(batch, beacon) {
    var body = JSON.stringify(batch.map(function (x) { return x.e; }));
    if (beacon && navigator.sendBeacon &&
        navigator.sendBeacon(URL_, new Blob([body], { type: "text/plain" }))) return;
    var retry = function () {
      batch.forEach(function (x) { if (++x.n < MAX_TRIES) queue.push(x); });
      if (queue.length && !timer) timer = setTimeout(function () { flush(false); }, FLUSH_MS * 2);
    };
    try {
      fetch(URL_, {
        method: "POST", body: body, keepalive: true, mode: "cors", credentials: "omit",
        headers: { "Content-Type": "text/plain" }
      }).then(function (r) { if (r.status === 429 || r.status >= 500) retry(); }, retry);
    } catch (err) { retry(); }
  }

  function flush(beacon) {
    if (timer) { clearTimeout(timer); timer = null; }
    while (queue.length) send(queue.splice(0, MAX_BATCH), beacon);
  }

  function num(v) {
    var x = parseFloat(String(v || "").replace(/[^0-9.]/g, ""));
    return isFinite(x) ? x : undefined;
  }
  function propertyView(p) {
    p = p || {};
    track("property_view", { property_id: p.property_id, price: num(p.price), area: p.area });
  }
  function search(filters) {
    var f = {}, n = 0;
    for (var k in filters || {}) {
      if (Object.prototype.hasOwnProperty.call(filters, k) && filters[k] !== "" && n < 30) {
        f[k] = clip(String(filters[k])); n++;
      }
    }
    track("search", { area: f.area, props: { filters: f } });
  }
  // token: the site server's identify token for leadId (engine/gateway/identify.py);
  // without one, the lead must already be known to the gateway from the server's key
  function identify(leadId, traits, token) {
    if (!leadId || off) return;
    lead = String(leadId);
    setCookie(LID, lead, DAYS);
    track("identify", { lead_id: lead, props: traits || undefined,
      identify_token: token ? String(token).slice(0, 64) : undefined });
    flush(false);
  }

  function attrs(el) {
    return {
      property_id: el.getAttribute("data-lp-property-id"),
      price: el.getAttribute("data-lp-price"),
      area: el.getAttribute("data-lp-area")
    };
  }
  d.addEventListener("click", function (e) {
    var t = e.target && e.target.closest && e.target.closest("[data-lp-save],[data-lp-unsave]");
    if (!t) return;
    var saving = t.hasAttribute("data-lp-save");
    var host = t.closest("[data-lp-property-id]");
    var pid = t.getAttribute(saving ? "data-lp-save" : "data-lp-unsave") ||
      (host && host.getAttribute("data-lp-property-id"));
    var a = host ? attrs(host) : {};
    track(saving ? "property_save" : "property_unsave",
      { property_id: pid, price: num(a.price), area: a.area });
  }, true);
  d.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form || !form.matches || !form.matches("form[data-lp-search]")) return;
    var f = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      var type = (el.type || "").toLowerCase();
      if (!el.name || type === "password" || type === "email" || type === "tel") return;
      if ((type === "checkbox" || type === "radio") && !el.checked) return;
      if (el.value !== "") f[el.name] = el.value;
    });
    search(f);
    flush(false);
  }, true);
  d.addEventListener("visibilitychange", function () {
    if (d.visibilityState === "hidden") flush(true);
  });
  w.addEventListener("pagehide", function () { flush(true); });

  var api = {
    version: 1,
    identify: identify,
    propertyView: propertyView,
    search: search,
    track: track,
    flush: function () { flush(false); },
    reset: function () { lead = ""; setCookie(LID, "", 0); },
    visitorId: function () { return visitor; },
    optOut: optOut,
    optIn: optIn,
    optedOut: function () { return off; }
  };
  w.leadpulse = api;

  track("page_view", { props: { path: location.pathname.slice(0, 200) } });
  function onReady() {
    var v = d.querySelector("[data-lp-view][data-lp-property-id]");
    if (v) propertyView(attrs(v));
  }
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", onReady);
  else onReady();
  // calls made before the script loaded: window.leadpulse = [["identify", "L1"], ...]
  if (existing && existing.length) {
    for (var i = 0; i < existing.length; i++) {
      var call = existing[i];
      if (call && typeof api[call[0]] === "function") api[call[0]].apply(null, call.slice(1));
    }
  }
})(window, document);
