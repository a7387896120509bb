// Token refresh timing, against a scripted WebSocket (no router needed).
import { test } from "node:test";
import assert from "node:assert/strict";
import { SwitchyardClient } from "../dist/index.js";
import { sleep } from "./helpers.mjs";

/** A WebSocket that opens, announces `expires_at`, and records what the client sends. */
function scriptedSocket(expiresAt, sent) {
  return class {
    constructor() {
      this.readyState = 0;
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
        const payload = {
          connection_id: "c1",
          endpoint: "/ws/events",
          protocol_version: 1,
          heartbeat_interval_s: 30,
          user: "svc",
          expires_at: expiresAt,
          channels: {},
        };
        this.onmessage?.({ data: JSON.stringify({ type: "connection.established", payload, timestamp: new Date().toISOString() }) });
      }, 5);
    }
    send(data) {
      const msg = JSON.parse(data);
      sent.push(msg);
      if (msg.action === "refresh") {
        const reply = { type: "refreshed", action: "refreshed", expires_at: expiresAt, id: msg.id };
        setTimeout(() => this.onmessage?.({ data: JSON.stringify(reply) }), 1);
      }
    }
    close() {
      this.readyState = 3;
    }
  };
}

test("a token that lives longer than setTimeout's limit (~24.8 days) is not refreshed at once", async (t) => {
  const sent = [];
  const expiresAt = new Date(Date.now() + 30 * 86_400_000).toISOString();
  const warnings = [];
  const onWarning = (w) => warnings.push(w.name);
  process.on("warning", onWarning);
  t.after(() => process.off("warning", onWarning));
  const client = new SwitchyardClient({ url: "http://127.0.0.1:1", WebSocket: scriptedSocket(expiresAt, sent), token: () => "a-30-day-token" });
  t.after(() => client.close());
  await sleep(300);
  assert.equal(client.state, "connected");
  const refreshes = sent.filter((m) => m.action === "refresh");
  assert.deepEqual(refreshes, [], `refreshed ${refreshes.length} time(s) right after connecting, 30 days before expiry`);
  assert.ok(!warnings.includes("TimeoutOverflowWarning"), `warnings: ${warnings}`);
});
