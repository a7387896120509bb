// The client's own SSE reader (fetch streaming, used where there is no EventSource) against a
// scripted SSE endpoint that follows SPEC §11: this checks the client side only. The test
// against the real router is sse.test.mjs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { SwitchyardClient } from "../dist/index.js";
import { until, record } from "./helpers.mjs";

test("SSE transport: parses id/data/comment lines, ends on connection.closed, reconnects with since", async (t) => {
  const requests = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    requests.push({ accept: req.headers.accept, events: url.searchParams.get("events"), since: url.searchParams.get("since"), auth: req.headers.authorization });
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    const n = requests.length;
    const msg = (m, id) => res.write(`${id ? `id: ${id}\n` : ""}data: ${JSON.stringify(m)}\n\n`);
    const ev = (seq) => ({ type: "alert.created", payload: { id: `a${seq}`, severity: "low" }, timestamp: "2026-01-01T00:00:00.000Z", channel: "alerts", sequence: seq });
    msg({ type: "connection.established", payload: { connection_id: `s${n}`, endpoint: "/ws/events", protocol_version: 1, heartbeat_interval_s: 30, user: null, expires_at: null, channels: { alerts: { epoch: "E1", sequence: n === 1 ? 0 : 2 } } } });
    if (n === 1) {
      msg({ type: "subscribed", action: "subscribed", events: ["alert.*"], warnings: [] });
      res.write(": ping\n\n");
      msg(ev(1), "alerts:E1:1");
      // A message split over writes and CRLF line ends.
      res.write(`id: alerts:E1:2\r\ndata: ${JSON.stringify(ev(2)).slice(0, 20)}`);
      setTimeout(() => {
        res.write(`${JSON.stringify(ev(2)).slice(20)}\r\n\r\n`);
        msg({ type: "connection.closed", payload: { code: 1012, reason: "service restart" } });
        res.end();
      }, 50);
    } else {
      // Replay of 2 (a duplicate the client must drop), then 3.
      msg(ev(2), "alerts:E1:2");
      msg(ev(3), "alerts:E1:3");
      msg({ type: "subscribed", action: "subscribed", events: ["alert.*"], warnings: [], recovery: { alerts: { recovered: true, replayed: 1 } } });
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  const client = new SwitchyardClient({ url: `http://127.0.0.1:${server.address().port}`, transport: "sse", events: ["alert.*"], token: () => "tok", backoff: { initialMs: 50, maxMs: 100 } });
  t.after(() => client.close());
  const r = record(client, "alert.*");
  await until(() => r.events.length === 3, "3 events");
  assert.deepEqual(r.events.map((e) => e.sequence), [1, 2, 3]);
  assert.deepEqual(r.closed.map((c) => c.code), [1012]);
  assert.equal(requests[0].accept, "text/event-stream");
  assert.equal(requests[0].events, "alert.*");
  assert.equal(requests[0].auth, "Bearer tok");
  assert.equal(requests[1].since, "alerts:E1:2");
  assert.equal(client.transport, "sse");
  assert.deepEqual(r.gaps, []);
});
