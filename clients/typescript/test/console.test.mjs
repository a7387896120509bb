// The router's web console (/console, docs/operations.md "Console") in a real browser: Debian's
// chromium driven by playwright-core opens http://ROUTER/console (served by the router itself,
// files built into the binary) and goes through each view: the live tail shows published events
// and marks a field outside the type's schema, the rates, the coverage gaps, the health and config
// version, the connections, and the publish form that refuses a payload breaking the schema
// without sending it and sends a valid one that a separate WebSocket client receives.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, stat } from "node:fs/promises";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { startRouter, config, publish, alert, job, sleep, until, launchChromium } from "./helpers.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(root, "test-output");

// A type that accepts fields it does not declare (`additional_fields = true`), so the router
// publishes a payload with an extra field and the console can honestly mark it as outside the
// schema. (The router refuses every other schema break at publish time.) helpers.config() puts
// the `server` text right after `[server]`; a new `[[event_types]]` table there is valid TOML.
const NOTE_TYPE = `
[[event_types]]
name = "note.posted"
channel = "alerts"
description = "A free-form note"
additional_fields = true
[event_types.payload]
text = { type = "string", required = true }
`;

// A type the reload preview adds.
const INCIDENT_TYPE = `
[[event_types]]
name = "incident.opened"
channel = "alerts"
description = "An incident opened"
[event_types.payload]
id = { type = "string", required = true }
`;

async function screenshot(tab, name, expected) {
  await mkdir(outDir, { recursive: true });
  const file = join(outDir, `console-${name}.png`);
  await tab.screenshot({ path: file, fullPage: true });
  const { size } = await stat(file);
  assert.ok(size > 8000, `screenshot ${file} is ${size} bytes: blank?`);
  const text = await tab.textContent("body");
  for (const e of expected) assert.ok(text.includes(e), `the ${name} view should show ${JSON.stringify(e)}`);
}

/** A plain WebSocket client (the `ws` package) collecting events, its id and its close code. */
async function wsClient(url, events) {
  const socket = new WebSocket(`${url.replace("http", "ws")}/ws/events?events=${encodeURIComponent(events)}`);
  const client = { got: [], id: null, closed: null, close: () => socket.close() };
  socket.on("message", (d) => {
    const m = JSON.parse(String(d));
    if (m.type === "connection.established") client.id = m.payload.connection_id;
    if (m.sequence !== undefined) client.got.push(m);
  });
  socket.on("close", (code) => (client.closed = code));
  await new Promise((res, rej) => {
    socket.once("open", res);
    socket.once("error", rej);
  });
  await until(() => client.id, "connection.established");
  return client;
}

test("the console's views in a browser", async (t) => {
  const router = await startRouter({ server: NOTE_TYPE });
  t.after(() => router.stop());
  const browser = await launchChromium(t);
  const tab = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  const pageErrors = [];
  tab.on("pageerror", (e) => pageErrors.push(String(e)));
  await tab.goto(`${router.url}/console`);
  await tab.waitForSelector("body[data-ready=true]");
  // The page names its own (empty) icon, so a browser does not ask for /favicon.ico, a 404.
  // (Headless Chromium asks for none either way, so the head is what is checked.)
  assert.equal(await tab.getAttribute('link[rel="icon"]', "href"), "data:,");
  await tab.waitForFunction(() => document.querySelector("#tail-state").textContent.startsWith("connected"));

  await t.test("the live tail shows published events and marks a field outside the schema", async () => {
    await publish(router.url, [alert("a-1", "high"), job("j-1")]);
    await publish(router.url, { type: "note.posted", payload: { text: "hello", mood: "fine" } });
    await tab.waitForSelector('.event[data-type="alert.created"]');
    const head = await tab.textContent('.event[data-type="alert.created"] .head');
    assert.match(head, /alert\.created\s*alerts:1/);
    assert.match(await tab.textContent('.event[data-type="alert.created"] pre'), /"severity": "high"/);
    assert.equal(await tab.$$eval('.event[data-type="alert.created"] .flag', (n) => n.length), 0, "a valid payload has no marks");
    const flag = await tab.waitForSelector('.event[data-type="note.posted"] .flag[data-field="mood"]');
    assert.match(await flag.textContent(), /"mood": "fine"/);
    assert.match(await tab.textContent('.event[data-type="note.posted"] .problems'), /mood: not in the schema/);
    await screenshot(tab, "tail", ["alert.created", "job.progress", "note.posted", "mood: not in the schema"]);
  });

  await t.test("the rates view counts events per type", async () => {
    await tab.click('nav button[data-view="rates"]');
    await tab.waitForSelector('#rates-table tr[data-type="alert.created"]');
    assert.equal(await tab.$$eval("#rates-chart polyline", (n) => n.length), 3);
    assert.equal(await tab.textContent('#rates-table tr[data-type="job.progress"] td:nth-child(2)'), "1");
    await screenshot(tab, "rates", ["alert.created", "job.progress", "note.posted"]);
  });

  await t.test("the coverage view shows a type never produced", async () => {
    await tab.click('nav button[data-view="coverage"]');
    await tab.waitForSelector("#cov-never-produced li");
    const never = await tab.$$eval("#cov-never-produced li", (n) => n.map((x) => x.textContent));
    assert.deepEqual(never, ["alert.resolved"]);
    await screenshot(tab, "coverage", ["Registered, never produced (1)", "alert.resolved", "Patterns matching nothing"]);
  });

  await t.test("the coverage view refreshes by itself", async () => {
    const produced = '#coverage tr[data-type="job.progress"] td:nth-child(2)';
    assert.equal(await tab.textContent(produced), "1");
    await publish(router.url, job("j-2"));
    await tab.waitForFunction((sel) => document.querySelector(sel).textContent === "2", produced, { timeout: 10_000 });
  });

  await t.test("the health view shows the status and the config version", async () => {
    await tab.click('nav button[data-view="health"]');
    await tab.waitForSelector("#config-version");
    assert.equal(await tab.textContent("#config-version"), "1");
    assert.equal(await tab.textContent("#health-status"), "ok");
    // The admin config record (open on loopback in auth mode none).
    await tab.waitForFunction(() => document.querySelector("#config").textContent.includes("loaded at"));
    await screenshot(tab, "health", ["config version", "Plugins", "Cluster", "Last reload", "Warnings (0)"]);
  });

  await t.test("the connections view lists the console's own connection", async () => {
    await tab.click('nav button[data-view="connections"]');
    await tab.waitForSelector("#connections-table tbody tr");
    // The console's own live tail, marked as such.
    await tab.waitForSelector("#connections-table tbody tr.self");
    await screenshot(tab, "connections", ["/ws/events"]);
  });

  await t.test("the connections view disconnects a connection after asking once more", async () => {
    const victim = await wsClient(router.url, "*");
    await tab.click('nav button[data-view="connections"]');
    const button = `#connections-table tr[data-id="${victim.id}"] button.disconnect`;
    await tab.waitForSelector(button, { timeout: 10_000 }); // the auto-refresh brings it in
    await tab.uncheck("#auto-refresh"); // so that the row stays to show the result
    await tab.click(button);
    assert.equal(await tab.textContent(`#connections-table tr[data-id="${victim.id}"] button.confirm`), "Really disconnect?");
    await sleep(200);
    assert.equal(victim.closed, null, "the first click only asks");
    await tab.click(button);
    await until(() => victim.closed, "the connection to close");
    assert.equal(victim.closed, 1008);
    await tab.waitForFunction((sel) => /closed 1/.test(document.querySelector(sel).textContent), `#connections-table tr[data-id="${victim.id}"]`);
    await tab.check("#auto-refresh");
  });

  await t.test("the health view previews a candidate reload and applies the file on disk", async () => {
    await tab.click('nav button[data-view="health"]');
    const candidate = config({ port: router.port, server: NOTE_TYPE }) + INCIDENT_TYPE;
    await tab.fill("#reload-candidate", candidate);
    await tab.click("#reload-preview-button");
    await tab.waitForSelector("#reload-preview");
    assert.match(await tab.textContent("#reload-preview"), /Preview against config version 1 \(nothing applied\)/);
    assert.match(await tab.textContent("#reload-result .impact"), /types added: \["incident\.opened"\]/);
    assert.ok(!(await tab.textContent("#reload-result")).includes("null"), "nothing missing is printed");
    await screenshot(tab, "reload", ["Preview reload", "types added"]);
    await tab.fill("#reload-candidate", candidate.replace('name = "jobs"', 'name = "jobs"\nslow_consumer = "drop_newest"'));
    await tab.click("#reload-preview-button");
    await tab.waitForSelector("#reload-refused");
    assert.match(await tab.textContent("#reload-result"), /422 invalid_config[\s\S]*must be one of drop_oldest, disconnect/);
    // Nothing was applied by either preview.
    assert.equal((await (await fetch(`${router.url}/api/websocket/capabilities`)).json()).event_registry["incident.opened"], undefined);
    await tab.fill("#reload-candidate", "");
    await tab.click("#reload-apply-button");
    await tab.waitForSelector("#reload-applied");
    assert.match(await tab.textContent("#reload-result"), /no change to channels/);
    await tab.waitForFunction(() => document.querySelector("#last-reload") !== null);
  });

  await t.test("the publish form refuses a payload breaking the schema and sends a valid one", async () => {
    const listener = await wsClient(router.url, "alert.*");
    t.after(() => listener.close());
    await tab.click('nav button[data-view="publish"]');
    await tab.selectOption("#publish-type", "alert.created");
    // Only the required fields are prefilled (not the optional `count`); published unedited, the
    // empty required `id` is flagged first, and nothing is sent.
    const prefilled = JSON.parse(await tab.inputValue("#publish-payload"));
    assert.deepEqual(prefilled, { id: "", severity: "low" });
    await tab.click("#publish-send");
    await tab.waitForSelector("#publish-empty");
    assert.match(await tab.textContent("#publish-result"), /required field id is empty/);
    await tab.fill("#publish-payload", JSON.stringify({ id: "p-1" }));
    await tab.click("#publish-send");
    await tab.waitForSelector("#publish-refused");
    assert.match(await tab.textContent("#publish-result"), /severity: required, missing/);
    await tab.fill("#publish-payload", JSON.stringify({ id: "p-1", severity: "urgent" }));
    await tab.click("#publish-send");
    await tab.waitForFunction(() => document.querySelector("#publish-result").textContent.includes("not in enum"));
    await sleep(300);
    assert.equal(listener.got.length, 0, "a refused payload is not sent");
    await tab.fill("#publish-payload", JSON.stringify({ id: "p-2", severity: "critical" }));
    await tab.fill("#publish-correlation", "console-corr");
    await tab.click("#publish-send");
    await tab.waitForSelector("#publish-sent");
    assert.match(await tab.textContent("#publish-result"), /"sequence"/);
    await until(() => listener.got.length > 0, "the published event at the other client");
    assert.deepEqual(listener.got.map((e) => e.payload), [{ id: "p-2", severity: "critical" }]);
    assert.equal(listener.got[0].correlation_id, "console-corr");
    await screenshot(tab, "publish", ["Published", "Check and publish"]);
  });

  await t.test("the live tail reconnects after a router restart and says history was lost", async () => {
    await tab.click('nav button[data-view="tail"]');
    await router.restart(); // 1012 service restart; the memory engine starts new epochs
    await tab.waitForFunction(() => /alerts not recovered \(epoch_changed\)/.test(document.querySelector("#tail-state").textContent), null, { timeout: 15_000 });
    await tab.waitForSelector(".notice");
    await publish(router.url, alert("after-restart", "low"));
    await tab.waitForFunction(() => document.querySelector("#events").textContent.includes("after-restart"));
    assert.match(await tab.textContent(".event:first-of-type .head"), /alert\.created\s*alerts:1/);
    await screenshot(tab, "tail-reconnected", ["not recovered (epoch_changed)", "after-restart"]);
    // A deprecated type says so; Pause holds new events back (still counted), Clear empties.
    await publish(router.url, { type: "alert.resolved", payload: { id: "after-restart" }, correlation_id: "corr-1" });
    await tab.waitForSelector('.event[data-type="alert.resolved"] .deprecated');
    assert.match(await tab.textContent('.event[data-type="alert.resolved"] .head'), /deprecated: use alert\.updated with status resolved/);
    assert.match(await tab.textContent('.event[data-type="alert.resolved"] .head'), /correlation corr-1/);
    await tab.click("#pause");
    await publish(router.url, job("while-paused"));
    await tab.waitForFunction(() => document.querySelector("#pause").textContent === "Resume (1 not shown)");
    assert.ok(!(await tab.textContent("#events")).includes("while-paused"));
    await tab.click("#pause");
    await tab.click("#clear");
    assert.equal(await tab.$$eval("#events > *", (n) => n.length), 0);
  });

  assert.deepEqual(pageErrors, [], "the page threw");
});

test("the console's admin key: typed into the page, sent as a Bearer token", async (t) => {
  // Mode optional with a key configured: admin routes and publishing need it, even on loopback.
  const router = await startRouter({
    auth: 'mode = "optional"\napi_keys_env = "SY_CONSOLE_TEST_KEYS"',
    env: { SY_CONSOLE_TEST_KEYS: "ops:console-key-1" },
  });
  t.after(() => router.stop());
  const browser = await launchChromium(t);
  const tab = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  await tab.goto(`${router.url}/console`);
  await tab.waitForSelector("body[data-ready=true]");

  await tab.click('nav button[data-view="connections"]');
  await tab.waitForFunction(() => document.querySelector("#connections").textContent.includes("401"));
  await tab.click('nav button[data-view="health"]');
  await tab.waitForFunction(() => document.querySelector("#config").textContent.includes("401"));
  await tab.click("#reload-preview-button");
  await tab.waitForSelector("#reload-refused");
  await tab.click('nav button[data-view="publish"]');
  await tab.selectOption("#publish-type", "job.progress");
  await tab.fill("#publish-payload", JSON.stringify({ job_id: "k-1", percent: 5 }));
  await tab.click("#publish-send");
  await tab.waitForSelector("#publish-error");
  assert.match(await tab.textContent("#publish-result"), /HTTP 401[\s\S]*unauthorized/);

  await tab.fill("#key", "console-key-1");
  await tab.click("#publish-send");
  await tab.waitForSelector("#publish-sent");
  await tab.click('nav button[data-view="connections"]');
  await tab.waitForSelector("#connections-table tbody tr");
  await tab.click('nav button[data-view="health"]');
  await tab.waitForFunction(() => document.querySelector("#config").textContent.includes("loaded at"));
  await tab.click("#reload-preview-button");
  await tab.waitForSelector("#reload-preview");
  // Kept in memory only.
  assert.equal(await tab.evaluate(() => localStorage.length + sessionStorage.length), 0);
  assert.ok(!(await tab.evaluate(() => document.cookie + location.href)).includes("console-key-1"));
});
