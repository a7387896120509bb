// The Switchyard console: plain ES module, no build step, no framework. It uses the router's
// public routes (capabilities, coverage, health, admin config, connections, POST /api/events)
// and, for the live tail, @switchyard/client (client.js, a committed copy of its build). The
// admin key lives in `state.key` only: never stored.

import { SwitchyardClient } from "./client.js";

const $ = (sel) => document.querySelector(sel);
const KEEP = 200;
const WINDOW_S = 60;

const state = {
  key: "",
  caps: null,
  tail: null, // the live tail's SwitchyardClient
  paused: false,
  missedWhilePaused: 0,
  arrivals: [], // [ms, type] for the rates, last WINDOW_S seconds
  emptyConfirmed: null, // the publish form's type and text whose empty required strings were flagged once
};

/** Builds an element: el("td", {class: "x"}, "text", child…). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function headers(extra = {}) {
  const h = { ...extra };
  if (state.key) h.Authorization = `Bearer ${state.key}`;
  return h;
}

/** A request's status and JSON body (null when the body is not JSON). */
async function jsonReply(path, init) {
  const res = await fetch(path, init);
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  return { status: res.status, body };
}

/** GETs a JSON route (with the admin key when `admin`): {status, body}. */
function getJson(path, admin = false) {
  return jsonReply(path, { headers: admin ? headers() : {} });
}

/** POSTs a body (JSON unless said otherwise) with the admin key, if typed: {status, body}. */
function post(path, body, contentType = "application/json") {
  return jsonReply(path, { method: "POST", headers: headers({ "Content-Type": contentType }), body });
}

function errorText(reply) {
  const e = reply.body && reply.body.error;
  return e ? `HTTP ${reply.status} ${e.code}: ${e.message}` : `HTTP ${reply.status}`;
}

// ---- schema checks (capabilities `payload_fields`) ----

function typeMatches(type, value) {
  switch (type) {
    case "string": return typeof value === "string";
    case "integer": return typeof value === "number" && Number.isInteger(value);
    case "number": return typeof value === "number" && Number.isFinite(value);
    case "boolean": return typeof value === "boolean";
    case "object": return typeof value === "object" && value !== null && !Array.isArray(value);
    case "array": return Array.isArray(value);
    default: return true;
  }
}

/** The problems of `payload` against the type's schema: [{field, problem, expected}]. */
export function check(typeName, payload) {
  const entry = state.caps && state.caps.event_registry[typeName];
  if (!entry) return [{ field: "", problem: "unknown type", expected: null }];
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) {
    return [{ field: "", problem: "payload is not an object", expected: "object" }];
  }
  const fields = entry.payload_fields || {};
  const additional = entry.payload_schema ? entry.payload_schema.additionalProperties !== false : true;
  const problems = [];
  for (const [name, f] of Object.entries(fields)) {
    const has = Object.prototype.hasOwnProperty.call(payload, name) && payload[name] !== null;
    if (!has) {
      if (f.required) problems.push({ field: name, problem: "required, missing", expected: f.type });
      continue;
    }
    const value = payload[name];
    if (!typeMatches(f.type, value)) {
      problems.push({ field: name, problem: "wrong type", expected: f.type });
    } else if (Array.isArray(f.enum) && !f.enum.includes(value)) {
      problems.push({ field: name, problem: "not in enum", expected: f.enum.join(", ") });
    }
  }
  // Router-produced types (connection.*) declare no fields: nothing to say about theirs.
  if (Object.keys(fields).length > 0) {
    for (const name of Object.keys(payload)) {
      if (!(name in fields)) {
        problems.push({
          field: name,
          problem: additional ? "not in the schema (allowed: additional_fields)" : "not in the schema",
          expected: null,
        });
      }
    }
  }
  return problems;
}

function problemList(problems) {
  return el("ul", { class: "problems" }, problems.map((p) =>
    el("li", {}, `${p.field || "(payload)"}: ${p.problem}${p.expected ? ` (expected ${p.expected})` : ""}`)));
}

/** Pretty JSON of the payload with flagged top-level fields marked. */
function payloadView(payload, problems) {
  const pre = el("pre", {});
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) {
    pre.append(JSON.stringify(payload, null, 2));
    return pre;
  }
  const bad = new Map(problems.map((p) => [p.field, p]));
  const keys = Object.keys(payload);
  pre.append("{\n");
  keys.forEach((k, i) => {
    const text = `  ${JSON.stringify(k)}: ${JSON.stringify(payload[k], null, 2).replace(/\n/g, "\n  ")}`;
    const p = bad.get(k);
    pre.append(p ? el("span", { class: "flag", title: p.problem, "data-field": k }, text) : text);
    pre.append(i < keys.length - 1 ? ",\n" : "\n");
  });
  for (const p of problems) {
    if (p.field && !(p.field in payload)) pre.append(el("span", { class: "flag", "data-field": p.field }, `  // ${p.field}: ${p.problem}\n`));
  }
  pre.append("}");
  return pre;
}

// ---- live tail (through @switchyard/client: reconnects, recovery, gap reports) ----

function setTailState(text) {
  $("#tail-state").textContent = text;
}

/** What a connect-time `subscribed` reply says: patterns, warnings, recovery per channel. */
function subscribedText(msg) {
  const warnings = (msg.warnings || []).map((w) => `${w.pattern}: ${w.message}`).join("; ");
  const recovery = Object.entries(msg.recovery || {})
    .map(([ch, r]) => (r.recovered ? `${ch} recovered, ${r.replayed} replayed` : `${ch} not recovered (${r.reason})`))
    .join("; ");
  return { warnings, recovery };
}

/** A press of Connect: a fresh tail (new positions) with the form's endpoint, patterns, token. */
function connectTail(ev) {
  if (ev) ev.preventDefault();
  if (state.tail) state.tail.close();
  const endpoint = $("#endpoint").value;
  if (!endpoint) {
    setTailState("no endpoint in the capabilities");
    return;
  }
  const patterns = $("#pattern").value.split(",").map((s) => s.trim()).filter(Boolean);
  const token = $("#token").value;
  const tail = new SwitchyardClient({
    url: location.origin,
    endpoint,
    events: patterns,
    token: () => token || undefined,
    backoff: { initialMs: 500, maxMs: 5000 },
  });
  state.tail = tail;
  tail.on("*", onEvent);
  tail.on("state", (s) => {
    if (s !== "connected") setTailState(s === "connecting" ? "connecting" : "disconnected");
  });
  tail.on("closed", (c) => setTailState(`disconnected (${c.code}${c.reason ? ` ${c.reason}` : ""}); ${tail.state === "disconnected" ? "stopped" : "reconnecting"}`));
  tail.on("gap", (g) => notice(`history lost for ${g.channels.join(", ")} (${g.reason}): events in between are not shown`));
  tail.on("error", (e) => setTailState(`error: ${e.payload ? `${e.payload.code} ${e.payload.message}` : e.message}`));
  tail.on("control", (msg) => {
    if (msg.type === "subscribed") {
      const { warnings, recovery } = subscribedText(msg);
      setTailState(`connected (${tail.transport}): ${(msg.events || []).join(", ")}${warnings ? ` (warnings: ${warnings})` : ""}${recovery ? ` — ${recovery}` : ""}`);
      if (recovery) notice(`reconnected: ${recovery}`);
    } else if (msg.type === "connection.lagged") {
      notice(`lagged: the router dropped ${msg.payload.dropped} event(s) for this tail; recovering from history`);
    }
  });
}

/** The live tail's connection id, to mark it in the connections view. */
function tailId() {
  return state.tail ? state.tail.connectionId : null;
}

/** Puts `node` at the top of the tail, which keeps the newest KEEP lines. */
function prependToTail(node) {
  const list = $("#events");
  list.prepend(node);
  while (list.children.length > KEEP) list.lastElementChild.remove();
}

/** A line in the tail that is not an event (reconnects, lag). */
function notice(text) {
  prependToTail(el("div", { class: "notice" }, `${new Date().toISOString()} ${text}`));
}

function onEvent(msg) {
  state.arrivals.push([Date.now(), msg.type]);
  if (state.paused) {
    state.missedWhilePaused += 1;
    $("#pause").textContent = `Resume (${state.missedWhilePaused} not shown)`;
    return;
  }
  const problems = check(msg.type, msg.payload);
  const entry = state.caps && state.caps.event_registry[msg.type];
  const node = el("div", { class: problems.length ? "event invalid" : "event", "data-type": msg.type },
    el("div", { class: "head" },
      el("span", { class: "type" }, msg.type),
      el("span", { class: "position" }, `${msg.channel}:${msg.sequence}`),
      el("span", { class: "time" }, msg.timestamp || ""),
      msg.correlation_id ? el("span", { class: "time" }, `correlation ${msg.correlation_id}`) : null,
      entry && entry.deprecated ? el("span", { class: "deprecated" }, `deprecated: ${entry.deprecated}`) : null),
    payloadView(msg.payload, problems),
    problems.length ? problemList(problems) : null);
  prependToTail(node);
}

// ---- rates ----

const COLOURS = ["#1f5fa8", "#c4501b", "#1e7a34", "#7b3fa0", "#a8891f", "#1f8fa8", "#a81f5f", "#555"];

function drawRates() {
  const now = Date.now();
  const from = now - WINDOW_S * 1000;
  state.arrivals = state.arrivals.filter(([t]) => t >= from);
  const per = new Map(); // type -> counts per second, oldest first
  for (const [t, type] of state.arrivals) {
    if (!per.has(type)) per.set(type, new Array(WINDOW_S).fill(0));
    const slot = Math.min(WINDOW_S - 1, Math.floor((t - from) / 1000));
    per.get(type)[slot] += 1;
  }
  const svg = $("#rates-chart");
  const W = 720, H = 200, L = 40, B = 20, T = 10, R = 10;
  const max = Math.max(1, ...[...per.values()].flatMap((c) => c));
  const ns = "http://www.w3.org/2000/svg";
  const s = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  svg.replaceChildren();
  svg.append(s("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#888" }));
  svg.append(s("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#888" }));
  svg.append(s("text", { x: 4, y: T + 10, "font-size": 11, fill: "#444" }, `${max}/s`));
  svg.append(s("text", { x: 4, y: H - B, "font-size": 11, fill: "#444" }, "0"));
  svg.append(s("text", { x: L, y: H - 4, "font-size": 11, fill: "#444" }, "-60 s"));
  svg.append(s("text", { x: W - R - 24, y: H - 4, "font-size": 11, fill: "#444" }, "now"));
  const x = (i) => L + ((W - L - R) * i) / (WINDOW_S - 1);
  const y = (v) => H - B - ((H - B - T) * v) / max;
  const body = $("#rates-table tbody");
  body.replaceChildren();
  [...per.entries()].sort(([a], [b]) => a.localeCompare(b)).forEach(([type, counts], i) => {
    const colour = COLOURS[i % COLOURS.length];
    const points = counts.map((v, j) => `${x(j).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(s("polyline", { points, fill: "none", stroke: colour, "stroke-width": 2, "data-type": type }));
    svg.append(s("text", { x: L + 8, y: T + 14 + 14 * i, "font-size": 12, fill: colour }, type));
    const total = counts.reduce((a, b) => a + b, 0);
    body.append(el("tr", { "data-type": type }, el("td", {}, type), el("td", {}, total), el("td", {}, (total / WINDOW_S).toFixed(2))));
  });
  if (per.size === 0) body.append(el("tr", {}, el("td", { colspan: 3 }, "no events in the last 60 s (connect the live tail)")));
}

// ---- coverage ----

async function loadCoverage() {
  const out = $("#coverage");
  const reply = await getJson("/api/websocket/coverage");
  if (reply.status !== 200) {
    out.replaceChildren(el("p", { class: "error" }, errorText(reply)));
    return;
  }
  const c = reply.body;
  const list = (title, id, items, render = (x) => (typeof x === "string" ? x : JSON.stringify(x))) =>
    el("div", { id },
      el("h3", {}, `${title} (${items.length})`),
      items.length ? el("ul", {}, items.map((i) => el("li", {}, render(i)))) : el("p", { class: "hint" }, "none"));
  const types = Object.entries(c.types || {});
  out.replaceChildren(
    list("Produced without subscribers", "cov-no-subscribers", c.produced_without_subscribers || []),
    list("Registered, never produced", "cov-never-produced", c.registered_never_produced || []),
    list("Patterns matching nothing", "cov-patterns", c.patterns_matching_nothing || []),
    list("Unknown endpoints requested", "cov-endpoints", c.unknown_endpoints_requested || []),
    el("h3", {}, "Per type"),
    el("table", {},
      el("thead", {}, el("tr", {}, ["type", "produced", "delivered", "subscribers", "last produced"].map((h) => el("th", {}, h)))),
      el("tbody", {}, types.map(([t, v]) => el("tr", { "data-type": t }, el("td", {}, t), el("td", {}, v.produced), el("td", {}, v.delivered),
        el("td", {}, v.subscribers), el("td", {}, v.last_produced_at || "never"))))),
  );
  for (const k of ["unanswered", "nodes_unanswered"]) {
    if (c[k]) out.append(el("p", { class: "error" }, `${k}: ${JSON.stringify(c[k])}`));
  }
}

// ---- health and config ----

async function loadHealth() {
  const out = $("#health");
  const reply = await getJson("/health");
  const h = reply.body;
  if (!h) {
    out.replaceChildren(el("p", { class: "error" }, errorText(reply)));
  } else {
    const plugins = Object.entries(h.plugins || {});
    out.replaceChildren(
      el("table", {}, el("tbody", {},
        el("tr", {}, el("th", {}, "status"), el("td", { id: "health-status", class: h.status === "ok" ? "ok" : "error" }, h.status)),
        el("tr", {}, el("th", {}, "version"), el("td", {}, h.version)),
        el("tr", {}, el("th", {}, "uptime"), el("td", {}, `${h.uptime_s} s`)),
        el("tr", {}, el("th", {}, "config version"), el("td", { id: "config-version" }, h.config_version)))),
      el("h3", {}, "Plugins"),
      plugins.length
        ? el("table", {},
          el("thead", {}, el("tr", {}, ["plugin", "state", "restarts", "last error"].map((x) => el("th", {}, x)))),
          el("tbody", {}, plugins.map(([name, p]) => el("tr", {}, el("td", {}, name), el("td", { class: p.state === "failed" ? "error" : "" }, p.state),
            el("td", {}, p.restarts ?? ""), el("td", {}, p.last_error ?? "")))))
        : el("p", { class: "hint" }, "no plugins"),
      el("h3", {}, "Cluster"),
      el("pre", { class: "json" }, JSON.stringify(h.cluster, null, 2)),
    );
  }
  const cfg = $("#config");
  const c = await getJson("/api/admin/config", true);
  if (c.status !== 200) {
    cfg.replaceChildren(el("p", { class: "error" }, `${errorText(c)} (type the admin key above to see the config record)`));
    return;
  }
  const b = c.body;
  cfg.replaceChildren(
    el("table", {}, el("tbody", {},
      el("tr", {}, el("th", {}, "version"), el("td", {}, b.config_version)),
      el("tr", {}, el("th", {}, "loaded at"), el("td", {}, b.loaded_at)),
      el("tr", {}, el("th", {}, "source"), el("td", {}, b.source)))),
    el("h3", {}, "Last reload"),
    b.last_reload ? el("pre", { class: "json", id: "last-reload" }, JSON.stringify(b.last_reload, null, 2)) : el("p", { class: "hint" }, "no reload since start"),
    el("h3", {}, `Warnings (${(b.warnings || []).length})`),
    (b.warnings || []).length ? el("ul", {}, b.warnings.map((w) => el("li", {}, typeof w === "string" ? w : JSON.stringify(w)))) : el("p", { class: "hint" }, "none"),
  );
}

// ---- connections ----

async function loadConnections() {
  const out = $("#connections");
  out.replaceChildren();
  await connectionsPage(out, null);
}

/** Appends the page of connections after `after` (the previous page's `next`). */
async function connectionsPage(out, after) {
  const query = after ? `?after=${encodeURIComponent(after)}` : "";
  const reply = await getJson(`/api/websocket/connections${query}`, true);
  if (reply.status !== 200) {
    out.append(el("p", { class: "error" }, `${errorText(reply)} (this view needs the admin key)`));
    return;
  }
  const rows = reply.body.connections || [];
  for (const k of ["missing_nodes", "cluster_unreachable"]) {
    if (reply.body[k]) out.append(el("p", { class: "error" }, `${k}: ${JSON.stringify(reply.body[k])}`));
  }
  if (rows.length === 0 && !after) {
    out.append(el("p", { class: "hint" }, "no connections"));
    return;
  }
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v) => (v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
  out.append(
    el("table", { id: after ? undefined : "connections-table" },
      el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c)), el("th", {}, ""))),
      el("tbody", {}, rows.map((r) => el("tr", { class: r.id === tailId() ? "self" : undefined, title: r.id === tailId() ? "this console's live tail" : undefined, "data-id": r.id },
        cols.map((c) => el("td", {}, cell(r[c]))), el("td", {}, disconnectButton(r.id)))))),
  );
  if (reply.body.next) {
    const more = el("button", {}, "Next page");
    more.addEventListener("click", () => {
      more.remove();
      connectionsPage(out, reply.body.next);
    });
    out.append(more);
  }
}

/** A Disconnect button that asks once more before closing the connection (1008). */
function disconnectButton(id) {
  const button = el("button", { class: "disconnect" }, "Disconnect");
  button.addEventListener("click", async () => {
    if (!button.classList.contains("confirm")) {
      button.classList.add("confirm");
      button.textContent = "Really disconnect?";
      return;
    }
    button.disabled = true;
    const reply = await post("/api/admin/disconnect", JSON.stringify({ connection_id: id }));
    const text = reply.status === 200 ? `closed ${reply.body.closed}` : errorText(reply);
    button.replaceWith(el("span", { class: reply.status === 200 ? "ok" : "error" }, text));
  });
  return button;
}

// ---- reload ----

/** The non-empty parts of a reload's `impact`, a line each. */
function impactLines(impact) {
  const lines = [];
  const empty = (v) => v === null || v === 0 || (Array.isArray(v) ? v.length === 0 : typeof v === "object" && Object.values(v).every(empty));
  for (const [key, value] of Object.entries(impact || {})) {
    if (!empty(value)) lines.push(`${key.replace(/_/g, " ")}: ${typeof value === "object" ? JSON.stringify(value) : value}`);
  }
  return lines.length ? lines : ["no change to channels, types, endpoints, connections or plugins"];
}

/** Shows a reload reply (preview or applied): version, warnings, impact, or the refusal. */
function showReload(reply, applied) {
  const out = $("#reload-result");
  if (reply.status !== 200) {
    const errors = (reply.body && reply.body.error && reply.body.error.errors) || [];
    out.replaceChildren(el("div", {}, el("p", { class: "error", id: "reload-refused" }, errorText(reply)),
      errors.length ? el("ul", {}, errors.map((e) => el("li", {}, `${e.key}${e.line ? ` (line ${e.line})` : ""}: ${e.problem}`))) : null));
    return;
  }
  const b = reply.body;
  out.replaceChildren(el("div", {},
    el("p", { class: "ok", id: applied ? "reload-applied" : "reload-preview" },
      applied ? `Applied: config version ${b.config_version}` : `Preview against config version ${b.config_version} (nothing applied)`),
    el("ul", { class: "impact" }, impactLines(b.impact).map((l) => el("li", {}, l))),
    (b.warnings || []).length ? el("p", {}, `warnings: ${b.warnings.map((w) => (typeof w === "string" ? w : JSON.stringify(w))).join("; ")}`) : null,
    (b.restart_required || []).length ? el("p", { class: "error" }, `needs a restart: ${b.restart_required.join(", ")}`) : null,
  ));
  if (applied) loadHealth();
}

/** Preview: the candidate text in the box, or (empty box) the file on disk. */
async function previewReload() {
  const candidate = $("#reload-candidate").value;
  const reply = candidate.trim()
    ? await post("/api/admin/reload?dry_run=true", candidate, "application/toml")
    : await post("/api/admin/reload?dry_run=true", "{}");
  showReload(reply, false);
}

async function applyReload() {
  showReload(await post("/api/admin/reload", "{}"), true);
}

// ---- publish ----

function example(f) {
  if (Array.isArray(f.enum) && f.enum.length) return f.enum[0];
  return { string: "", integer: 0, number: 0, boolean: false, object: {}, array: [] }[f.type] ?? null;
}

/** The type's required fields, each with a value of its type (an enum's first value, else "" or 0…).
 * Optional fields are left out: a form published unedited must not send made-up values for them. */
function prefill() {
  const entry = state.caps && state.caps.event_registry[$("#publish-type").value];
  const payload = {};
  for (const [name, f] of Object.entries((entry && entry.payload_fields) || {})) {
    if (f.required) payload[name] = example(f);
  }
  $("#publish-payload").value = JSON.stringify(payload, null, 2);
  state.emptyConfirmed = null;
}

/** Required string fields (without an enum) left as "": the schema accepts them (it sets no minimum
 * length), so check() passes them, but they are most likely the prefill left unedited. */
function emptyRequired(typeName, payload) {
  const fields = (state.caps.event_registry[typeName] || {}).payload_fields || {};
  return Object.entries(fields)
    .filter(([name, f]) => f.required && f.type === "string" && !Array.isArray(f.enum) && payload[name] === "")
    .map(([name]) => name);
}

async function publish(ev) {
  ev.preventDefault();
  const out = $("#publish-result");
  const type = $("#publish-type").value;
  let payload;
  try {
    payload = JSON.parse($("#publish-payload").value);
  } catch (e) {
    out.replaceChildren(el("p", { class: "error", id: "publish-refused" }, `Not sent: the payload is not JSON (${e.message})`));
    return;
  }
  const problems = check(type, payload).filter((p) => !p.problem.includes("allowed"));
  if (problems.length) {
    out.replaceChildren(el("p", { class: "error", id: "publish-refused" }, `Not sent: the payload does not match ${type}'s schema`), problemList(problems));
    return;
  }
  // Empty required strings are valid, so they are flagged, not refused: a second click sends them.
  const empty = emptyRequired(type, payload);
  const asTyped = `${type}\n${$("#publish-payload").value}`;
  if (empty.length && state.emptyConfirmed !== asTyped) {
    state.emptyConfirmed = asTyped;
    out.replaceChildren(el("p", { class: "error", id: "publish-empty" },
      `Not sent yet: required ${empty.length > 1 ? "fields" : "field"} ${empty.join(", ")} ${empty.length > 1 ? "are" : "is"} empty. ` +
      "The schema accepts an empty string, so the router would publish it: fill in a value, or click Check and publish again to send it as it is."));
    return;
  }
  const correlation = $("#publish-correlation").value.trim();
  const reply = await post("/api/events", JSON.stringify(correlation ? { type, payload, correlation_id: correlation } : { type, payload }));
  const sent = reply.status === 202;
  out.replaceChildren(
    el("p", { class: sent ? "ok" : "error", id: sent ? "publish-sent" : "publish-error" },
      sent ? "Published" : `Refused by the router: HTTP ${reply.status}`),
    el("pre", { class: "json" }, JSON.stringify(reply.body, null, 2)),
  );
}

// ---- views and start ----

const loaders = { rates: drawRates, coverage: loadCoverage, health: loadHealth, connections: loadConnections };
/** Views that fetch from the router, fetched again every REFRESH_MS while shown. */
const REFRESH_MS = 3000;
const refreshers = { coverage: loadCoverage, health: loadHealth, connections: loadConnections };

/** The shown view, if auto-refresh is on and refreshing would not lose what the operator is doing. */
function refreshShown() {
  if (!$("#auto-refresh").checked) return;
  const view = document.querySelector("nav button.active").dataset.view;
  // A pending "Really disconnect?" or a second page of connections would be wiped by a refresh.
  if (view === "connections" && document.querySelector("#connections .confirm, #connections table + table")) return;
  if (refreshers[view]) refreshers[view]();
}

function show(view) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.view === view);
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== `view-${view}`;
  if (loaders[view]) loaders[view]();
  location.hash = view;
}

async function start() {
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.view));
  $("#key").addEventListener("input", (e) => { state.key = e.target.value.trim(); });
  $("#tail-form").addEventListener("submit", connectTail);
  $("#coverage-refresh").addEventListener("click", loadCoverage);
  $("#health-refresh").addEventListener("click", loadHealth);
  $("#connections-refresh").addEventListener("click", loadConnections);
  $("#reload-preview-button").addEventListener("click", previewReload);
  $("#reload-apply-button").addEventListener("click", applyReload);
  $("#publish-form").addEventListener("submit", publish);
  $("#pause").addEventListener("click", () => {
    state.paused = !state.paused;
    state.missedWhilePaused = 0;
    $("#pause").textContent = state.paused ? "Resume" : "Pause";
  });
  $("#clear").addEventListener("click", () => {
    $("#events").replaceChildren();
  });
  $("#publish-type").addEventListener("change", prefill);
  const reply = await getJson("/api/websocket/capabilities");
  if (reply.status !== 200) {
    setTailState(`capabilities: ${errorText(reply)}`);
    return;
  }
  state.caps = reply.body;
  $("#endpoint").replaceChildren(...(state.caps.endpoints || []).map((e) => el("option", { value: e.path }, e.path)));
  const publishable = Object.entries(state.caps.event_registry).filter(([, e]) => e.producer !== "router").map(([n]) => n).sort();
  $("#publish-type").replaceChildren(...publishable.map((n) => el("option", { value: n }, n)));
  prefill();
  setInterval(() => { if (!$("#view-rates").hidden) drawRates(); }, 1000);
  setInterval(refreshShown, REFRESH_MS);
  connectTail();
  const initial = location.hash.slice(1);
  if (initial && $(`#view-${initial}`)) show(initial);
  document.body.dataset.ready = "true";
}

start();
