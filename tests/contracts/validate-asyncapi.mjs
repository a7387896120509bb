// Validates an AsyncAPI document with the official parser:
// `node validate-asyncapi.mjs FILE`. Exits 1, printing every diagnostic,
// when any has error severity (0), so a document the parser would refuse
// fails the test that runs this.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const file = process.argv[2];
if (!file) {
  console.error("usage: node validate-asyncapi.mjs FILE");
  process.exit(2);
}
const text = await readFile(file, "utf8");
const { document, diagnostics } = await new Parser().parse(text);
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  const where = d.path.join(".") || "(document)";
  console.log(`${["error", "warning", "info", "hint"][d.severity]} ${d.code} at ${where}: ${d.message}`);
}
if (errors.length > 0 || !document) {
  console.error(`${file}: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`${file}: valid AsyncAPI ${document.version()}`);
