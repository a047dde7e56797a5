// Quality of early exit on the relaxed recursive model (make-exit-model.ts) for each way of
// filling exited tokens' K/V: teacher-forced perplexity and top-1 agreement with the full-depth
// model on held-out text, and agreement of greedy generations with full-depth greedy ones.
//
//   npx tsx packages/batching/scripts/exit-quality.ts [--thresholds 0.5,0.7,0.9 | --policies margin:1.5,router:0.9] [--fills propagate,reuse,reuse-loop,predict] [--sequences 16] [--tokens 64]
//
// Prints a markdown table (the one in packages/batching/README.md); --json prints the raw results.

import { parseArgs } from 'node:util';
import { getBackend } from '@rrt/tensor';
import {
  type ExitPolicy, type KvFill, KV_FILL_MODES, evaluateExits, fixedDepthExit, generationAgreement, maxProbExit, neverExit, oracleExit,
} from '../src/index.js';
import { EXIT_MODEL_OPTIONS, kvFillFor, loadExitModel, loadOriginal, policiesFor, scriptContext } from './exit-model.js';

const { values: args } = parseArgs({
  options: {
    thresholds: { type: 'string', default: '0.5,0.7,0.9' },
    policies: { type: 'string' },
    fills: { type: 'string', default: [...KV_FILL_MODES, 'predict'].join(',') },
    sequences: { type: 'string', default: '16' },
    tokens: { type: 'string', default: '64' },
    prompts: { type: 'string', default: '16' },
    'new-tokens': { type: 'string', default: '32' },
    ...EXIT_MODEL_OPTIONS,
  },
});

const smoke = args.smoke!;
const { dir, log } = scriptContext(args);
const { model, info } = loadExitModel(dir);
const { data } = await loadOriginal(smoke, args.model);
const nSeq = Math.min(Number(args.sequences), data.validation.count);
const len = Math.min(Number(args.tokens), data.validation.seqLen + 1);
const sequences = Array.from({ length: nSeq }, (_, i) => Array.from(data.validation.sequence(i).subarray(0, len)));
const prompts = Array.from({ length: Math.min(Number(args.prompts), data.validation.count) }, (_, i) => Array.from(data.validation.sequence(data.validation.count - 1 - i).subarray(0, 16)));
const maxNewTokens = Number(args['new-tokens']);

const policies: ExitPolicy[] = args.policies
  ? policiesFor(args.policies, model, data, dir, log)
  : [neverExit(), ...args.thresholds!.split(',').map((t) => maxProbExit(Number(t))), fixedDepthExit(1), oracleExit()];

const fillSpecs = args.fills!.split(',');
const fills = new Map<string, KvFill>(['propagate', ...fillSpecs].map((f) => [f, kvFillFor(f, model, data, dir, log)]));
log(`backend ${getBackend().name}; model: ${model.blocks.length} blocks x ${info.loops} loops, rank ${info.rank}, ${info.steps} post-training steps`);
const rows: Record<string, unknown>[] = [];
for (const policy of policies) {
  // Policies that never exit early (or run every loop) fill nothing: one row is enough.
  const noFill = policy.name === 'never' || !!policy.hindsight;
  for (const spec of noFill ? ['propagate'] : fillSpecs) {
    const kvFill = fills.get(spec)!;
    const t0 = performance.now();
    const tf = evaluateExits(model, sequences, { policy, kvFill });
    const gen = generationAgreement(model, prompts, { policy, kvFill, maxNewTokens });
    const row = {
      policy: policy.name, kvFill: noFill ? '-' : spec,
      perplexity: tf.perplexity, fullPerplexity: tf.fullPerplexity, agreement: tf.agreement, meanLoops: tf.meanLoops, exitsPerLoop: tf.exitsPerLoop,
      generationAgreement: gen.agreement, generationIdentical: gen.identical, generationPrefix: gen.prefixFraction, generationLoops: gen.meanLoops,
    };
    rows.push(row);
    log(`${policy.name} ${spec}: ppl ${tf.perplexity.toFixed(3)} (full ${tf.fullPerplexity.toFixed(3)}), agreement ${tf.agreement.toFixed(3)}, ` +
      `loops ${tf.meanLoops.toFixed(2)}; generation agreement ${gen.agreement.toFixed(3)}, loops ${gen.meanLoops.toFixed(2)} (${((performance.now() - t0) / 1000).toFixed(1)}s)`);
  }
}

if (args.json) {
  console.log(JSON.stringify({ info, sequences: nSeq, tokens: len, prompts: prompts.length, maxNewTokens, rows }, null, 2));
} else {
  console.log(`held-out: ${nSeq} sequences x ${len} tokens (teacher-forced); generation: ${prompts.length} prompts of 16 tokens, ${maxNewTokens} greedy tokens\n`);
  console.log('| policy | KV fill | perplexity | top-1 agreement | mean loops | exits per loop | generation: token agreement | identical outputs | mean loops |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows as { [k: string]: any }[]) {
    console.log(`| ${r.policy} | ${r.kvFill} | ${r.perplexity.toFixed(2)} | ${(100 * r.agreement).toFixed(1)}% | ${r.meanLoops.toFixed(2)} | ${r.exitsPerLoop.join(' / ')} | ` +
      `${(100 * r.generationAgreement).toFixed(1)}% | ${(100 * r.generationIdentical).toFixed(0)}% | ${r.generationLoops.toFixed(2)} |`);
  }
}
