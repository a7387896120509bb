// The router serves this client to its /console from a copy built into the binary
// (core/console/client.js). `npm test` builds dist/ first (pretest): the copy must be that build.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { COPY, expectedCopy } from "../scripts/console-copy.mjs";

test("the console's copy of the client is the current build", async () => {
  const committed = await readFile(COPY, "utf8");
  assert.ok(
    committed === (await expectedCopy()),
    "core/console/client.js is stale: run `npm run console-copy` in clients/typescript and commit it",
  );
});
