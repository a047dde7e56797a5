// `rrt demo`: the smallest end-to-end run: train a 2-layer byte-level model for 50 steps on the
// shipped corpus, printing the loss every 10 steps, and say how to sample from it.

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { defineAction, withExamples, type RunState } from '../program.js';
import { addTrainOptions, runTraining } from './train.js';

export const DEMO_DEFAULTS = { layers: 2, hidden: 64, heads: 4, seqLen: 64, batchSize: 8, steps: 50, lr: 3e-3, evalEvery: 0, checkpointEvery: 0 };

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('demo')
    .description('train a 2-layer model for 50 steps on the shipped corpus, printing the loss every 10 steps')
    .option('--out <dir>', 'where to write the model (default: a new temporary folder)');
  addTrainOptions(cmd, DEMO_DEFAULTS);
  withExamples(cmd, [
    ['rrt demo', 'about a minute on a laptop'],
    ['rrt demo --steps 200 --out runs/demo', 'longer, kept in runs/demo'],
  ]);
  defineAction(cmd, state, {
    run: async (ctx, opts, command) => {
      opts.out ??= mkdtempSync(join(tmpdir(), 'rrt-demo-'));
      opts.logEvery ??= 10;
      const code = await runTraining(ctx, opts, command, { progressBar: false });
      if (code === 0) ctx.note(`sample from it: rrt generate --model ${opts.out as string} "In the beginning"`);
      return code;
    },
  });
}
