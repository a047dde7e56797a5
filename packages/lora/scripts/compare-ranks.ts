// Relaxed Recursive Transformers at several LoRA ranks on the shipped teacher (models/kjv-llama):
// held-out perplexity of the full model, the plain recursive model and relaxed models (SVD init
// vs zero init), before and after the same short uptraining (KD from the teacher), with
// non-embedding parameter counts. Prints a markdown table and writes JSON.
//
//   npx tsx packages/lora/scripts/compare-ranks.ts [--loops 2] [--ranks 8,32,128,256]
//     [--steps 40] [--batch 8] [--context 128] [--lr 1e-3] [--eval-batches 16] [--out FILE]
//
// Run from the repository root (tsx maps @rrt/* to the sources through tsconfig.json). Every
// configuration trains on the same batches in the same order (one seed) and is scored on the
// same held-out batches (the first --eval-batches of kjv.txt's held-out split, in order).

import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { getBackend, manualSeed } from '@rrt/tensor';
import {
  BatchLoader, type CausalLM, Trainer, batches, countParams, defaultCorpusPath, evaluateLM, loadDefaultModel, loadTextData, type Batch,
} from '@rrt/layers';
import { average, stepwise, toRecursive, uptrainLoss, type InitMethod } from '@rrt/recursive';
import { countRelaxedParams, relax } from '@rrt/lora';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    loops: { type: 'string', default: '2' },
    ranks: { type: 'string', default: '8,32,128,256' },
    steps: { type: 'string', default: '40' },
    batch: { type: 'string', default: '8' },
    context: { type: 'string', default: '128' },
    lr: { type: 'string', default: '1e-3' },
    'eval-batches': { type: 'string', default: '16' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string', default: '.rrt-cache/compare-ranks.json' },
  },
});
const loops = Number(args.loops), steps = Number(args.steps), batchSize = Number(args.batch), seqLen = Number(args.context);
const lr = Number(args.lr), evalBatches = Number(args['eval-batches']), seed = Number(args.seed);
const ranks = args.ranks.split(',').map(Number);
const command = `npx tsx packages/lora/scripts/compare-ranks.ts ${process.argv.slice(2).join(' ')}`.trim();

manualSeed(seed);
const backend = getBackend();
const { model: teacher, tokenizer, dir } = await loadDefaultModel({ backend, dir: args.model });
const data = loadTextData(defaultCorpusPath(), tokenizer, { seqLen });
const heldOut: Batch[] = [...batches(data.validation, { batchSize, shuffle: false, dropLast: true })].slice(0, evalBatches);
const evaluate = (model: CausalLM) => evaluateLM(model, heldOut).perplexity;
console.log(`teacher ${dir}: ${teacher.depth} layers, d ${teacher.cfg.hiddenSize}; backend ${backend.name}; ${heldOut.length} held-out batches of [${batchSize}, ${seqLen}]`);

interface Row {
  model: string;
  init: string;
  rank: number | null;
  nonEmbedding: number;
  before: number;
  after: number | null;
  seconds: number;
}
const rows: Row[] = [];
const t0 = performance.now();
rows.push({ model: 'full (teacher)', init: '-', rank: null, nonEmbedding: countParams(teacher.cfg).nonEmbedding, before: evaluate(teacher), after: null, seconds: 0 });
console.log(`full: ppl ${rows[0].before.toFixed(3)}`);

/**
 * Converts, optionally relaxes, scores, uptrains with KD for `steps`, scores again. With
 * `foldNorms: false` (the paper's plain residual W_l - W_shared, shared norm gains left as they
 * are) it only scores the init.
 */
async function run(label: string, baseInit: InitMethod, rank: number, init: 'svd' | 'zero', foldNorms = true): Promise<void> {
  const started = performance.now();
  const { model, residuals } = toRecursive(teacher, { loops, init: baseInit });
  const lora = rank > 0 ? relax(model, { rank, init, residuals, seed, foldNorms }) : null;
  const count = countRelaxedParams(model.cfg, model.schedule, { rank });
  const before = evaluate(model);
  if (!foldNorms) {
    const row = { model: label, init: `${baseInit.name} + ${init}, unfolded norms`, rank, nonEmbedding: count.nonEmbedding, before, after: null, seconds: (performance.now() - started) / 1000 };
    rows.push(row);
    console.log(`${label} ${row.init} r=${rank}: ppl ${before.toFixed(3)}`);
    lora?.remove();
    model.dispose();
    return;
  }
  const trainer = new Trainer<Batch>({
    model: lora ? lora.trainable() : model,
    loss: uptrainLoss(model, teacher, { loss: 'kd' }),
    data: new BatchLoader(data.train, { batchSize, seed }),
    steps,
    lr,
    schedule: { kind: 'cosine', warmup: Math.max(1, Math.floor(steps / 10)) },
  });
  await trainer.run();
  const after = evaluate(model);
  const row = { model: label, init: rank > 0 ? `${baseInit.name} + ${init}` : baseInit.name, rank, nonEmbedding: count.nonEmbedding, before, after, seconds: (performance.now() - started) / 1000 };
  rows.push(row);
  console.log(`${label} ${row.init} r=${rank}: ${(count.nonEmbedding / 1e6).toFixed(3)}M non-embedding, ppl ${before.toFixed(3)} -> ${after.toFixed(3)} (${row.seconds.toFixed(0)} s)`);
  lora?.remove();
  model.dispose();
}

await run('recursive', stepwise, 0, 'zero');
await run('recursive', average, 0, 'zero');
for (const rank of ranks) {
  for (const init of ['svd', 'zero'] as const) await run('relaxed', average, rank, init);
}
// The largest rank once more with the paper's plain residual (norm gains not folded): init only.
await run('relaxed', average, Math.max(...ranks), 'svd', false);

const fmt = (n: number | null) => (n === null ? '-' : n.toFixed(2));
const table = [
  `| model | base init + LoRA init | rank | non-embedding params | held-out ppl before uptraining | after ${steps} steps |`,
  '|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.model} | ${r.init} | ${r.rank ?? '-'} | ${(r.nonEmbedding / 1e6).toFixed(3)}M | ${fmt(r.before)} | ${fmt(r.after)} |`),
].join('\n');
console.log(`\n${command}\n\n${table}\n`);
console.log(`total ${((performance.now() - t0) / 1000 / 60).toFixed(1)} min`);
writeFileSync(args.out, JSON.stringify({ command, teacher: dir, loops, steps, batchSize, seqLen, lr, evalBatches, backend: backend.name, rows }, null, 2) + '\n');
process.exit(0);
