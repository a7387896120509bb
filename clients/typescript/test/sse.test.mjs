// SSE fallback (SPEC §11 "Server-Sent Events"). Needs the router's SSE transport: without it
// this test FAILS, naming the missing server feature (it is never skipped).
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { SwitchyardClient } from "../dist/index.js";
import { startRouter, publish, alert, job, disconnect, until, sleep, record, sseAvailable, SSE_MISSING } from "./helpers.mjs";

/** A WebSocket whose upgrade is always refused: error then close 1006, never open. */
class RefusedWebSocket {
  static attempts = 0;
  readyState = 0;
  onopen = null;
  onmessage = null;
  onerror = null;
  onclose = null;
  constructor() {
    RefusedWebSocket.attempts++;
    setTimeout(() => {
      this.readyState = 3;
      this.onerror?.({ type: "error" });
      this.onclose?.({ code: 1006, reason: "" });
    }, 5);
  }
  send() {
    throw new Error("not open");
  }
  close() {}
}

test("falls back to SSE when the WebSocket cannot be opened: same API, recovery without gap", async (t) => {
  const router = await startRouter();
  t.after(() => router.stop());
  const probe = await sseAvailable(router.url);
  assert.ok(probe.ok, SSE_MISSING(probe));

  const client = new SwitchyardClient({ url: router.url, WebSocket: RefusedWebSocket, events: ["alert.*"], backoff: { initialMs: 100, maxMs: 1000 } });
  t.after(() => client.close());
  const r = record(client, "*");
  await until(() => client.state === "connected", "connected over SSE");
  assert.equal(client.transport, "sse");
  assert.ok(client.connectionId);

  await publish(router.url, [alert("a1"), job("j1"), alert("a2")]);
  await until(() => r.events.length === 2, "2 alerts");
  assert.deepEqual(r.events.map((e) => e.payload.id), ["a1", "a2"]);

  // subscribe over SSE = reconnect with other `events`; the reply carries the warnings.
  const reply = await client.subscribe(["job.*", "alert.resolved"]);
  assert.deepEqual([...reply.events].sort(), ["alert.*", "alert.resolved", "job.*"]);
  assert.ok(reply.warnings.some((w) => w.pattern === "alert.resolved"), JSON.stringify(reply.warnings));
  assert.equal(client.transport, "sse");
  await publish(router.url, [job("j2")]);
  // j1 is replayed by the subscribe (the new patterns match it); wait for the live j2.
  await until(() => r.events.some((e) => e.payload.job_id === "j2"), "the live job event");

  // Dropped by the operator: the stream ends with connection.closed 1008; reconnect and recover.
  const before = r.events.length;
  const id = client.connectionId;
  await disconnect(router.url, id);
  await publish(router.url, [alert("a3"), alert("a4")]);
  await until(() => client.state === "connected" && client.connectionId !== id, "reconnected");
  await until(() => r.events.length === before + 2, "the 2 missed alerts");
  assert.equal(r.closed[0]?.code, 1008);
  const alerts = r.events.filter((e) => e.channel === "alerts").map((e) => e.sequence);
  assert.deepEqual(alerts, [1, 2, 3, 4]);
  assert.deepEqual(r.gaps, []);
  await sleep(100);
  assert.equal(r.events.length, before + 2, "no duplicate");
  // Two fallbacks in a row (connect, subscribe): WebSockets are blocked, so
  // the reconnect after the drop went straight to SSE.
  assert.equal(RefusedWebSocket.attempts, 2);
});

test("one refused WebSocket (a router restarting) does not pin the client to SSE", async (t) => {
  const router = await startRouter();
  t.after(() => router.stop());
  let refusals = 1;
  // `new` on a function that returns an object gives that object.
  function RefusedOnce(url, protocols) {
    return refusals-- > 0 ? new RefusedWebSocket() : new WebSocket(url, protocols);
  }
  const client = new SwitchyardClient({ url: router.url, WebSocket: RefusedOnce, events: ["alert.*"], backoff: { initialMs: 100, maxMs: 1000 } });
  t.after(() => client.close());
  const r = record(client, "alert.*");
  await until(() => client.state === "connected", "connected over SSE");
  assert.equal(client.transport, "sse");
  await publish(router.url, alert("a1"));
  await until(() => r.events.length === 1, "a1");

  const id = client.connectionId;
  await disconnect(router.url, id);
  await publish(router.url, alert("a2"));
  await until(() => client.state === "connected" && client.connectionId !== id, "reconnected");
  assert.equal(client.transport, "websocket", "back on WebSocket");
  await until(() => r.events.length === 2, "a2, recovered");
  assert.deepEqual(r.events.map((e) => e.sequence), [1, 2]);
  assert.deepEqual(r.gaps, []);
});
