// The relaxed exit model served with its depth-wise LoRA as hooks and merged into per-depth
// weights (RelaxedLora.mergeDepths), against the original model: depth-wise batching without and
// with early exit, sequence-wise batching for the original, all on the benchmark's workload.
// Runs go round-robin for --rounds rounds, so every form sees the same machine; the table gives
// each run's median tokens/s and the median of its per-round ratios to the original model's run
// of the same round. Also checks that both forms produce the same tokens.
//
//   npx tsx packages/batching/scripts/lora-forms.ts [--requests 96] [--rounds 5] [--policy router:0.95] [--kv-fill predict]

import { parseArgs } from 'node:util';
import { type CausalLM } from '@rrt/layers';
import { type ExitPolicy, type GenerationResult, type KvFill, ServingEngine, type SchedulerKind, benchWorkload } from '../src/index.js';
import { median } from '../src/bench.js';
import { EXIT_MODEL_OPTIONS, kvFillFor, loadExitModel, loadOriginal, policiesFor, scriptContext } from './exit-model.js';

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: '96' },
    rounds: { type: 'string', default: '5' },
    policy: { type: 'string', default: 'router:0.95' },
    'kv-fill': { type: 'string', default: 'predict' },
    seed: { type: 'string', default: '0' },
    ...EXIT_MODEL_OPTIONS,
  },
});

const { dir, log } = scriptContext(args);
const { model, lora } = loadExitModel(dir);
const { original, data } = await loadOriginal(args.smoke!, args.model);
const reqs = benchWorkload(model, { requests: Number(args.requests), seed: Number(args.seed), corpus: data.validation.tokens });
const [policy] = policiesFor(args.policy!, model, data, dir, log);
const kvFill = kvFillFor(args['kv-fill']!, model, data, dir, log);

interface Run {
  name: string;
  model: CausalLM;
  scheduler: SchedulerKind;
  form: 'hooks' | 'merged' | null;
  exit?: ExitPolicy;
}
const runs: Run[] = [
  { name: 'original, sequence-wise', model: original, scheduler: 'sequence', form: null },
  { name: 'relaxed, hooks, depth-wise', model, scheduler: 'depthwise', form: 'hooks' },
  { name: 'relaxed, merged, depth-wise', model, scheduler: 'depthwise', form: 'merged' },
  { name: `relaxed, hooks, depth-wise + ${policy.name}`, model, scheduler: 'depthwise', form: 'hooks', exit: policy },
  { name: `relaxed, merged, depth-wise + ${policy.name}`, model, scheduler: 'depthwise', form: 'merged', exit: policy },
];

const tps = runs.map(() => [] as number[]);
const tokens = runs.map(() => '');
for (let round = 0; round < Number(args.rounds); round++) {
  runs.forEach((run, i) => {
    if (run.form === 'merged') lora.mergeDepths();
    else lora.unmergeDepths();
    const engine = new ServingEngine(run.model, { scheduler: run.scheduler, maxBatch: 32, exitPolicy: run.exit, kvFill: kvFill as KvFill });
    const out: GenerationResult[] = engine.serve(reqs);
    tps[i].push(engine.stats().tokensPerSecond);
    tokens[i] = out.map((r) => r.tokens.join(' ')).join('\n');
    engine.dispose();
    log(`round ${round + 1}: ${run.name} ${tps[i].at(-1)!.toFixed(1)} tok/s`);
  });
}

console.log(`${reqs.length} requests (benchWorkload seed ${args.seed}), max batch 32, K/V fill ${args['kv-fill']}, ${args.rounds} rounds`);
console.log(`${'run'.padEnd(44)} ${'median tok/s'.padStart(12)} ${'x original (median of rounds)'.padStart(30)}`);
runs.forEach((run, i) => {
  const ratio = median(tps[i].map((t, r) => t / tps[0][r]));
  console.log(`${run.name.padEnd(44)} ${median(tps[i]).toFixed(1).padStart(12)} ${ratio.toFixed(2).padStart(30)}`);
});
console.log(`same tokens with hooks and merged: without exit ${tokens[1] === tokens[2] ? 'yes' : 'no'}, with exit ${tokens[3] === tokens[4] ? 'yes' : 'no'}`);
