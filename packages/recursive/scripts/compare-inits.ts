// Compares init methods of a Recursive Transformer (PAPER.md section 1): convert a teacher with
// B loops using each init, measure held-out perplexity, uptrain each with the same KD budget
// (same steps, lr, data order), and measure again. Prints a markdown table.
//
//   npx tsx packages/recursive/scripts/compare-inits.ts [--teacher DIR] [--loops 2] [--inits stepwise,average,lower]
//       [--steps 100] [--lr 1e-3] [--batch 8] [--context 64] [--eval-batches 16] [--out FILE]
//
// Run it from the repository root. The teacher is DIR (a Hugging Face folder with tokenizer.json),
// else the shipped default model (packages/layers/models/kjv-llama) when it exists, else a small
// llama trained here on kjv.txt with a byte tokenizer (cached in .rrt-cache/compare-inits/teacher;
// --train-teacher uses it even when the default model exists, --retrain rebuilds it). The
// backend is $RRT_BACKEND, else cpu, else ref.

import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Generator, getBackend, manualSeed, setBackend, type Backend } from '@rrt/tensor';
import {
  BatchLoader, ByteTokenizer, CausalLM, Trainer, type Batch, batches, defaultCorpusPath, defaultModelPath, defineConfig, evaluateLM, loadPretrained,
  loadTextData, loadTokenizer, nextTokenLoss, savePretrained, saveTokenizer, type TextData,
} from '@rrt/layers';
import { INITS, toRecursive, uptrain } from '@rrt/recursive';

const { values: args } = parseArgs({
  options: {
    teacher: { type: 'string' },
    loops: { type: 'string', default: '2' },
    inits: { type: 'string', default: 'stepwise,average,lower' },
    steps: { type: 'string', default: '100' },
    lr: { type: 'string', default: '1e-3' },
    warmup: { type: 'string', default: '10' },
    temperature: { type: 'string', default: '1' },
    batch: { type: 'string', default: '8' },
    context: { type: 'string', default: '64' },
    'eval-batches': { type: 'string', default: '16' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string' },
    retrain: { type: 'boolean', default: false },
    'train-teacher': { type: 'boolean', default: false },
    'teacher-steps': { type: 'string', default: '600' },
    'teacher-layers': { type: 'string', default: '6' },
    'teacher-hidden': { type: 'string', default: '64' },
    'teacher-lr': { type: 'string', default: '3e-3' },
  },
});
const num = (k: keyof typeof args): number => Number(args[k]);
const command = `npx tsx packages/recursive/scripts/compare-inits.ts ${process.argv.slice(2).join(' ')}`.trim();
const started = Date.now();
const log = (msg: string) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

function pickBackend(): Backend {
  try {
    return getBackend();
  } catch {
    // No fast backend registered on this checkout: the float32 reference one still works.
    return setBackend('ref');
  }
}

const seed = num('seed');
manualSeed(seed);
const backend = pickBackend();
const seqLen = num('context');
const batchSize = num('batch');
const evalBatches = num('eval-batches');
const cacheDir = resolve('.rrt-cache', 'compare-inits');

/** A small llama trained on the training split of kjv.txt with a byte tokenizer. */
async function trainTeacher(dir: string): Promise<string> {
  const tokenizer = new ByteTokenizer();
  const data = loadTextData(defaultCorpusPath(), tokenizer, { seqLen });
  const hidden = num('teacher-hidden');
  const cfg = defineConfig('llama', {
    vocabSize: tokenizer.vocabSize, hiddenSize: hidden, numLayers: num('teacher-layers'), numHeads: 4, numKvHeads: 4,
    intermediateSize: Math.round((hidden * 8) / 3 / 4) * 4, maxPositions: seqLen, tieWordEmbeddings: true,
  });
  const model = new CausalLM(cfg, { backend, rng: new Generator(seed) });
  const steps = num('teacher-steps');
  const ckptDir = join(cacheDir, 'teacher-checkpoints');
  log(`training a teacher: llama ${cfg.numLayers} layers, d ${cfg.hiddenSize}, ${model.numParameters()} parameters, ${steps} steps of ${batchSize} x ${seqLen} bytes`);
  const trainer = new Trainer<Batch>({
    model, data: new BatchLoader(data.train, { batchSize, seed }), steps, lr: num('teacher-lr'),
    schedule: { kind: 'cosine', warmup: 20, minLr: num('teacher-lr') / 10 }, weightDecay: 0.1,
    loss: (b) => nextTokenLoss(model.forward(b.ids, b.shape).logits, b.targets),
    // An interrupted run resumes from here (same options), so a long teacher run is not lost.
    checkpointDir: ckptDir, checkpointEvery: 50,
    onStep: (i) => {
      if (i.step % 50 === 0 || i.step === steps) log(`teacher step ${i.step}/${steps} loss ${i.loss.toFixed(4)} (${Math.round(i.tokensPerSec)} tok/s)`);
    },
  });
  if (trainer.loadCheckpoint()) log(`teacher: resumed at step ${trainer.step}`);
  await trainer.run();
  mkdirSync(dir, { recursive: true });
  savePretrained(model, dir);
  await saveTokenizer(tokenizer, join(dir, 'tokenizer.json'));
  writeFileSync(join(dir, 'TRAINING.md'), `Teacher for compare-inits, trained by:\n\n    ${command}\n\n${steps} steps, batch ${batchSize} x ${seqLen}, lr ${args['teacher-lr']}, seed ${seed}, backend ${backend.name}.\n`);
  model.dispose();
  return dir;
}

async function teacherDir(): Promise<{ dir: string; origin: string }> {
  if (args.teacher) return { dir: resolve(args.teacher), origin: `--teacher ${args.teacher}` };
  const shipped = defaultModelPath();
  const hasShipped = existsSync(join(shipped, 'model.safetensors'));
  if (hasShipped && !args['train-teacher']) return { dir: shipped, origin: 'the shipped default model (packages/layers/models/kjv-llama)' };
  const own = join(cacheDir, 'teacher');
  if (args.retrain) {
    rmSync(own, { recursive: true, force: true });
    rmSync(join(cacheDir, 'teacher-checkpoints'), { recursive: true, force: true });
  }
  if (!existsSync(join(own, 'model.safetensors'))) await trainTeacher(own);
  return { dir: own, origin: `a small byte-level llama trained by this script (${own}${hasShipped ? '' : '; the default model was not available'})` };
}

const { dir, origin } = await teacherDir();
const tokenizer = await loadTokenizer(join(dir, 'tokenizer.json'));
const teacher = loadPretrained(dir, { backend });
teacher.eval();
if (teacher.cfg.maxPositions < seqLen) throw new Error(`--context ${seqLen} exceeds the teacher's context ${teacher.cfg.maxPositions}`);
const data: TextData = loadTextData(defaultCorpusPath(), tokenizer, { seqLen });
const heldOut = (m: CausalLM) => evaluateLM(m, batches(data.validation, { batchSize, shuffle: false }), { maxBatches: evalBatches > 0 ? evalBatches : undefined });
const teacherEval = heldOut(teacher);
log(`teacher (${origin}): ${teacher.cfg.numLayers} layers, ${teacher.numParameters()} parameters; held-out perplexity ${teacherEval.perplexity.toFixed(3)} over ${teacherEval.tokens} tokens`);

const loops = num('loops');
const steps = num('steps');
const rows: { init: string; unique: number; before: number; after: number; minutes: number }[] = [];
for (const name of String(args.inits).split(',')) {
  const init = INITS[name];
  if (!init) throw new Error(`unknown init "${name}"; known: ${Object.keys(INITS).join(', ')}`);
  const t0 = Date.now();
  const { model } = toRecursive(teacher, { loops, init, seed });
  const before = heldOut(model).perplexity;
  log(`${name}: ${model.blocks.length} shared blocks, ${model.numParameters()} parameters; held-out perplexity before uptraining ${before.toFixed(3)}`);
  await uptrain(model, teacher, new BatchLoader(data.train, { batchSize, seed }), {
    steps, lr: num('lr'), schedule: { kind: 'cosine', warmup: num('warmup'), minLr: num('lr') / 10 }, loss: 'kd', temperature: num('temperature'),
    onStep: (i) => {
      if (i.step % 25 === 0 || i.step === steps) log(`${name} uptrain step ${i.step}/${steps} KD loss ${i.loss.toFixed(4)}`);
    },
  });
  const after = heldOut(model).perplexity;
  log(`${name}: held-out perplexity after ${steps} KD steps ${after.toFixed(3)}`);
  rows.push({ init: name, unique: model.numParameters(), before, after, minutes: (Date.now() - t0) / 60_000 });
  model.dispose();
}

const table = [
  `Teacher: ${origin}; ${teacher.cfg.numLayers} layers, ${teacher.numParameters()} parameters, held-out perplexity ${teacherEval.perplexity.toFixed(3)}.`,
  `Recursive: CYCLE, ${loops} loops; uptraining: ${steps} steps of forward-KL KD (T = ${args.temperature}), batch ${batchSize} x ${seqLen}, AdamW lr ${args.lr} (cosine, ${args.warmup} warmup), same data order for every init.`,
  `Held-out: the first ${evalBatches > 0 ? evalBatches : 'all'} batches of the held-out split of kjv.txt (${teacherEval.tokens} tokens). Backend ${backend.name}.`,
  '',
  '| init | parameters | held-out perplexity, converted | after KD uptraining |',
  '|---|---|---|---|',
  `| (teacher) | ${teacher.numParameters()} | ${teacherEval.perplexity.toFixed(3)} | |`,
  ...rows.map((r) => `| ${r.init} | ${r.unique} | ${r.before.toFixed(3)} | ${r.after.toFixed(3)} |`),
  '',
  `Command: \`${backend.name === 'cpu' ? '' : `RRT_BACKEND=${backend.name} `}${command}\``,
].join('\n');
console.log('\n' + table);
const out = resolve(args.out ?? join(cacheDir, 'results.md'));
mkdirSync(join(out, '..'), { recursive: true });
writeFileSync(out, table + '\n');
log(`wrote ${out}`);
