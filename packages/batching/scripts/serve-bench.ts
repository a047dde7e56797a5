// serveBench on the relaxed recursive model with trained exits (make-exit-model.ts), with the
// original full-depth model as the vanilla baseline and prompts cut from held-out text.
//
//   npx tsx packages/batching/scripts/serve-bench.ts [--requests 256] [--policy max-prob:0.2[,router:0.5,fixed:1,...]] [--repeats 1] [--temperature 0] [--kv-fill propagate|reuse|reuse-loop|predict] [--lora merged|hooks] [--json]

import { parseArgs } from 'node:util';
import { getBackend } from '@rrt/tensor';
import { formatServeBench, formatServeBenchTimes, serveBench } from '../src/index.js';
import { EXIT_MODEL_OPTIONS, kvFillFor, loadExitModel, loadOriginal, policiesFor, scriptContext } from './exit-model.js';

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: '256' },
    seed: { type: 'string', default: '0' },
    'max-batch': { type: 'string', default: '32' },
    policy: { type: 'string', default: 'max-prob:0.2' },
    repeats: { type: 'string', default: '1' },
    'kv-fill': { type: 'string', default: 'propagate' },
    lora: { type: 'string', default: 'merged' },
    'new-tokens': { type: 'string' },
    'prompt-tokens': { type: 'string' },
    temperature: { type: 'string', default: '0' },
    baseline: { type: 'boolean', default: true },
    ...EXIT_MODEL_OPTIONS,
  },
  allowNegative: true,
});

const range = (s: string) => {
  const [min, max] = s.split('-').map(Number);
  return { min, max: max ?? min };
};
const { dir, log } = scriptContext(args);
const { model, lora, info } = loadExitModel(dir);
if (args.lora !== 'merged' && args.lora !== 'hooks') throw new Error(`--lora: merged or hooks, got ${args.lora}`);
const { original, data } = await loadOriginal(args.smoke!, args.model);
log(`backend ${getBackend().name}; ${model.blocks.length} blocks x ${info.loops} loops, rank ${info.rank}; policy ${args.policy}, KV fill ${args['kv-fill']}, LoRA ${args.lora}`);
const kvFill = kvFillFor(args['kv-fill']!, model, data, dir, log);
const exitPolicy = policiesFor(args.policy!, model, data, dir, log);
// After fitting (the same model either way, to rounding): per-depth merged weights, or the LoRA hooks.
if (args.lora === 'merged') lora.mergeDepths();
const report = serveBench(model, {
  requests: Number(args.requests),
  seed: Number(args.seed),
  maxBatch: Number(args['max-batch']),
  exitPolicy,
  repeats: Number(args.repeats),
  kvFill,
  newTokens: args['new-tokens'] ? range(args['new-tokens']) : undefined,
  promptTokens: args['prompt-tokens'] ? range(args['prompt-tokens']) : undefined,
  corpus: data.validation.tokens,
  temperature: Number(args.temperature),
  baseline: args.baseline ? original : undefined,
  onRun: (r) => log(`${r.name}: ${r.tokensPerSecond.toFixed(1)} tok/s, ${r.seconds.toFixed(1)} s`),
});
if (args.json) console.log(JSON.stringify({ backend: getBackend().info(), info, lora: args.lora, report }, null, 2));
else console.log(`${formatServeBench(report)}\n\nwhere the time went (fastest repeat of each run):\n${formatServeBenchTimes(report)}`);
