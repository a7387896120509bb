// Test support: a real router binary on a free port with a temporary config.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
/** The router binary: env SWITCHYARD_BIN, default ../../target/debug/switchyard (from clients/typescript). */
export const BIN = process.env.SWITCHYARD_BIN
  ? resolve(process.env.SWITCHYARD_BIN)
  : resolve(here, "..", "..", "..", "target", "debug", "switchyard");

/** The base config the Rust integration tests use too (core/tests/it/base.toml). */
const BASE = readFileSync(resolve(here, "..", "..", "..", "core", "tests", "it", "base.toml"), "utf8");

/** Replaces `from` in `text`, which must hold it (a changed base.toml fails loudly here). */
function swap(text, from, to) {
  if (!text.includes(from)) throw new Error(`core/tests/it/base.toml no longer has ${JSON.stringify(from)}`);
  return text.replace(from, () => to);
}

/** The base config on `port`, with lines added to [server], the [auth] body and the alerts' history. */
export function config({ port, auth = 'mode = "none"', server = "", alertsHistory = 100 } = {}) {
  let text = swap(BASE, '[server]\nlisten = "127.0.0.1:0"\n', `[server]\nlisten = "127.0.0.1:${port}"\n${server}\n`);
  text = swap(text, '[auth]\nmode = "none"\n', `[auth]\n${auth}\n`);
  return swap(text, 'name = "alerts"\nhistory = 100\n', `name = "alerts"\nhistory = ${alertsHistory}\n`);
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `fn()` is truthy (polling), or fails with `what`. */
export async function until(fn, what, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Starts a router (its config at `file`); `restart()` stops it and starts a new process on the same port. */
export async function startRouter(opts = {}) {
  if (!existsSync(BIN)) {
    throw new Error(`router binary not found at ${BIN}: build it (cargo build -p switchyard --bin switchyard) or set SWITCHYARD_BIN`);
  }
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), "switchyard-ts-"));
  const file = join(dir, "config.toml");
  writeFileSync(file, config({ ...opts, port }));
  const url = `http://127.0.0.1:${port}`;
  let child;
  let log = "";
  const launch = async () => {
    log = "";
    child = spawn(BIN, ["--config", file], { env: { ...process.env, ...(opts.env ?? {}) }, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (d) => (log += d));
    child.stderr.on("data", (d) => (log += d));
    const exited = new Promise((r) => child.once("exit", r));
    child.exited = exited;
    await until(async () => {
      if (child.exitCode !== null) throw new Error(`router exited ${child.exitCode}:\n${log}`);
      try {
        return (await fetch(`${url}/health/live`)).ok;
      } catch {
        return false;
      }
    }, "the router to listen");
  };
  // A SIGTERM is a graceful shutdown (clients closed with 1012, exit 0):
  // anything else, a crash or a hang, fails the test with the router's log.
  const stop = async () => {
    if (child && child.exitCode === null) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await child.exited;
      clearTimeout(t);
      if (child.exitCode !== 0) {
        throw new Error(`the router did not shut down cleanly (exit ${child.exitCode}, signal ${child.signalCode}):\n${log}`);
      }
    }
  };
  await launch();
  return {
    url,
    port,
    file,
    log: () => log,
    stop,
    async restart() {
      await stop();
      await launch();
    },
  };
}

/** POST /api/events; returns the reply body. */
export async function publish(url, events, headers = {}) {
  const res = await fetch(`${url}/api/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(events),
  });
  const body = await res.json();
  if (res.status !== 202) throw new Error(`publish: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

export const alert = (id, severity = "low") => ({ type: "alert.created", payload: { id, severity } });
export const job = (id) => ({ type: "job.progress", payload: { job_id: id, percent: 10 } });

/** POST /api/admin/disconnect (loopback: no key needed in mode none/without keys). */
export async function disconnect(url, connectionId) {
  const res = await fetch(`${url}/api/admin/disconnect`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ connection_id: connectionId }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`disconnect: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
/** An HS256 JWT. */
export function mintToken(secret, claims) {
  const head = b64({ alg: "HS256", typ: "JWT" }) + "." + b64(claims);
  return head + "." + createHmac("sha256", secret).update(head).digest("base64url");
}

/** Whether the router serves SSE on the endpoint (SPEC §11). */
export async function sseAvailable(url, path = "/ws/events") {
  const ctl = new AbortController();
  try {
    const res = await fetch(`${url}${path}`, { headers: { Accept: "text/event-stream" }, signal: ctl.signal });
    const ct = res.headers.get("content-type") ?? "";
    ctl.abort();
    return { ok: res.status === 200 && ct.startsWith("text/event-stream"), status: res.status, contentType: ct };
  } catch (e) {
    return { ok: false, status: 0, contentType: String(e) };
  }
}

export const SSE_MISSING = (r) =>
  `the router does not serve Server-Sent Events yet (SPEC §11 "Server-Sent Events": GET /ws/events with Accept: text/event-stream answered HTTP ${r.status} ${r.contentType}, expected 200 text/event-stream) — this test needs the server's SSE transport`;

/** Collects a client's events, gaps and closes. */
export function record(client, pattern = "*") {
  const r = { events: [], gaps: [], closed: [], errors: [], states: [] };
  client.on(pattern, (e) => r.events.push(e));
  client.on("gap", (g) => r.gaps.push(g));
  client.on("closed", (c) => r.closed.push(c));
  client.on("error", (e) => r.errors.push(e));
  client.on("state", (s) => r.states.push(s));
  return r;
}

/** Debian's chromium (or $CHROMIUM), run headless by playwright-core. */
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** A headless Chromium, closed when test `t` ends; fails, saying why, without one. */
export async function launchChromium(t) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  t.after(() => browser.close());
  return browser;
}
