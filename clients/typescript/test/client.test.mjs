// The client against a real router (auth mode none).
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { SwitchyardClient, SwitchyardError } from "../dist/index.js";
import { startRouter, publish, alert, job, disconnect, until, sleep, record } from "./helpers.mjs";

const fast = { initialMs: 100, maxMs: 1000 };

test("connects, receives typed events, subscribe returns warnings, errors echo the id", async (t) => {
  const router = await startRouter();
  t.after(() => router.stop());
  const client = new SwitchyardClient({ url: router.url, WebSocket, events: ["alert.*"] });
  t.after(() => client.close());
  const r = record(client, "alert.*");
  await until(() => client.state === "connected", "connected");
  assert.equal(client.transport, "websocket");
  assert.ok(client.connectionId);
  assert.deepEqual(Object.keys(client.positions).sort(), ["alerts", "jobs"]);

  const reply = await client.subscribe(["alert.resolved", "job.*"]);
  assert.equal(reply.type, "subscribed");
  assert.deepEqual([...reply.events].sort(), ["alert.*", "alert.resolved", "job.*"]);
  const w = reply.warnings.find((w) => w.pattern === "alert.resolved");
  assert.ok(w && /deprecated/.test(w.message), JSON.stringify(reply.warnings));

  await assert.rejects(client.subscribe(["*.created"]), (e) => {
    assert.ok(e instanceof SwitchyardError);
    assert.equal(e.code, "invalid_pattern");
    assert.ok(e.id, "the error echoes the request id");
    return true;
  });

  const jobs = [];
  client.on("job.progress", (e) => jobs.push(e.payload.percent));
  await publish(router.url, [alert("a1"), job("j1"), alert("a2", "high")]);
  await until(() => r.events.length === 2 && jobs.length === 1, "3 events");
  assert.deepEqual(r.events.map((e) => e.payload.id), ["a1", "a2"]);
  assert.equal(r.events[1].channel, "alerts");
  assert.equal(client.positions.alerts.sequence, 2);

  const un = await client.unsubscribe(["job.*"]);
  assert.deepEqual([...un.events].sort(), ["alert.*", "alert.resolved"]);
  assert.deepEqual(r.gaps, []);
});

test("reconnects after the router drops the connection, recovers, no gap and no duplicate", async (t) => {
  const router = await startRouter();
  t.after(() => router.stop());
  const client = new SwitchyardClient({ url: router.url, WebSocket, events: ["alert.*"], backoff: fast });
  t.after(() => client.close());
  const r = record(client, "alert.*");
  await until(() => client.state === "connected", "connected");

  let n = 0;
  let publishing = true;
  const publisher = (async () => {
    while (publishing) {
      n++;
      await publish(router.url, alert(`a${n}`));
      await sleep(10);
    }
  })();
  const ids = new Set();
  for (let i = 0; i < 3; i++) {
    await sleep(200);
    const id = client.connectionId;
    ids.add(id);
    await disconnect(router.url, id);
    await until(() => client.state === "connected" && client.connectionId !== id, "reconnected");
  }
  await sleep(200);
  publishing = false;
  await publisher;
  await until(() => r.events.length >= n, `${n} events (got ${r.events.length})`);
  await sleep(100);
  assert.deepEqual(r.events.map((e) => e.sequence), Array.from({ length: n }, (_, i) => i + 1));
  assert.deepEqual(r.gaps, []);
  assert.ok(r.closed.length >= 3 && r.closed.every((c) => c.code === 1008), JSON.stringify(r.closed));
  assert.equal(ids.size, 3);
});

test("one gap (epoch_changed) after the router restarts and loses its history", async (t) => {
  const router = await startRouter();
  t.after(() => router.stop());
  const client = new SwitchyardClient({ url: router.url, WebSocket, backoff: fast });
  t.after(() => client.close());
  const r = record(client);
  await until(() => client.state === "connected", "connected");
  assert.equal(client.transport, "websocket", JSON.stringify({ closed: r.closed, errors: r.errors.map(String) }));
  await publish(router.url, [alert("a1"), alert("a2"), job("j1")]);
  await until(() => r.events.length === 3, "3 events");
  const before = client.positions;
  await router.restart();
  await until(() => r.gaps.length >= 1 && client.state === "connected", "a gap");
  await sleep(300);
  assert.equal(r.gaps.length, 1, JSON.stringify(r.gaps));
  assert.deepEqual([...r.gaps[0].channels].sort(), ["alerts", "jobs"]);
  assert.equal(r.gaps[0].reason, "epoch_changed");
  assert.equal(r.closed[0].code, 1012, JSON.stringify({ closed: r.closed, errors: r.errors.map(String) }));
  assert.notEqual(client.positions.alerts.epoch, before.alerts.epoch);
  // Live delivery goes on in the new epoch, from sequence 1.
  await publish(router.url, alert("a3"));
  await until(() => r.events.length === 4, "event after restart");
  assert.equal(r.events[3].sequence, 1);
  assert.equal(r.gaps.length, 1);
});

test("one gap (too_old) when more than history events were published while away", async (t) => {
  const router = await startRouter({ alertsHistory: 5 });
  t.after(() => router.stop());
  const first = new SwitchyardClient({ url: router.url, WebSocket, events: ["alert.*"] });
  const r1 = record(first, "alert.*");
  await until(() => first.state === "connected", "connected");
  await publish(router.url, [alert("a1"), alert("a2")]);
  await until(() => r1.events.length === 2, "2 events");
  const saved = JSON.parse(JSON.stringify(first.positions));
  first.close();
  assert.equal(first.state, "disconnected");

  // Away: 8 events, history keeps 5.
  await publish(router.url, Array.from({ length: 8 }, (_, i) => alert(`b${i}`)));
  const second = new SwitchyardClient({ url: router.url, WebSocket, events: ["alert.*"], positions: saved });
  t.after(() => second.close());
  const r2 = record(second, "alert.*");
  await until(() => r2.gaps.length === 1, "a gap");
  assert.deepEqual(r2.gaps[0].channels, ["alerts"]);
  assert.equal(r2.gaps[0].reason, "too_old");
  assert.deepEqual(r2.events, [], "nothing replayed: recovery is never partial");
  await publish(router.url, alert("c1"));
  await until(() => r2.events.length === 1, "live event");
  assert.equal(r2.events[0].sequence, 11);

  // Within history: recovered, no gap.
  const saved2 = second.positions;
  second.close();
  await publish(router.url, [alert("d1"), alert("d2")]);
  const third = new SwitchyardClient({ url: router.url, WebSocket, events: ["alert.*"], positions: saved2 });
  t.after(() => third.close());
  const r3 = record(third, "alert.*");
  await until(() => r3.events.length === 2, "2 replayed");
  assert.deepEqual(r3.events.map((e) => e.sequence), [12, 13]);
  assert.deepEqual(r3.gaps, []);
});

test("a silent connection (no frame for 2 × heartbeat) is treated as dead and reconnected", async (t) => {
  // A fake endpoint that announces heartbeat_interval_s = 1 and then says nothing.
  const { WebSocketServer } = await import("ws");
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", autoPong: false });
  await new Promise((r) => wss.once("listening", r));
  let connections = 0;
  wss.on("connection", (ws) => {
    connections++;
    ws.send(JSON.stringify({ type: "connection.established", payload: { connection_id: `c${connections}`, endpoint: "/ws/events", protocol_version: 1, heartbeat_interval_s: 1, user: null, expires_at: null, channels: {} } }));
  });
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    return new Promise((r) => wss.close(r));
  });
  const client = new SwitchyardClient({ url: `http://127.0.0.1:${wss.address().port}`, WebSocket, backoff: fast });
  t.after(() => client.close());
  const r = record(client);
  await until(() => client.connectionId === "c1", "first connection");
  await until(() => connections >= 2 && client.connectionId === "c2", "reconnect after silence", 5000);
  assert.equal(r.closed[0].code, 4000);
});
