// Runs the whole vitest suite and ends with the line CI reads: `N passed, N failed`.
// Exit status is non-zero when any test fails or when no test ran.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const out = join(mkdtempSync(join(tmpdir(), 'rrt-test-')), 'results.json');
const args = ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`, ...process.argv.slice(2)];
// Dawn (WebGPU on lavapipe) prints two notices about its own buffer limits each time a process
// starts it, straight to stderr; they say nothing about rrt, so the log leaves them out.
const DAWN_NOTICE = /^Warning: maxDynamic\w+PerPipelineLayout artificially reduced/;
const child = spawn('npx', args, { stdio: ['inherit', 'pipe', 'pipe'] });
const pass = (from, to) =>
  new Promise((resolve) => {
    const lines = createInterface({ input: from, crlfDelay: Infinity });
    lines.on('line', (line) => {
      if (!DAWN_NOTICE.test(line)) to.write(line + '\n');
    });
    lines.on('close', resolve);
  });
const [status] = await Promise.all([new Promise((resolve) => child.on('close', resolve)), pass(child.stdout, process.stdout), pass(child.stderr, process.stderr)]);
const run = { status };
let passed = 0;
let failed = 0;
try {
  const results = JSON.parse(readFileSync(out, 'utf8'));
  passed = results.numPassedTests;
  failed = results.numFailedTests + (results.numRuntimeErrorTestSuites ?? 0);
  // A file that failed to load counts as a failure even though no test inside it ran.
  for (const file of results.testResults ?? []) if (file.status === 'failed' && file.assertionResults.length === 0) failed += 1;
} catch (err) {
  console.error(`could not read the test results (${out}): ${err.message}`);
  failed += 1;
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(run.status === 0 && failed === 0 && passed > 0 ? 0 : 1);
