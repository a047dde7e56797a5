// How far early exit moves generations on the serving benchmark's own workload (benchWorkload,
// 256 requests, prompts from held-out text, greedy): for each exit policy and K/V fill, the
// share of generated tokens equal to the full-depth run's at the same position, and the mean
// negative log-likelihood that the model at full depth (and the original model) gives the
// generated tokens. A larger sample than exit-quality.ts's generation columns, and the same
// requests as serve-bench.ts.
//
//   npx tsx packages/batching/scripts/exit-drift.ts [--policies router:0.9,margin:1.5] [--fills propagate,predict] [--requests 256] [--json]

import { parseArgs } from 'node:util';
import { type GenerationResult, type KvFill, ServingEngine, benchWorkload, type ExitPolicy, servedTextNll } from '../src/index.js';
import { EXIT_MODEL_OPTIONS, kvFillFor, loadExitModel, loadOriginal, policiesFor, scriptContext } from './exit-model.js';

const { values: args } = parseArgs({
  options: {
    policies: { type: 'string', default: 'router:0.9,margin:1.5,max-prob:0.2,fixed:1' },
    fills: { type: 'string', default: 'propagate,predict' },
    requests: { type: 'string', default: '256' },
    seed: { type: 'string', default: '0' },
    ...EXIT_MODEL_OPTIONS,
  },
});

const smoke = args.smoke!;
const { dir, log } = scriptContext(args);
const { model } = loadExitModel(dir);
const { original, data } = await loadOriginal(smoke, args.model);
const reqs = benchWorkload(model, { requests: Number(args.requests), seed: Number(args.seed), corpus: data.validation.tokens });
const policies = policiesFor(args.policies!, model, data, dir, log);
const fills = args.fills!.split(',').map((f) => [f, kvFillFor(f, model, data, dir, log)] as const);

function serve(policy: ExitPolicy | undefined, kvFill: KvFill): { out: GenerationResult[]; exits: number[] } {
  const engine = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 32, exitPolicy: policy, kvFill });
  const out = engine.serve(reqs);
  const exits = engine.stats().exitsPerLoop;
  engine.dispose();
  return { out, exits };
}

const full = serve(undefined, 'propagate');
const agreement = (out: GenerationResult[]): number => {
  let same = 0, total = 0;
  out.forEach((r, i) => r.tokens.forEach((t, j) => {
    total++;
    if (full.out[i].tokens[j] === t) same++;
  }));
  return same / total;
};
const rows = [{ policy: 'never', kvFill: '-', exitsPerLoop: full.exits, agreement: 1, nll: servedTextNll(model, reqs, full.out), originalNll: servedTextNll(original, reqs, full.out) }];
log(`full depth: NLL ${rows[0].nll.toFixed(4)} (original model ${rows[0].originalNll.toFixed(4)})`);
for (const policy of policies) {
  for (const [name, kvFill] of fills) {
    const { out, exits } = serve(policy, kvFill);
    const row = { policy: policy.name, kvFill: name, exitsPerLoop: exits, agreement: agreement(out), nll: servedTextNll(model, reqs, out), originalNll: servedTextNll(original, reqs, out) };
    rows.push(row);
    log(`${row.policy} ${name}: exits ${exits.join('/')}, ${(100 * row.agreement).toFixed(1)}% equal, NLL ${row.nll.toFixed(4)} (original ${row.originalNll.toFixed(4)})`);
  }
}
if (args.json) {
  console.log(JSON.stringify({ requests: reqs.length, seed: Number(args.seed), rows }, null, 2));
} else {
  console.log(`${reqs.length} requests (seed ${args.seed}), ${rows[0].exitsPerLoop.reduce((a, b) => a + b, 0)} generated tokens at full depth\n`);
  console.log('| policy | KV fill | exits per loop | tokens equal to full depth | NLL at full depth | NLL under the original model |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.policy} | ${r.kvFill} | ${r.exitsPerLoop.join(' / ')} | ${(100 * r.agreement).toFixed(1)}% | ${r.nll.toFixed(3)} | ${r.originalNll.toFixed(3)} |`);
  }
}
