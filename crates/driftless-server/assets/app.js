// The driftless dashboard: a hash-routed page over the hub's /v1 routes. No framework, no build.
"use strict";

const KEY = "driftless.token";
const view = document.getElementById("view");
const notice = document.getElementById("notice");
const PAGE = 50;

// A token given in the address fragment (#token=...) is taken once and dropped from the address,
// so scripted checks can open the page already signed in; the fragment never reaches the server.
(function takeTokenFromFragment() {
  const m = location.hash.match(/^#token=([^&]*)(?:&(.*))?$/);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#" + (m[2] || "/"));
  }
})();

function token() { return sessionStorage.getItem(KEY) || ""; }

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== undefined && k !== null && k !== false) e.append(k);
  return e;
}

const S = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...kids) {
  const e = document.createElementNS(S, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function say(text, kind) {
  notice.textContent = text;
  notice.className = kind || "";
  notice.hidden = !text;
}

class HttpError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || ("HTTP " + status));
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function call(method, path, body) {
  const init = { method, headers: {} };
  if (token()) init.headers.Authorization = "Bearer " + token();
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!r.ok) throw new HttpError(r.status, data);
  return data;
}
const get = (path) => call("GET", path);

function askToken() {
  const d = document.getElementById("login");
  if (!d.open) d.showModal();
}
document.getElementById("login-form").addEventListener("submit", (e) => {
  const t = new FormData(e.target).get("token");
  if (t) { sessionStorage.setItem(KEY, String(t)); render(); }
});
document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  askToken();
});
document.getElementById("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const v = e.target.elements.sku.value.trim();
  if (v) location.hash = "#/sku/" + encodeURIComponent(v);
});

const fmtTime = (t) => t ? new Date(t).toLocaleString() : "–";
const ms = (v) => v === null || v === undefined ? "–" : v < 1000 ? v.toFixed(1) + " ms" : v < 120000 ? (v / 1000).toFixed(1) + " s" : v < 7200000 ? (v / 60000).toFixed(1) + " min" : (v / 3600000).toFixed(1) + " h";
const badge = (o) => h("span", { class: "badge o-" + o }, o);
const card = (n, l) => h("div", { class: "card" }, h("div", { class: "n" }, String(n)), h("div", { class: "l" }, l));

function table(headers, rows) {
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((c) => h("th", { class: c.startsWith("#") ? "num" : "" }, c.replace(/^#/, ""))))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { class: headers[i].startsWith("#") ? "num" : "" }, c)))) :
      h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "nothing here"))));
}

// ---- overview ---------------------------------------------------------------------------------

const OUTCOMES = ["applied", "duplicate", "conflict", "stale", "covered", "override", "rejected"];
const samples = []; // [{t, counts}] from /metrics, for events per second and outcomes over time

function parseOutcomes(text) {
  const counts = {};
  for (const line of text.split("\n")) {
    const m = line.match(/^driftless_events_total\{outcome="(\w+)"\} (\d+)/);
    if (m) counts[m[1]] = Number(m[2]);
  }
  return counts;
}

async function sampleMetrics() {
  const r = await fetch("/metrics");
  if (!r.ok) return;
  samples.push({ t: Date.now(), counts: parseOutcomes(await r.text()) });
  if (samples.length > 60) samples.shift();
}

function outcomeChart() {
  const W = 560, H = 120;
  const svg = s("svg", { width: W, height: H + 20, role: "img", "aria-label": "outcomes over time" });
  const steps = [];
  for (let i = 1; i < samples.length; i++) {
    const d = {};
    for (const o of OUTCOMES) d[o] = Math.max(0, (samples[i].counts[o] || 0) - (samples[i - 1].counts[o] || 0));
    steps.push(d);
  }
  const colors = { applied: "#2f9e5b", duplicate: "#a0a8b8", conflict: "#c0262d", stale: "#e0a030", covered: "#f0c060", override: "#d0506a", rejected: "#7a1f28" };
  const max = Math.max(1, ...steps.map((d) => OUTCOMES.reduce((a, o) => a + d[o], 0)));
  const bw = W / Math.max(20, steps.length);
  steps.forEach((d, i) => {
    let y = H;
    for (const o of OUTCOMES) {
      const hgt = d[o] / max * H;
      if (hgt > 0) { y -= hgt; svg.append(s("rect", { x: i * bw, y, width: bw - 2, height: hgt, fill: colors[o] })); }
    }
  });
  OUTCOMES.forEach((o, i) => {
    svg.append(s("rect", { x: i * 80, y: H + 8, width: 10, height: 10, fill: colors[o] }));
    svg.append(s("text", { x: i * 80 + 14, y: H + 17 }, o));
  });
  if (!steps.length) svg.append(s("text", { x: 10, y: 20, fill: "#6b7385" }, "collecting samples every 5 s…"));
  return svg;
}

async function overview(refresh) {
  await sampleMetrics();
  const [channels, incidents, audits, matrix, page] = await Promise.all([
    get("/v1/channels"), get("/v1/incidents?limit=10"), get("/v1/audits?limit=1"), get("/v1/matrix"), get("/v1/inventory?limit=" + PAGE),
  ]);
  const last = samples[samples.length - 1].counts;
  const total = OUTCOMES.reduce((a, o) => a + (last[o] || 0), 0);
  let rate = "–";
  if (samples.length > 1) {
    const a = samples[samples.length - 2], b = samples[samples.length - 1];
    const d = OUTCOMES.reduce((x, o) => x + (b.counts[o] || 0) - (a.counts[o] || 0), 0);
    rate = (d / Math.max(0.001, (b.t - a.t) / 1000)).toFixed(1);
  }
  const systems = new Set();
  for (const hop of matrix.hops) { systems.add(hop.from); systems.add(hop.to); }
  const locations = new Set();
  for (const it of page.items) for (const l of it.locations) locations.add(l.location);
  const audit = audits.audits[0];
  const pending = channels.channels.reduce((a, c) => a + c.pending, 0);
  const parts = [
    h("h1", {}, "Overview"),
    h("div", { class: "cards" },
      card(page.next_after ? page.items.length + "+" : page.items.length, "skus"),
      card(locations.size + (page.next_after ? "+" : ""), "locations"),
      card(channels.channels.length, "channels"),
      card(systems.size, "systems"),
      card(rate, "events / s"),
      card(total, "events since start"),
      card(pending, "pushes pending"),
      card(audit ? audit.drifting : "–", "drifting at last audit")),
    h("h2", {}, "Outcomes over time"),
    h("div", { class: "drawing" }, outcomeChart()),
    h("h2", {}, "Outcomes since start"),
    table(OUTCOMES.map((o) => "#" + o), [OUTCOMES.map((o) => String(last[o] || 0))]),
    h("h2", {}, "Open incidents (newest)"),
    incidentTable(incidents.incidents),
    h("h2", {}, "Last audit"),
    audit ? h("p", {}, "Audit ", h("a", { href: "#/drift" }, "#" + audit.id), " at ", fmtTime(audit.at), ": ", String(audit.drifting), " of ", String(audit.skus_compared), " skus drifting.")
      : h("p", { class: "muted" }, "No stored audit yet: run driftless audit --store."),
  ];
  if (refresh) later(() => overview(true), 5000);
  return parts;
}

function incidentTable(list) {
  return table(["kind", "sku", "location", "system", "detail", "at"], list.map((i) => [
    badge(i.kind), i.sku ? h("a", { href: "#/sku/" + encodeURIComponent(i.sku) }, i.sku) : "–", i.location || "–", i.system || "–", i.detail, fmtTime(i.at),
  ]));
}

// ---- matrix -----------------------------------------------------------------------------------

function matrixDrawing(m) {
  const names = [];
  for (const hop of m.hops) for (const n of [hop.from, hop.to]) if (!names.includes(n)) names.push(n);
  const W = Math.max(640, names.length * 190), H = 330, R = 34;
  const pos = {};
  names.forEach((n, i) => { pos[n] = { x: 90 + i * (W - 180) / Math.max(1, names.length - 1), y: i % 2 ? 230 : 110 }; });
  if (names.length === 1) pos[names[0]].x = W / 2;
  const svg = s("svg", { width: W, height: H, role: "img", "aria-label": "integration matrix" });
  const defs = s("defs");
  for (const [id, color] of [["ok", "#2f9e5b"], ["bad", "#c0262d"], ["none", "#8a93a5"]]) {
    defs.append(s("marker", { id: "arrow-" + id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", fill: color })));
  }
  svg.append(defs);
  m.hops.forEach((hop, i) => {
    const a = pos[hop.from], b = pos[hop.to];
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.max(1, Math.hypot(dx, dy));
    const ux = dx / len, uy = dy / len;
    const bend = (i % 2 ? -1 : 1) * 18;
    const x1 = a.x + ux * R, y1 = a.y + uy * R, x2 = b.x - ux * R, y2 = b.y - uy * R;
    const mx = (x1 + x2) / 2 - uy * bend, my = (y1 + y2) / 2 + ux * bend;
    const state = hop.within_sla === false ? "bad" : hop.within_sla === true ? "ok" : "none";
    const color = { ok: "#2f9e5b", bad: "#c0262d", none: "#8a93a5" }[state];
    const attrs = { d: `M${x1},${y1} Q${mx},${my} ${x2},${y2}`, fill: "none", stroke: color, "stroke-width": 2.5, "marker-end": `url(#arrow-${state})` };
    if (hop.direction === "bidirectional") attrs["marker-start"] = `url(#arrow-${state})`;
    if (!hop.documented) attrs["stroke-dasharray"] = "6 4";
    svg.append(s("path", attrs));
    const q = hop.end_to_end || hop.push_latency || hop.source_lag;
    const label = (q ? `p50 ${ms(q.p50_ms)} · p99 ${ms(q.p99_ms)}` : "not measured") + (hop.latency_sla_ms ? ` / SLA ${ms(hop.latency_sla_ms)}` : "");
    const flags = [hop.direction === "bidirectional" ? "⇄ bidirectional" : "", hop.documented ? "" : "undocumented"].filter(Boolean).join(" · ");
    svg.append(s("text", { x: mx, y: my - 6, "text-anchor": "middle", fill: color }, label));
    if (flags) svg.append(s("text", { x: mx, y: my + 10, "text-anchor": "middle", fill: "#b26b00" }, flags));
  });
  for (const n of names) {
    svg.append(s("circle", { cx: pos[n].x, cy: pos[n].y, r: R, fill: "#fff", stroke: "#1d2330", "stroke-width": 2 }));
    svg.append(s("text", { x: pos[n].x, y: pos[n].y + 4, "text-anchor": "middle", "font-weight": 600 }, n));
  }
  if (!names.length) svg.append(s("text", { x: 20, y: 30 }, "No hops documented or seen yet."));
  return svg;
}

async function matrixView() {
  const m = await get("/v1/matrix");
  return [
    h("h1", {}, "Integration matrix"),
    h("p", { class: "muted" }, "Systems and the hops between them, with measured latency against the SLA: red when the p99 is over, dashed when no configuration documents the hop, double-headed when bidirectional."),
    h("div", { class: "drawing" }, matrixDrawing(m)),
    h("h2", {}, "Hops"),
    table(["hop", "trigger", "#SLA", "#lag p50", "#lag p99", "#push p50", "#push p99", "#e2e p50", "#e2e p99", "within SLA", "flags"], m.hops.map((x) => [
      `${x.from} → ${x.to}`, x.trigger || "?", ms(x.latency_sla_ms),
      ms(x.source_lag && x.source_lag.p50_ms), ms(x.source_lag && x.source_lag.p99_ms),
      ms(x.push_latency && x.push_latency.p50_ms), ms(x.push_latency && x.push_latency.p99_ms),
      ms(x.end_to_end && x.end_to_end.p50_ms), ms(x.end_to_end && x.end_to_end.p99_ms),
      x.within_sla === false ? h("span", { class: "bad" }, "over") : x.within_sla === true ? h("span", { class: "ok" }, "yes") : "–",
      [x.documented ? "" : "undocumented", ...(x.flags || [])].filter(Boolean).join("; ") || "–",
    ])),
  ];
}

// ---- drift ------------------------------------------------------------------------------------

async function driftView(q) {
  const [page, trend] = await Promise.all([get("/v1/audits?limit=20" + (q.get("before") ? "&before=" + q.get("before") : "")), get("/v1/audits/trend?days=30")]);
  const latest = page.audits[0];
  const out = [h("h1", {}, "Drift"), h("div", { class: "reading" }, trend.reading)];
  if (trend.degrading) out.push(h("p", {}, "Degrading: ", h("strong", {}, trend.degrading.handoff), ` (+${trend.degrading.per_day.toFixed(2)} drifting skus per day)`));
  out.push(h("h2", {}, "Per hand-off, last 30 days"));
  const box = h("div", { class: "drawing" });
  // The chart is the audit crate's own SVG (the same one `driftless trend --format html` draws).
  const doc = new DOMParser().parseFromString(trend.svg, "image/svg+xml");
  if (doc.documentElement && doc.documentElement.nodeName === "svg") box.append(document.importNode(doc.documentElement, true));
  out.push(box);
  if (latest) {
    const full = await get("/v1/audits/" + latest.id);
    const systems = Object.keys((full.report.rows[0] || {}).values || {});
    out.push(h("h2", {}, `Latest audit #${latest.id} (${fmtTime(latest.at)}): ${latest.drifting} of ${latest.skus_compared} drifting`));
    out.push(table(["hand-off", "#drifting skus", "#abs units"], latest.handoffs.map((x) => [x.handoff, String(x.drifting_skus), String(x.abs_units)])));
    out.push(h("h2", {}, "Rows over threshold"));
    out.push(table(["sku", "location", "#baseline", ...systems.map((x) => "#" + x), "hand-off", "cause", "#delta"], (full.report.rows || []).slice(0, 500).map((r) => [
      h("a", { href: "#/sku/" + encodeURIComponent(r.sku) }, r.sku), r.location || "–", String(r.baseline ?? "–"),
      ...systems.map((x) => String(r.values[x] ?? "–")), r.handoff || "–", r.cause || "–", String(r.delta ?? "–"),
    ])));
  } else {
    out.push(h("p", { class: "muted" }, "No stored audit yet."));
  }
  out.push(h("h2", {}, "Stored audits"));
  out.push(table(["id", "at", "#compared", "#drifting"], page.audits.map((a) => [String(a.id), fmtTime(a.at), String(a.skus_compared), String(a.drifting)])));
  if (page.next_before) out.push(h("div", { class: "pager" }, h("a", { href: "#/drift?before=" + page.next_before }, "older →")));
  return out;
}

// ---- skus -------------------------------------------------------------------------------------

function locationsTable(inv) {
  return table(["location", "#on_hand", "#committed", "#reserved", "#incoming", "#unavailable", "#available"],
    inv.locations.map((l) => [l.location, String(l.on_hand), String(l.committed), String(l.reserved), String(l.incoming), String(l.unavailable), h("strong", {}, String(l.available))]));
}

async function skusView(q) {
  const after = q.get("after") || "";
  const page = await get("/v1/inventory?limit=" + PAGE + (after ? "&after=" + encodeURIComponent(after) : ""));
  const rows = page.items.map((it) => {
    const sum = (k) => it.locations.reduce((a, l) => a + l[k], 0);
    return [h("a", { href: "#/sku/" + encodeURIComponent(it.sku) }, it.sku), String(it.locations.length), String(sum("on_hand")), String(sum("available")),
      it.channels.map((c) => `${c.channel} ${c.quantity}`).join(", ") || "–"];
  });
  return [
    h("h1", {}, "Skus"),
    table(["sku", "#locations", "#on hand", "#available", "channels"], rows),
    h("div", { class: "pager" },
      after ? h("a", { href: "#/skus" }, "← first page") : null,
      page.next_after ? h("a", { href: "#/skus?after=" + encodeURIComponent(page.next_after) }, "next →") : null),
  ];
}

function toLocalInput(iso) {
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

async function skuView(sku, q) {
  const at = q.get("at");
  const path = "/v1/inventory/" + encodeURIComponent(sku);
  let inv, hist;
  try {
    [inv, hist] = await Promise.all([get(path + (at ? "?at=" + encodeURIComponent(at) : "")), get(path + "/history?limit=500")]);
  } catch (e) {
    if (e.status === 404) return [h("h1", {}, sku), h("p", {}, "This sku has never been seen.")];
    throw e;
  }
  const picker = h("input", { type: "datetime-local", step: "1", name: "at", value: at ? toLocalInput(at) : "" });
  const asof = h("form", { class: "asof" + (at ? " past" : ""), onsubmit: (e) => {
    e.preventDefault();
    if (picker.value) location.hash = `#/sku/${encodeURIComponent(sku)}?at=${encodeURIComponent(new Date(picker.value).toISOString())}`;
  } },
  h("strong", { id: "asof-label" }, at ? "As of " + fmtTime(at) : "Now"),
  h("span", { class: "muted" }, "show what the hub knew at"), picker, h("button", { type: "submit" }, "show"),
  at ? h("a", { href: "#/sku/" + encodeURIComponent(sku) }, "back to now") : null,
  h("span", { class: "muted" }, "version " + (inv.version ?? "–")));
  const entries = hist.entries.slice().reverse();
  const change = (e) => {
    const kind = e.set ? "set" : "adjust";
    const q2 = e[kind] || {};
    return kind + " " + Object.entries(q2).map(([k, v]) => `${k} ${kind === "adjust" && v > 0 ? "+" : ""}${v}`).join(", ");
  };
  return [
    h("h1", {}, sku),
    asof,
    h("h2", {}, "Locations"),
    locationsTable(inv),
    h("h2", {}, "Channel quantities"),
    table(["channel", "#quantity"], inv.channels.map((c) => [h("a", { href: "#/channel/" + encodeURIComponent(c.channel) }, c.channel), h("strong", {}, String(c.quantity))])),
    h("h2", {}, `History (newest first, ${entries.length} shown)`),
    table(["received", "outcome", "source", "id", "location", "change", "occurred", "reason / ref", "detail", ""], entries.map((e) => [
      fmtTime(e.received_at), badge(e.outcome), e.source, h("code", {}, e.id), e.location, change(e), fmtTime(e.occurred_at),
      [e.reason, e.ref].filter(Boolean).join(" · ") || "–", e.detail || "",
      h("a", { href: `#/sku/${encodeURIComponent(sku)}?at=${encodeURIComponent(e.received_at)}`, title: "the state right after this entry arrived" }, "as of"),
    ])),
  ];
}

// ---- channels ---------------------------------------------------------------------------------

async function act(channel, body, what) {
  try {
    const r = await call("POST", "/v1/channels/" + encodeURIComponent(channel) + "/replay", body);
    say(`${what}: ${r.replayed} queued again.`, "info");
    render();
  } catch (e) {
    say(e.status === 403 ? `${what} refused: this needs an operator token (this one may only read).` : `${what} failed: ${e.message}`);
  }
}

// An operator stops pushing one sku while a disputed quantity is looked into.
function holdForm(channel) {
  const input = h("input", { type: "text", placeholder: "sku", "aria-label": "sku to hold", "data-field": "hold-sku" });
  const submit = async (ev) => {
    ev.preventDefault();
    const sku = input.value.trim();
    if (!sku) return;
    try {
      await call("POST", "/v1/channels/" + encodeURIComponent(channel) + "/hold", { sku });
      say(`${sku} is held on ${channel}: no pushes until it is released.`, "info");
      render();
    } catch (e) {
      say(e.status === 403 ? `Hold of ${sku} refused: this needs an operator token.` : `Hold of ${sku} failed: ${e.message}`);
    }
  };
  return h("form", { class: "hold", onsubmit: submit }, input, h("button", { class: "act", type: "submit", "data-action": "hold" }, "hold"));
}

async function channelsView() {
  const list = await get("/v1/channels");
  return [
    h("h1", {}, "Channels"),
    table(["channel", "connector", "#pending", "#errors", "#held", "#dead letters", ""], list.channels.map((c) => [
      h("a", { href: "#/channel/" + encodeURIComponent(c.channel) }, c.channel), c.connector || "–", String(c.pending), String(c.errors), String(c.held), String(c.dead_letters),
      h("button", { class: "act", type: "button", "data-action": "replay", onclick: () => act(c.channel, {}, "Replay of " + c.channel) }, "replay"),
    ])),
  ];
}

async function channelView(id) {
  const c = await get("/v1/channels/" + encodeURIComponent(id));
  const lp = c.last_push;
  return [
    h("h1", {}, "Channel " + id),
    h("div", { class: "cards" }, card(c.pending, "pending"), card(c.errors.length, "errors"), card(c.held.length, "held"), card(c.dead_letters.length, "dead letters"),
      card(c.on_override || "–", "on override"), card(c.max_attempts ?? "–", "max attempts")),
    h("h2", {}, "Last push"),
    lp ? h("p", {}, h("a", { href: "#/sku/" + encodeURIComponent(lp.sku) }, lp.sku), ` = ${lp.quantity} (version ${lp.version}) at ${fmtTime(lp.at)}`) : h("p", { class: "muted" }, "No push acknowledged yet."),
    h("p", {}, h("button", { class: "act", type: "button", "data-action": "replay", onclick: () => act(id, {}, "Replay of " + id) }, "replay dead letters and held skus")),
    h("h2", {}, "Errors (waiting to retry)"),
    table(["sku", "#attempts", "error", "at", "next attempt"], c.errors.map((e) => [e.sku, String(e.attempts), e.error, fmtTime(e.at), fmtTime(e.next_attempt_at)])),
    h("h2", {}, "Held (after a channel override, or by an operator)"),
    table(["sku", ""], c.held.map((sku) => [sku, h("button", { class: "act", type: "button", onclick: () => act(id, { sku }, "Release of " + sku) }, "release")])),
    holdForm(id),
    h("h2", {}, "Dead letters"),
    table(["sku", "#version", "#attempts", "error", "at", ""], c.dead_letters.map((d) => [d.sku, String(d.version), String(d.attempts), d.error || "–", fmtTime(d.at),
      h("button", { class: "act", type: "button", onclick: () => act(id, { sku: d.sku }, "Replay of " + d.sku) }, "replay")])),
  ];
}

async function incidentsView(q) {
  const kind = q.get("kind") || "";
  const list = await get("/v1/incidents?limit=200" + (kind ? "&kind=" + encodeURIComponent(kind) : ""));
  const kinds = ["", "override", "conflict", "stale", "covered", "rejected", "channel_override", "dead_letter"];
  return [
    h("h1", {}, "Incidents"),
    h("p", {}, ...kinds.map((k) => h("a", { href: "#/incidents" + (k ? "?kind=" + k : ""), style: "margin-right:10px" + (k === kind ? ";font-weight:700" : "") }, k || "all"))),
    incidentTable(list.incidents),
  ];
}

// ---- routing ----------------------------------------------------------------------------------

let timer = null;
let generation = 0;
function later(f, delay) {
  const g = generation, here = location.hash || "#/";
  clearTimeout(timer);
  timer = setTimeout(() => { if (g === generation) show(f, here); }, delay);
}

// `data-ready` on the body names the address whose view is shown (scripted checks wait for it).
async function show(f, here) {
  const g = generation;
  try {
    const parts = await f();
    if (g !== generation) return;
    view.replaceChildren(...parts);
    document.body.dataset.ready = here;
  } catch (e) {
    if (g !== generation) return;
    if (e.status === 401) {
      view.replaceChildren(h("p", { class: "muted" }, "A token is needed to read the hub."));
      askToken();
    } else {
      view.replaceChildren(h("p", { class: "bad" }, "Could not load this page: " + e.message));
    }
    document.body.dataset.ready = here;
  }
}

function render() {
  generation++;
  clearTimeout(timer);
  delete document.body.dataset.ready;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const q = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", a.getAttribute("href") === "#/" + (parts[0] || ""));
  const routes = {
    "": () => overview(true),
    matrix: matrixView,
    drift: () => driftView(q),
    skus: () => skusView(q),
    sku: () => skuView(parts.slice(1).join("/"), q),
    channels: channelsView,
    channel: () => channelView(parts[1]),
    incidents: () => incidentsView(q),
  };
  const f = routes[parts[0] || ""] || (async () => [h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "overview"))]);
  // Without a token the first read answers 401 and the page asks for one; a hub with
  // authentication off answers anyway.
  show(f, location.hash || "#/");
}

window.addEventListener("hashchange", () => { say(""); render(); });
render();
