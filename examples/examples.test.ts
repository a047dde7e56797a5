// Runs every example with its tiny setting (TINY=1) the way a user would, through tsx, and checks
// the exit code and one line of output. The examples import the built packages (dist), so the
// packages must be built first (`pnpm test` does). All run at once: on a loaded machine they
// spend most of their time waiting for a core, not computing.

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

const EXAMPLES: [file: string, expected: RegExp][] = [
  ['quickstart.ts', /^original \d+ parameters; recursive \d+ \+ LoRA \d+\ngenerated: In the beginning./m],
  ['custom-scheme.ts', /^MIRROR depth map: 0 1 2 2 1 0$/m],
  ['tensor-basics.ts', /^grad of sum\(a @ x\) w\.r\.t\. x = \[\[5\],\[7\],\[9\]\]$/m],
  ['train-tiny-lm.ts', /^held-out perplexity \d+\.\d+ over \d+ tokens$/m],
  ['load-hf-checkpoint.ts', /^matches the reference$/m],
  ['convert-to-recursive.ts', /^after 1 KD steps: stepwise perplexity \d/m],
  ['relax-with-lora.ts', /^relaxed r= {2}8 svd {2}init: \+\d+ LoRA parameters, perplexity \d/m],
  ['early-exit.ts', /^oracle +mean loops \d/m],
  ['depthwise-batching.ts', /^depthwise\+exit +\d+ tokens, [\d.]+ tokens\/s/m],
  ['gpu-backend.ts', /^gpu backend (mode: \S+|not available: )/m],
];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runExample(file: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', `examples/${file}`], {
      cwd: root,
      env: { ...process.env, TINY: '1', STEPS: '2' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    // A hung example fails its own test instead of the whole file.
    const timer = setTimeout(() => child.kill('SIGKILL'), 170_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const runs = new Map<string, Run>();

beforeAll(async () => {
  const results = await Promise.all(EXAMPLES.map(([file]) => runExample(file)));
  EXAMPLES.forEach(([file], i) => runs.set(file, results[i]!));
}, 180_000);

describe('examples (TINY=1)', () => {
  for (const [file, expected] of EXAMPLES) {
    it(`${file} exits 0 and prints its result`, () => {
      const r = runs.get(file)!;
      expect(r.code, `${file} stderr:\n${r.stderr.slice(-2000)}`).toBe(0);
      expect(r.stdout).toMatch(expected);
    });
  }
});
