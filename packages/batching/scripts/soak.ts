// The serving engine's soak test (the same checks as src/soak.test.ts), printing its figures:
//
//   npx tsx packages/batching/scripts/soak.ts [--requests 10000] [--seed 1] [--max-batch 16] [--scheduler static,sequence,depthwise] [--json]
//
// A tiny random recursive model (soakModel: d 16, 2 blocks x 2 loops, vocabulary 64, context 24)
// serves a stream of requests (prompts of 1-6 tokens drawn from 64 distinct ones, 1-6 new tokens,
// about 2 arriving per call), 10% cancelled and 5% malformed, through each scheduler with early
// exit off; every result is checked against one-at-a-time greedy decoding. The test
// (src/soak.test.ts) runs the same stream with 600 requests. Exits with status 1 if a check fails.

import { parseArgs } from 'node:util';
import { type SchedulerKind, formatSoak, soak, soakModel, soakReference } from '../src/index.js';

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: '10000' },
    seed: { type: 'string', default: '1' },
    'max-batch': { type: 'string', default: '16' },
    scheduler: { type: 'string', default: 'static,sequence,depthwise' },
    json: { type: 'boolean', default: false },
  },
});

const model = soakModel();
const seed = Number(args.seed);
let t = performance.now();
const lengths = { maxPrompt: 6, maxNewTokens: 6, distinctPrompts: 64 };
const reference = soakReference(model, lengths);
const refMs = performance.now() - t;
if (!args.json) console.log(`greedy reference: ${reference.prompts.length} distinct prompts decoded one at a time in ${(refMs / 1000).toFixed(1)} s`);
const reports = [];
for (const scheduler of args.scheduler!.split(',') as SchedulerKind[]) {
  const r = soak(model, { scheduler, requests: Number(args.requests), seed, maxBatch: Number(args['max-batch']), reference, ...lengths, arrivalsPerCall: 2 });
  reports.push(r);
  if (!args.json) console.log(formatSoak(r));
}
if (args.json) console.log(JSON.stringify({ referenceMs: refMs, reports }, null, 2));
process.exitCode = reports.every((r) => r.problems.length === 0) ? 0 : 1;
