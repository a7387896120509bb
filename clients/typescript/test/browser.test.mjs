// The built SDK in a real browser: Debian's chromium driven by playwright-core. A tiny page
// (served here, on another port than the router: the router allows that Origin) imports
// dist/index.js, counts typed events, reconnects after a dropped connection without a gap,
// and (with the server's SSE) falls back to SSE when WebSockets are refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFile, mkdir, stat } from "node:fs/promises";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startRouter, publish, alert, job, disconnect, freePort, sleep, sseAvailable, SSE_MISSING, launchChromium } from "./helpers.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(root, "test-output");

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>switchyard client</title>
<style>body{font:16px sans-serif;margin:2em;background:#fff}td{padding:4px 12px;border:1px solid #888}</style></head>
<body><h1>@switchyard/client in a browser</h1>
<table><tr><td>state</td><td id="state">-</td></tr><tr><td>transport</td><td id="transport">-</td></tr>
<tr><td>alerts</td><td id="alerts">0</td></tr><tr><td>jobs</td><td id="jobs">0</td></tr><tr><td>gaps</td><td id="gaps">0</td></tr></table>
<script type="module">
import { SwitchyardClient } from "/dist/index.js";
const q = new URLSearchParams(location.search);
class RefusedWebSocket {
  constructor() { this.readyState = 0; setTimeout(() => { this.onerror?.({}); this.onclose?.({ code: 1006, reason: "" }); }, 5); }
  send() { throw new Error("not open"); }
  close() {}
}
const client = new SwitchyardClient({
  url: q.get("router"), events: ["alert.*", "job.*"],
  WebSocket: q.get("ws") === "refuse" ? RefusedWebSocket : undefined,
  backoff: { initialMs: 100, maxMs: 1000 },
});
const seen = (window.seen = { alerts: [], jobs: [], gaps: [], closed: [] });
const show = () => {
  document.getElementById("state").textContent = client.state;
  document.getElementById("transport").textContent = client.transport ?? "-";
  document.getElementById("alerts").textContent = seen.alerts.length + " (seq " + seen.alerts.join(",") + ")";
  document.getElementById("jobs").textContent = String(seen.jobs.length);
  document.getElementById("gaps").textContent = String(seen.gaps.length);
};
client.on("alert.*", (e) => { seen.alerts.push(e.sequence); show(); });
client.on("job.progress", (e) => { seen.jobs.push(e.payload.percent); show(); });
client.on("gap", (g) => { seen.gaps.push(g); show(); });
client.on("closed", (c) => { seen.closed.push(c.code); });
client.on("state", show);
window.client = client;
</script></body></html>`;

async function servePage() {
  const port = await freePort();
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path === "/") {
      res.writeHead(200, { "Content-Type": "text/html" });
      return res.end(PAGE);
    }
    if (path.startsWith("/dist/") && !path.includes("..")) {
      try {
        const body = await readFile(join(root, path));
        res.writeHead(200, { "Content-Type": path.endsWith(".js") ? "text/javascript" : "application/json" });
        return res.end(body);
      } catch {}
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { origin: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) };
}

async function setup(t, server = "") {
  const page = await servePage();
  t.after(() => page.close());
  const router = await startRouter({ auth: `mode = "none"\nallowed_origins = ["${page.origin}"]`, server });
  t.after(() => router.stop());
  const browser = await launchChromium(t);
  const tab = await browser.newPage({ viewport: { width: 800, height: 400 } });
  const errors = [];
  tab.on("pageerror", (e) => errors.push(String(e)));
  return { page, router, tab, errors };
}

async function dropAndRecover(router, tab, transport) {
  await tab.waitForFunction(() => window.client?.state === "connected", null, { timeout: 10_000 });
  assert.equal(await tab.evaluate(() => window.client.transport), transport);
  await publish(router.url, [alert("a1"), job("j1"), alert("a2")]);
  await tab.waitForFunction(() => window.seen.alerts.length === 2 && window.seen.jobs.length === 1, null, { timeout: 10_000 });
  const id = await tab.evaluate(() => window.client.connectionId);
  await disconnect(router.url, id);
  await publish(router.url, [alert("a3"), alert("a4")]);
  await tab.waitForFunction((id) => window.client.state === "connected" && window.client.connectionId !== id, id, { timeout: 10_000 });
  await tab.waitForFunction(() => window.seen.alerts.length === 4, null, { timeout: 10_000 });
  await sleep(100);
  const seen = await tab.evaluate(() => window.seen);
  assert.deepEqual(seen.alerts, [1, 2, 3, 4], "recovered without gap or duplicate");
  assert.deepEqual(seen.gaps, []);
}

async function screenshot(tab, name) {
  await mkdir(outDir, { recursive: true });
  const file = join(outDir, name);
  await tab.screenshot({ path: file });
  const { size } = await stat(file);
  assert.ok(size > 5000, `screenshot ${file} is ${size} bytes: blank?`);
  const text = await tab.textContent("#alerts");
  assert.match(text, /^4 /, "the page shows the counts");
}

test("browser: typed events over WebSocket, reconnect after a dropped connection without a gap", async (t) => {
  const { page, router, tab, errors } = await setup(t);
  await tab.goto(`${page.origin}/?router=${encodeURIComponent(router.url)}`);
  await dropAndRecover(router, tab, "websocket");
  await screenshot(tab, "browser-websocket.png");
  assert.deepEqual(errors, []);
});

test("browser: falls back to SSE when WebSockets are refused (needs the server's SSE)", async (t) => {
  const { page, router, tab, errors } = await setup(t);
  const probe = await sseAvailable(router.url);
  assert.ok(probe.ok, SSE_MISSING(probe));
  await tab.goto(`${page.origin}/?ws=refuse&router=${encodeURIComponent(router.url)}`);
  await dropAndRecover(router, tab, "sse");
  await screenshot(tab, "browser-sse.png");
  assert.deepEqual(errors, []);
});

test("browser: an idle SSE stream is not taken for dead: EventSource hides its `: ping` comments", async (t) => {
  const { page, router, tab, errors } = await setup(t, "heartbeat_interval_s = 1");
  await tab.goto(`${page.origin}/?ws=refuse&router=${encodeURIComponent(router.url)}`);
  await tab.waitForFunction(() => window.client?.state === "connected", null, { timeout: 10_000 });
  assert.equal(await tab.evaluate(() => window.client.transport), "sse");
  const id = await tab.evaluate(() => window.client.connectionId);
  // Nothing published for over 3 heartbeat intervals: the router writes `: ping` every second.
  await sleep(3500);
  const after = await tab.evaluate(() => ({ id: window.client.connectionId, closed: window.seen.closed }));
  assert.deepEqual(after.closed, [], "the stream was not closed");
  assert.equal(after.id, id, "the same stream");
  assert.deepEqual(errors, []);
});
