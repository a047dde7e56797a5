// The built executable (skipped until `pnpm build` has produced dist/bin.js).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './test-util.js';

const BIN = join(REPO_ROOT, 'packages/cli/dist/bin.js');
const env = { ...process.env, RRT_BACKEND: 'ref', RRT_DEBUG: '' };

describe.skipIf(!existsSync(BIN))('dist/bin.js', () => {
  it('exits with the command exit codes', () => {
    const help = spawnSync('node', [BIN, '--help'], { cwd: REPO_ROOT, env, encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Usage: rrt');
    const bad = spawnSync('node', [BIN, 'params', '--config', 'packages/lora/test/fixtures/gemma-2b.config.json', '--bogus'], { cwd: REPO_ROOT, env, encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    const ok = spawnSync('node', [BIN, 'params', '--config', 'packages/lora/test/fixtures/gemma-2b.config.json', '--loops', '2', '--rank', '64', '--json'], {
      cwd: REPO_ROOT,
      env,
      encoding: 'utf8',
    });
    expect(ok.status).toBe(0);
    expect(Math.round(JSON.parse(ok.stdout).relaxed.nonEmbedding / 1e7)).toBe(107);
  });

  it('SIGINT during train saves a checkpoint and exits 130', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-bin-'));
    const sections = Array.from({ length: 40 }, (_, i) => `Chapter ${i}\n${'and the earth was without form '.repeat(3)}`);
    writeFileSync(join(dir, 'c.txt'), sections.join('\n\n'));
    const args = ['train', '--data', join(dir, 'c.txt'), '--out', join(dir, 'run'), '--layers', '1', '--hidden', '16', '--heads', '2'];
    args.push('--seq-len', '16', '--batch-size', '2', '--steps', '100000', '--log-every', '1', '--no-cache', '--eval-every', '0');
    const child = spawn('node', [BIN, ...args], { cwd: dir, env });
    let stderr = '';
    let stdout = '';
    let sent = false;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      // Once: a second Ctrl-C quits without saving.
      if (!sent && /step 2\/100000/.test(stderr)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    expect(stderr).toContain('interrupt: stopping after this step');
    expect(code).toBe(130);
    const step = Number(/interrupted at step (\d+) of 100000/.exec(stdout)?.[1]);
    expect(step).toBeGreaterThanOrEqual(2);
    expect(existsSync(join(dir, 'run', 'checkpoints', `step-${String(step).padStart(8, '0')}.json`))).toBe(true);
  });
});
