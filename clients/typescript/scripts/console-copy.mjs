// The router's /console loads this client from a copy built into the binary
// (core/console/client.js), because `cargo build` cannot run tsc. This script
// writes that copy from a fresh `npm run build`; with `--check` it only says
// whether the committed copy is the build's (the test suite runs the check).
//
//   npm run build && node scripts/console-copy.mjs          # write the copy
//   node scripts/console-copy.mjs --check                    # exit 1 when stale
import { readFile, writeFile } from "node:fs/promises";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
/** Where the router's console reads the client from. */
export const COPY = join(root, "..", "..", "core", "console", "client.js");

const HEADER =
  "// Built from clients/typescript/src/index.ts by `npm run build` and\n" +
  "// clients/typescript/scripts/console-copy.mjs; do not edit: the test suite checks it.\n";

/** The copy's text made from the built dist/index.js (its source map is not served). */
export async function expectedCopy() {
  const built = await readFile(join(root, "dist", "index.js"), "utf8");
  return HEADER + built.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const expected = await expectedCopy();
  if (process.argv.includes("--check")) {
    const current = await readFile(COPY, "utf8").catch(() => "");
    if (current !== expected) {
      console.error(`${COPY} is not the current build: run \`npm run console-copy\` in clients/typescript`);
      process.exit(1);
    }
  } else {
    await writeFile(COPY, expected);
    console.log(`wrote ${COPY}`);
  }
}
