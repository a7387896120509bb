// The client typed by the router's own generated declarations: GET
// /api/websocket/types.ts from a real router, then `tsc --strict` over a
// file that uses `SwitchyardClient<EventMap>` with them (and must reject a
// payload field of another pattern's types).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startRouter } from "./helpers.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, "..");

const usage = `
import { SwitchyardClient } from "../../dist/index.js";
import type { EventMap } from "./types.js";

declare const client: SwitchyardClient<EventMap>;
client.on("alert.*", (e) => {
  if (e.type === "alert.created") {
    const severity: "low" | "medium" | "high" | "critical" = e.payload.severity;
    const count: number | null | undefined = e.payload.count;
    void severity;
    void count;
  }
  // @ts-expect-error job payloads are not among alert.* types
  void e.payload.job_id;
});
client.on("job.progress", (e) => {
  const job: string = e.payload.job_id;
  void job;
});
`;

test("the client compiles strict against the router's generated EventMap", async (t) => {
  const router = await startRouter();
  t.after(() => router.stop());
  const response = await fetch(`${router.url}/api/websocket/types.ts`);
  assert.equal(response.status, 200);
  const dir = join(pkg, "test-output", "generated");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "types.ts"), await response.text());
  writeFileSync(join(dir, "usage.ts"), usage);
  const tsc = join(pkg, "node_modules", ".bin", "tsc");
  const args = ["--strict", "--noEmit", "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022", join(dir, "usage.ts")];
  try {
    execFileSync(tsc, args, { encoding: "utf8" });
  } catch (e) {
    assert.fail(`tsc --strict refused the usage of the generated types:\n${e.stdout}${e.stderr}`);
  }
});
