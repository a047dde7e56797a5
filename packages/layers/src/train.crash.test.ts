// Crash safety of training checkpoints: a child process trains the shared tiny run and
// checkpoints after every step; it is killed with SIGKILL at random moments, 20 times. After
// every kill the folder must hold a checkpoint that loads and continues exactly like a run that
// was never interrupted, and every loss a resumed child reports must equal the uninterrupted one.

import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Generator, backendByName } from '@rrt/tensor';
import { crashRun } from './train-crash.test-util.js';
import { latestCheckpoint, removeStaleTempFiles } from './train.js';

const REPO_ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const CHILD = fileURLToPath(new URL('../test/crash-child.ts', import.meta.url));
const TRIES = 20;
const backend = backendByName('ref');

/** Losses of the uninterrupted run, extended on demand: losses[s] is the loss of step s + 1. */
function reference() {
  const losses: number[] = [];
  const { trainer } = crashRun(backend, null, (i) => losses.push(i.loss));
  return (step: number) => {
    while (losses.length < step) trainer.trainStep();
    return losses[step - 1]!;
  };
}

interface ChildResult {
  losses: [number, number][];
  readyAt: number;
  killedAfterMs: number;
}

/** Spawns the child, waits until it has resumed and finished one step, lets it go on for `delayMs`, then SIGKILLs it. */
function runAndKill(dir: string, delayMs: number): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, 'ref'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let readyAt = -1;
    let timer: NodeJS.Timeout | undefined;
    const guard = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child did not finish a step within 120 s; stderr: ${err}`));
    }, 120_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^ready (\d+)$/m.exec(out);
      if (readyAt < 0 && m) readyAt = Number(m[1]);
      // The clock starts at the first finished step, so the kill lands in the train-and-save loop.
      if (readyAt >= 0 && !timer && /^loss /m.test(out)) {
        clearTimeout(guard);
        timer = setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code, signal) => {
      clearTimeout(guard);
      if (timer) clearTimeout(timer);
      if (signal !== 'SIGKILL') {
        reject(new Error(`child exited with code ${code} before it was killed; stderr: ${err}`));
        return;
      }
      // Only complete lines: the kill may cut the last one.
      const losses = out
        .split('\n')
        .slice(0, -1)
        .map((l) => /^loss (\d+) (\S+)$/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => [Number(m[1]), Number(m[2])] as [number, number]);
      resolve({ losses, readyAt, killedAfterMs: delayMs });
    });
  });
}

describe('training checkpoints survive SIGKILL', () => {
  it(`${TRIES} kills at random moments always leave a checkpoint that resumes with the uninterrupted losses`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-crash-'));
    const lossAt = reference();
    // The step-0 checkpoint every child resumes from.
    crashRun(backend, dir).trainer.saveCheckpoint();
    const rng = new Generator(2026);
    let stepsChecked = 0;
    let killsDuringWrite = 0;
    let lastStep = 0;
    for (let t = 0; t < TRIES; t++) {
      const r = await runAndKill(dir, Math.floor(rng.next() * 300));
      // It resumed where the previous child's last complete checkpoint was.
      expect(r.readyAt).toBeGreaterThanOrEqual(lastStep);
      for (const [step, loss] of r.losses) {
        expect(loss, `try ${t}, step ${step}`).toBe(lossAt(step));
        stepsChecked++;
      }
      if (readdirSync(dir).some((f) => f.endsWith('.tmp'))) killsDuringWrite++;

      // The newest checkpoint loads into a fresh trainer and continues with the same losses.
      const latest = latestCheckpoint(dir);
      expect(latest).not.toBeNull();
      const losses: number[] = [];
      const { trainer, model } = crashRun(backend, null, (i) => losses.push(i.loss));
      expect(trainer.loadCheckpoint(latest!)).toBe(true);
      const s = trainer.step;
      expect(s).toBeGreaterThanOrEqual(lastStep);
      trainer.trainStep();
      trainer.trainStep();
      expect(losses).toEqual([lossAt(s + 1), lossAt(s + 2)]);
      model.dispose();
      lastStep = s;
    }
    // Every child finished at least one step before it was killed.
    expect(stepsChecked).toBeGreaterThanOrEqual(TRIES);
    expect(lastStep).toBeGreaterThan(0);
    console.log(`crash test: ${TRIES} kills, ${killsDuringWrite} left a temporary file (killed while writing), ${stepsChecked} resumed losses checked, reached step ${lastStep}`);
    // Temporary files of the killed writers are cleaned up by the next save.
    removeStaleTempFiles(dir);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  }, 600_000);
});
