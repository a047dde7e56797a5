// Builds the relaxed recursive model with trained early exits that the quality and serving
// numbers in packages/batching/README.md use, from the shipped default model:
//
//   npx tsx packages/batching/scripts/make-exit-model.ts [--loops 2] [--rank 32] [--steps 120]
//
// Run from the repository root. Writes .rrt-cache/batching/exit-model/ (override with --out).
// --model DIR starts from another model folder (config.json, model.safetensors, tokenizer.json)
// instead of the shipped one; --smoke builds a tiny random model in seconds to check the pipeline.

import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { getBackend, manualSeed } from '@rrt/tensor';
import { DEFAULT_EXIT_MODEL_DIR, buildExitModel, loadOriginal } from './exit-model.js';

const { values: args } = parseArgs({
  options: {
    loops: { type: 'string', default: '2' },
    rank: { type: 'string', default: '32' },
    steps: { type: 'string', default: '120' },
    batch: { type: 'string', default: '8' },
    lr: { type: 'string', default: '1e-3' },
    'kd-weight': { type: 'string', default: '0.5' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string' },
    model: { type: 'string' },
    smoke: { type: 'boolean', default: false },
  },
});

const started = Date.now();
const log = (msg: string): void => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
const smoke = args.smoke!;
const seed = Number(args.seed);
manualSeed(seed);
log(`backend ${getBackend().name}`);
const base = await loadOriginal(smoke, args.model);
const { info, save } = await buildExitModel(base, {
  loops: Number(args.loops),
  rank: Number(args.rank),
  steps: smoke ? 3 : Number(args.steps),
  batch: smoke ? 2 : Number(args.batch),
  lr: Number(args.lr),
  kdWeight: Number(args['kd-weight']),
  seed,
  smoke,
  command: `npx tsx packages/batching/scripts/make-exit-model.ts ${process.argv.slice(2).join(' ')}`.trim(),
  log,
});
const out = resolve(args.out ?? (smoke ? `${DEFAULT_EXIT_MODEL_DIR}-smoke` : DEFAULT_EXIT_MODEL_DIR));
save(out);
log(`saved to ${out} (${info.minutes.toFixed(1)} min of training)`);
