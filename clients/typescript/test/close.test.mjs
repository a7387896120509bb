// close(): what waits on the connection is settled, whatever the state.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SwitchyardClient } from "../dist/index.js";

test("a subscribe waiting for connect() is rejected by close()", async () => {
  // Never constructed: with autoConnect false nothing opens until connect().
  class NoSocket {}
  const client = new SwitchyardClient({ url: "http://127.0.0.1:1", autoConnect: false, WebSocket: NoSocket });
  const waiting = client.subscribe(["alert.*"]);
  client.close();
  const outcome = await Promise.race([
    waiting.then(
      () => "resolved",
      (e) => `rejected: ${e.message}`,
    ),
    new Promise((r) => setTimeout(() => r("still pending"), 300)),
  ]);
  assert.equal(outcome, "rejected: client closed");
});
