// The tiny training run shared by the crash-safety test and the child process it kills
// (packages/layers/test/crash-child.ts): both must build exactly the same run.

import { type Backend, Generator, affine } from '@rrt/tensor';
import { defineConfig } from './config.js';
import { CausalLM } from './lm.js';
import { BatchLoader, TokenSequences, type Batch } from './data.js';
import { nextTokenLoss } from './losses.js';
import { Trainer, type StepInfo } from './train.js';

/** More steps than any test reaches: a child trains until it is killed. */
export const CRASH_RUN_STEPS = 1_000_000;

const cfg = defineConfig('llama', { vocabSize: 32, hiddenSize: 32, numLayers: 2, numHeads: 2, intermediateSize: 64, maxPositions: 16 });
const period = Int32Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % 32);
const tokens = Int32Array.from({ length: 24 * 40 + 1 }, (_, i) => period[i % 24]!);

/**
 * A Trainer of a 2-layer llama (d 32, vocab 32) on a periodic token stream, batches [2, 8],
 * checkpointing after every step into `dir` (null: no checkpoints). The loss is scaled by a
 * draw from the trainer's own generator, so a resume must restore that state too.
 */
export function crashRun(backend: Backend, dir: string | null, onStep?: (info: StepInfo) => void): { trainer: Trainer<Batch>; model: CausalLM } {
  const model = new CausalLM(cfg, { backend, rng: new Generator(1) });
  const data = new BatchLoader(new TokenSequences(tokens, 8), { batchSize: 2, seed: 5 });
  const rng = new Generator(9);
  const trainer = new Trainer<Batch>({
    model, data, steps: CRASH_RUN_STEPS, lr: 1e-2, rng,
    checkpointDir: dir ?? undefined, checkpointEvery: 1, keepCheckpoints: 2,
    loss: (b) => affine(nextTokenLoss(model.forward(b.ids, b.shape).logits, b.targets), 1 + 0.1 * rng.next(), 0),
    onStep,
  });
  return { trainer, model };
}
