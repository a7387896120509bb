// connection.lagged handling against a scripted WebSocket endpoint (the real router only lags
// a client that stops reading, which a test cannot stage quickly): the client re-subscribes
// with `since`, delivers replayed and held live events in order and once, and reports one gap
// when recovery fails.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket, { WebSocketServer } from "ws";
import { SwitchyardClient } from "../dist/index.js";
import { until, record } from "./helpers.mjs";

const ev = (seq) => JSON.stringify({ type: "alert.created", payload: { id: `a${seq}`, severity: "low" }, timestamp: "2026-01-01T00:00:00.000Z", channel: "alerts", sequence: seq });

async function scripted(t, recovered) {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.once("listening", r));
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    return new Promise((r) => wss.close(r));
  });
  const got = [];
  wss.on("connection", (ws) => {
    ws.send(JSON.stringify({ type: "connection.established", payload: { connection_id: "c1", endpoint: "/ws/events", protocol_version: 1, heartbeat_interval_s: 30, user: null, expires_at: null, channels: { alerts: { epoch: "E", sequence: 0 } } } }));
    ws.send(JSON.stringify({ type: "subscribed", action: "subscribed", events: ["alert.*"], warnings: [] }));
    ws.send(ev(1));
    ws.send(ev(2));
    ws.send(JSON.stringify({ type: "connection.lagged", payload: { dropped: 2, channels: { alerts: { epoch: "E", sequence: 2 } } } }));
    ws.send(ev(5));
    ws.on("message", (data) => {
      const m = JSON.parse(String(data));
      got.push(m);
      if (m.action !== "subscribe") return;
      if (recovered) {
        ws.send(ev(3));
        ws.send(ev(4));
        ws.send(JSON.stringify({ type: "subscribed", action: "subscribed", events: ["alert.*"], warnings: [], recovery: { alerts: { recovered: true, replayed: 2 } }, id: m.id }));
      } else {
        ws.send(JSON.stringify({ type: "subscribed", action: "subscribed", events: ["alert.*"], warnings: [], recovery: { alerts: { recovered: false, reason: "too_old" } }, id: m.id }));
      }
      ws.send(ev(6));
    });
  });
  const client = new SwitchyardClient({ url: `http://127.0.0.1:${wss.address().port}`, WebSocket, events: ["alert.*"] });
  t.after(() => client.close());
  return { client, got, r: record(client, "alert.*") };
}

test("connection.lagged: recovered with since, delivered in order and once", async (t) => {
  const { got, r } = await scripted(t, true);
  await until(() => r.events.length === 6, "6 events");
  assert.deepEqual(r.events.map((e) => e.sequence), [1, 2, 3, 4, 5, 6]);
  const sub = got.find((m) => m.action === "subscribe");
  assert.deepEqual(sub.since, { alerts: { epoch: "E", sequence: 2 } });
  assert.deepEqual(sub.events, ["alert.*"]);
  assert.ok(sub.id);
  assert.deepEqual(r.gaps, []);
});

test("connection.lagged beyond history: one gap naming the channel", async (t) => {
  const { r } = await scripted(t, false);
  await until(() => r.events.length === 4 && r.gaps.length === 1, "events and a gap");
  assert.deepEqual(r.events.map((e) => e.sequence), [1, 2, 5, 6]);
  assert.deepEqual(r.gaps[0].channels, ["alerts"]);
  assert.equal(r.gaps[0].reason, "too_old");
});

test("connection.lagged: a connection lost before the recovery reply recovers from the lag's position", async (t) => {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.once("listening", r));
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    return new Promise((r) => wss.close(r));
  });
  const urls = [];
  wss.on("connection", (ws, req) => {
    urls.push(new URL(req.url, "http://x"));
    ws.send(JSON.stringify({ type: "connection.established", payload: { connection_id: `c${urls.length}`, endpoint: "/ws/events", protocol_version: 1, heartbeat_interval_s: 30, user: null, expires_at: null, channels: { alerts: { epoch: "E", sequence: urls.length === 1 ? 0 : 5 } } } }));
    if (urls.length === 1) {
      ws.send(JSON.stringify({ type: "subscribed", action: "subscribed", events: ["alert.*"], warnings: [] }));
      ws.send(ev(1));
      ws.send(ev(2));
      ws.send(JSON.stringify({ type: "connection.lagged", payload: { dropped: 2, channels: { alerts: { epoch: "E", sequence: 2 } } } }));
      ws.send(ev(5));
      // The recovery is asked for; the connection is lost before its reply.
      ws.on("message", () => ws.terminate());
      return;
    }
    for (const seq of [3, 4, 5]) ws.send(ev(seq));
    ws.send(JSON.stringify({ type: "subscribed", action: "subscribed", events: ["alert.*"], warnings: [], recovery: { alerts: { recovered: true, replayed: 3 } } }));
  });
  const client = new SwitchyardClient({ url: `http://127.0.0.1:${wss.address().port}`, WebSocket, events: ["alert.*"], backoff: { initialMs: 50, maxMs: 100 } });
  t.after(() => client.close());
  const r = record(client, "alert.*");
  await until(() => urls.length === 2 && client.state === "connected", "reconnected");
  assert.equal(urls[1].searchParams.get("since"), "alerts:E:2", "recovers the dropped 3 and 4");
  await until(() => r.events.length >= 5, "5 events");
  assert.deepEqual(r.events.map((e) => e.sequence), [1, 2, 3, 4, 5]);
  assert.deepEqual(r.gaps, []);
});
