// Validates an AsyncAPI document with the official parser (@asyncapi/parser): prints every
// diagnostic, then one JSON line {"errors", "warnings", "channels", "operations", "messages"};
// exits 1 when there is an error (severity 0) or the document does not parse.
//
//   node validate_asyncapi.mjs ../../../shared/contracts/asyncapi.json
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate_asyncapi.mjs <asyncapi document>");
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"), { source: path });
const errors = diagnostics.filter((d) => d.severity === 0);
const warnings = diagnostics.filter((d) => d.severity === 1);
for (const d of diagnostics) {
  console.error(`${d.severity === 0 ? "error" : d.severity === 1 ? "warning" : "info"}: ${d.code}: ${d.message} at ${JSON.stringify(d.path)}`);
}
const summary = {
  errors: errors.length,
  warnings: warnings.length,
  channels: document ? document.channels().all().map((c) => c.address()) : [],
  operations: document ? document.operations().all().map((o) => `${o.action()} ${o.id()}`) : [],
  messages: document ? document.components().messages().all().map((m) => m.id()) : [],
};
console.log(JSON.stringify(summary));
process.exit(errors.length === 0 && document ? 0 : 1);
