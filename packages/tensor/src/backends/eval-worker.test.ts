// The worker threads of the cpu and gpu backends start under `node --input-type=module -e`,
// whose execArgv they would otherwise inherit (and then fail to parse their CommonJS source).

import { execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { evalWorkerArgv } from './eval-worker.js';

// The built package, as a user's script imports it (the test suite builds first).
const DIST = new URL('../../dist/index.js', import.meta.url).href;

function runModule(script: string, env: Record<string, string> = {}): string {
  return execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 60_000,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
}

describe('eval workers', () => {
  it('drop --input-type from the inherited execArgv, both forms, and keep the rest', () => {
    expect(evalWorkerArgv(['--input-type=module', '--max-old-space-size=4096'])).toEqual(['--max-old-space-size=4096']);
    expect(evalWorkerArgv(['--input-type', 'module', '--enable-source-maps'])).toEqual(['--enable-source-maps']);
    expect(evalWorkerArgv([])).toEqual([]);
  });

  it('the gpu device thread starts under node --input-type=module -e', () => {
    const out = runModule(
      `import { createGpuBackend } from ${JSON.stringify(DIST)}; const b = createGpuBackend({ mode: 'webasm' }); console.log(b.mode); b.close();`,
      { RRT_GPU_START_TIMEOUT_MS: '20000' },
    );
    expect(out.trim()).toBe('webasm');
  });

  it.runIf(availableParallelism() > 1)('the cpu pool starts its workers under node --input-type=module -e', () => {
    const out = runModule(
      `import { backendByName, randn, matmul } from ${JSON.stringify(DIST)};
       const b = backendByName('cpu');
       const a = randn([256, 256], { backend: b });
       const until = Date.now() + 20000;
       while (b.info().details.workersReady === 0 && Date.now() < until) { matmul(a, a).dataSync(); await new Promise((r) => setTimeout(r, 50)); }
       console.log(b.info().details.workersReady);`,
    );
    expect(Number(out.trim())).toBeGreaterThan(0);
  });
});
