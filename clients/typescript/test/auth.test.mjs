// Tokens: refresh before expiry, 4001 (expired) and 1008 (refused) handling.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { SwitchyardClient } from "../dist/index.js";
import { startRouter, publish, alert, until, sleep, record, mintToken } from "./helpers.mjs";

const SECRET = "test-secret-for-the-typescript-client-0123456789";
const auth = `mode = "required"\n[auth.jwt]\nsecret_env = "TS_CLIENT_TEST_JWT_SECRET"\nleeway_s = 0`;
const now = () => Math.floor(Date.now() / 1000);
const token = (sub, ttl, secret = SECRET) => mintToken(secret, { sub, exp: now() + ttl });
const fast = { initialMs: 100, maxMs: 1000 };

let router;
test.before(async () => {
  router = await startRouter({ auth, env: { TS_CLIENT_TEST_JWT_SECRET: SECRET } });
});
test.after(() => router.stop());

test("sends refresh before expires_at and keeps the connection", async (t) => {
  let calls = 0;
  const client = new SwitchyardClient({ url: router.url, WebSocket, token: () => (calls++, token("alice", 3)) });
  t.after(() => client.close());
  const r = record(client);
  const refreshed = [];
  client.on("refreshed", (x) => refreshed.push(x.expires_at));
  await until(() => client.state === "connected", "connected");
  const id = client.connectionId;
  await sleep(4500);
  assert.ok(refreshed.length >= 1, `refreshed ${refreshed.length} times`);
  assert.equal(client.connectionId, id, "still the same connection after the first token's expiry");
  assert.deepEqual(r.closed, []);
  await publish(router.url, alert("a1"));
  await until(() => r.events.length === 1, "an event");
});

test("4001 token expired: a new token from the provider, then reconnect and recover", async (t) => {
  const handed = [];
  const provider = () => {
    const n = handed.length;
    // 1: short-lived; 2 (the refresh): another user's, refused; then long-lived.
    const tok = n === 0 ? token("bob", 2) : n === 1 ? token("mallory", 60) : token("bob", 600);
    handed.push(tok);
    return tok;
  };
  const client = new SwitchyardClient({ url: router.url, WebSocket, token: provider, events: ["alert.*"], backoff: fast });
  t.after(() => client.close());
  const r = record(client, "alert.*");
  await until(() => client.state === "connected", "connected");
  const id = client.connectionId;
  await publish(router.url, alert("x1"));
  await until(() => r.closed.length === 1, "the 4001 close", 6000);
  assert.equal(r.closed[0].code, 4001);
  await publish(router.url, alert("x2"));
  await until(() => client.state === "connected" && client.connectionId !== id, "reconnected");
  assert.equal(handed.length, 3, "the provider was asked again after 4001");
  assert.ok(r.errors.some((e) => e.payload?.code === "invalid_token"), "the refused refresh was reported");
  await until(() => r.events.length === 2, "both events");
  assert.deepEqual(r.events.map((e) => e.payload.id), ["x1", "x2"]);
  assert.deepEqual(r.gaps, []);
});

test("1008 refused token: the provider is asked again; the same refused token is not retried at once", async (t) => {
  let calls = 0;
  const good = new SwitchyardClient({
    url: router.url,
    WebSocket,
    token: () => (calls++ === 0 ? token("carol", 60, "a-wrong-secret") : token("carol", 60)),
    backoff: fast,
  });
  t.after(() => good.close());
  const r = record(good);
  await until(() => good.state === "connected" && good.connectionId, "connected with the second token");
  assert.equal(r.closed[0].code, 1008);
  assert.match(r.closed[0].reason, /invalid token/);
  assert.equal(calls, 2);

  let badCalls = 0;
  const bad = token("dave", 60, "a-wrong-secret");
  const stubborn = new SwitchyardClient({ url: router.url, WebSocket, token: () => (badCalls++, bad) });
  t.after(() => stubborn.close());
  const r2 = record(stubborn);
  await sleep(3000);
  assert.equal(r2.closed.length, 1, `closes: ${JSON.stringify(r2.closed)}`);
  assert.ok(badCalls <= 2, `provider asked ${badCalls} times`);
  assert.equal(stubborn.state, "connecting");
});
