// Trains the default model shipped in packages/layers/models/kjv-llama: a byte-level BPE
// tokenizer and a small llama-style model on the training split of kjv.txt, on the CPU.
//
//   npx tsx packages/layers/scripts/train-default.ts [--steps 360] [--seed 1234] [--out DIR] ...
//
// Run it from the repository root (tsx maps @rrt/* to the sources through tsconfig.json).
// The backend is $RRT_BACKEND, else the default (cpu). --smoke trains a few steps of a tiny
// model into a temporary folder to check the pipeline. Checkpoints go to
// .rrt-cache/train-default/ and --resume continues from the latest one.
//
// The defaults are the shipped model's: 6 layers, d 256, ffn 512, vocabulary 2048, tied
// embeddings (4.46M parameters, 17.8 MB in F32, under the 20 MB budget for the package).

import { cpus, loadavg } from 'node:os';
import { mkdirSync, readFileSync, rmSync, writeFileSync, mkdtempSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { parseArgs } from 'node:util';
import { Generator, getBackend, manualSeed } from '@rrt/tensor';
import {
  BatchLoader, CausalLM, Trainer, type Batch, batches, countParams, defaultCorpusPath, defineConfig, evaluateLM, generate, loadTextData,
  loadTokenizer, nextTokenLoss, saveTokenizer, savePretrained, splitCorpus, trainBpe, defaultModelPath,
} from '../src/index.js';

const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '360' },
    seed: { type: 'string', default: '1234' },
    vocab: { type: 'string', default: '2048' },
    layers: { type: 'string', default: '6' },
    hidden: { type: 'string', default: '256' },
    heads: { type: 'string', default: '4' },
    ffn: { type: 'string', default: '512' },
    context: { type: 'string', default: '128' },
    batch: { type: 'string', default: '16' },
    lr: { type: 'string', default: '2e-3' },
    warmup: { type: 'string', default: '30' },
    'eval-every': { type: 'string', default: '60' },
    'eval-batches': { type: 'string', default: '8' },
    'log-every': { type: 'string', default: '10' },
    minutes: { type: 'string', default: '0' },
    'max-minutes': { type: 'string', default: '0' },
    out: { type: 'string' },
    resume: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
  },
});

const num = (k: keyof typeof args): number => Number(args[k]);
const smoke = args.smoke;
const seed = num('seed');
const steps = smoke ? 6 : num('steps');
const vocab = smoke ? 512 : num('vocab');
const seqLen = smoke ? 32 : num('context');
const batchSize = smoke ? 4 : num('batch');
const out = resolve(args.out ?? (smoke ? mkdtempSync(join(tmpdir(), 'rrt-kjv-smoke-')) : defaultModelPath()));
const ckptDir = resolve('.rrt-cache', smoke ? 'train-default-smoke' : 'train-default');
const command = `npx tsx packages/layers/scripts/train-default.ts ${process.argv.slice(2).join(' ')}`.trim();

manualSeed(seed);
const backend = getBackend();
const started = Date.now();
const log = (msg: string) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
log(`backend ${backend.name}; output ${out}`);

// 1. Tokenizer: byte-level BPE trained on the training split only.
const corpusPath = defaultCorpusPath();
const split = splitCorpus(readFileSync(corpusPath, 'utf8'));
let t0 = performance.now();
const tokenizer = trainBpe(split.train, { vocabSize: vocab, specialTokens: ['<|endoftext|>'] });
const tokenizerMs = performance.now() - t0;
log(`tokenizer: ${tokenizer.vocabSize} tokens in ${(tokenizerMs / 1000).toFixed(1)}s`);

// 2. Data: the same split, tokenised (cached) and packed into sequences of context + 1 tokens.
const data = loadTextData(corpusPath, tokenizer, { seqLen });
log(`data: ${data.train.tokens.length} training tokens (${data.train.count} sequences), ${data.validation.tokens.length} held-out tokens`);

// 3. Model.
const cfg = smoke
  ? defineConfig('llama', { vocabSize: tokenizer.vocabSize, hiddenSize: 32, numLayers: 2, numHeads: 2, intermediateSize: 64, maxPositions: seqLen, tieWordEmbeddings: true })
  : defineConfig('llama', {
      vocabSize: tokenizer.vocabSize, hiddenSize: num('hidden'), numLayers: num('layers'), numHeads: num('heads'),
      intermediateSize: num('ffn'), maxPositions: seqLen, tieWordEmbeddings: true,
    });
const model = new CausalLM(cfg, { backend, rng: new Generator(seed) });
const nParams = countParams(cfg).total;
log(`model: llama, ${cfg.numLayers} layers, d ${cfg.hiddenSize}, ${cfg.numHeads} heads, ffn ${cfg.intermediateSize}, context ${seqLen}, ${nParams} parameters (${((nParams * 4) / 1e6).toFixed(1)} MB F32)`);

// 4. Training.
const evalBatches = smoke ? 2 : num('eval-batches');
const heldOut = (maxBatches?: number) =>
  evaluateLM(model, batches(data.validation, { batchSize, shuffle: false }), { maxBatches, bytes: maxBatches === undefined ? data.validationScoredBytes : undefined });
const logEvery = smoke ? 1 : num('log-every');
const maxMs = num('max-minutes') * 60_000;
// --minutes M fits the number of steps to a time budget, measured over the first FIT_AT steps.
// That happens inside warmup, where the lr does not depend on the total, so the run is exactly
// the one `--steps <fitted>` gives.
const budgetMs = num('minutes') * 60_000;
const FIT_AT = 12;
const warmup = smoke ? 2 : num('warmup');
if (budgetMs > 0 && warmup <= FIT_AT) throw new Error(`--minutes needs --warmup > ${FIT_AT}`);
let firstStepMs = 0;
let fitted: number | null = null;
let lastInfo = { tokensPerSec: 0, elapsedMs: 0 };
const stepTimes: number[] = [];
let prevElapsed = 0;
const trainer: Trainer<Batch> = new Trainer<Batch>({
  model,
  data: new BatchLoader(data.train, { batchSize, seed }),
  loss: (b) => nextTokenLoss(model.forward(b.ids, b.shape).logits, b.targets),
  steps, lr: Number(args.lr), schedule: { kind: 'cosine', warmup, minLr: Number(args.lr) / 10 },
  weightDecay: 0.1, gradClip: 1,
  evalEvery: smoke ? 3 : num('eval-every'),
  evaluate: (step) => {
    const r = heldOut(evalBatches);
    log(`step ${step}: held-out loss ${r.loss.toFixed(4)} (perplexity ${r.perplexity.toFixed(2)}, first ${evalBatches} batches)`);
    return { loss: r.loss, perplexity: r.perplexity };
  },
  checkpointDir: ckptDir, checkpointEvery: smoke ? 3 : 60,
  onStep: (i) => {
    stepTimes.push(i.elapsedMs - prevElapsed);
    prevElapsed = i.elapsedMs;
    lastInfo = i;
    if (i.step === 1) firstStepMs = i.elapsedMs;
    if (budgetMs > 0 && i.step === FIT_AT && !args.resume) {
      // The first step is excluded (thread start-up); evaluations and checkpoints take about 6% more.
      const pace = ((i.elapsedMs - firstStepMs) / (FIT_AT - 1)) * 1.06;
      fitted = Math.max(FIT_AT, Math.min(steps, FIT_AT + Math.floor((budgetMs - i.elapsedMs) / pace)));
      trainer.setPlannedSteps(fitted);
      log(`${(pace / 1000).toFixed(2)} s per step: ${fitted} steps fit in ${args.minutes} min`);
    }
    if (i.step % logEvery === 0 || i.step === trainer.plannedSteps) {
      log(`step ${i.step}/${trainer.plannedSteps} loss ${i.loss.toFixed(4)} lr ${i.lr.toExponential(2)} |g| ${i.gradNorm.toFixed(3)} ` +
        `${Math.round(i.tokensPerSec)} tok/s, eta ${(i.etaMs / 60_000).toFixed(1)} min${i.skipped ? ' (skipped)' : ''}`);
    }
    if (maxMs > 0 && i.elapsedMs > maxMs) {
      log(`time budget of ${args['max-minutes']} min reached; stopping after this step`);
      trainer.stop();
    }
  },
});
let interrupted = false;
process.on('SIGINT', () => {
  log('interrupted: stopping after this step (a checkpoint is written)');
  interrupted = true;
  trainer.stop();
});
if (args.resume) {
  if (trainer.loadCheckpoint()) log(`resumed at step ${trainer.step}`);
} else {
  // A fresh run must not later resume from an older run's checkpoints.
  rmSync(ckptDir, { recursive: true, force: true });
}
const summary = await trainer.run();
if (interrupted) {
  log(`stopped at step ${summary.steps}; checkpoint ${summary.checkpoint}. Rerun with --resume to continue; nothing was exported.`);
  process.exit(130);
}
const trainMs = summary.elapsedMs;

// 5. Final held-out evaluation on every held-out sequence.
t0 = performance.now();
const final = heldOut();
log(`held-out: loss ${final.loss.toFixed(4)}, perplexity ${final.perplexity.toFixed(2)}, ${final.bitsPerByte!.toFixed(4)} bits/byte over ${final.tokens} tokens (${((performance.now() - t0) / 1000).toFixed(1)}s)`);

// 6. Save and check the saved files load back to the same logits.
mkdirSync(out, { recursive: true });
savePretrained(model, out, { format: 'pt' });
await saveTokenizer(tokenizer, join(out, 'tokenizer.json'));
const reloaded = await loadTokenizer(join(out, 'tokenizer.json'));
const probe = split.validation.slice(0, 2000);
if (reloaded.encode(probe).join() !== tokenizer.encode(probe).join()) throw new Error('tokenizer.json does not reproduce the trained tokenizer');
const sample = generate(model, tokenizer, { prompt: 'And God said', maxNewTokens: 40, temperature: 0 });
const sampled = generate(model, tokenizer, { prompt: 'The LORD is', maxNewTokens: 40, temperature: 0.8, topK: 50, seed });
const sizeMb = statSync(join(out, 'model.safetensors')).size / 1e6;
const medianStep = [...stepTimes].sort((a, b) => a - b)[Math.floor(stepTimes.length / 2)] ?? NaN;
const tokensSeen = summary.steps * batchSize * seqLen;

const md = `# kjv-llama: how this model was trained

${smoke ? '**SMOKE RUN** (pipeline check only; not the shipped model).\n\n' : ''}Produced by \`packages/layers/scripts/train-default.ts\` (run from the repository root):

\`\`\`
${backend.name === 'cpu' ? '' : `RRT_BACKEND=${backend.name} `}${command}
\`\`\`

| | |
|---|---|
| corpus | packages/layers/data/kjv.txt, training split of \`splitCorpus\` (every 20th chapter held out: ${split.validationSections} of ${split.trainSections + split.validationSections} chapters) |
| tokenizer | byte-level BPE trained on the training split, ${tokenizer.vocabSize} tokens (special: \`<|endoftext|>\`), ${(tokenizerMs / 1000).toFixed(1)} s |
| training tokens | ${data.train.tokens.length} (${data.trainBytes} bytes, ${(data.trainBytes / data.train.tokens.length).toFixed(2)} bytes/token) |
| model | llama-style: ${cfg.numLayers} layers, d ${cfg.hiddenSize}, ${cfg.numHeads} heads, gated SiLU MLP ${cfg.intermediateSize}, RMSNorm, RoPE, tied embeddings, context ${seqLen} |
| parameters | ${nParams} (model.safetensors ${sizeMb.toFixed(1)} MB, F32) |
| seed | ${seed} (init, data order and sampling) |
| optimizer | AdamW (beta 0.9 / 0.95, weight decay 0.1 on matrices), lr ${args.lr} peak, ${warmup} warmup steps, cosine to lr/10, gradient clip 1 |
| batch | ${batchSize} x ${seqLen} tokens |
| steps | ${summary.steps}${summary.steps < trainer.plannedSteps ? ` of ${trainer.plannedSteps} planned (stopped early)` : ''}${fitted !== null ? ` (fitted to the ${args.minutes}-minute budget after ${FIT_AT} steps; the same run as \`--steps ${fitted}\` without --minutes)` : ''}, ${summary.skippedSteps} skipped; ${tokensSeen} tokens seen (${(tokensSeen / data.train.scoredTokens).toFixed(2)} epochs) |
| backend | ${backend.name} (${JSON.stringify(backend.info().details)}) |
| machine | ${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}; load average ${loadavg().map((l) => l.toFixed(1)).join(' / ')} (1 / 5 / 15 min) at the end |
| training time | ${(trainMs / 60_000).toFixed(1)} min${args.resume ? ' (this session)' : ''}; median step ${medianStep.toFixed(0)} ms; ${Math.round(lastInfo.tokensPerSec)} tokens/s |
| held-out (all ${final.tokens} scored tokens) | loss ${final.loss.toFixed(4)} nats/token, **perplexity ${final.perplexity.toFixed(2)}**, ${final.bitsPerByte!.toFixed(4)} bits/byte |

Bits per byte divide the summed held-out loss (in bits) by the UTF-8 bytes of the scored target
tokens' text, so they compare across tokenizers; perplexity is per BPE token.

## Held-out loss during training (first ${evalBatches} held-out batches)

| step | loss | perplexity |
|---|---|---|
${summary.evals.map((e) => `| ${e.step} | ${e.metrics.loss.toFixed(4)} | ${e.metrics.perplexity.toFixed(2)} |`).join('\n')}

## Samples

Greedy, prompt "And God said":

> ${('And God said' + (sample.text ?? '')).replace(/\n/g, '\n> ')}

Temperature 0.8, top-k 50, seed ${seed}, prompt "The LORD is":

> ${('The LORD is' + (sampled.text ?? '')).replace(/\n/g, '\n> ')}
`;
writeFileSync(join(out, 'TRAINING.md'), md);
log(`wrote ${relative(process.cwd(), out) || out}: config.json, model.safetensors (${sizeMb.toFixed(1)} MB), tokenizer.json, TRAINING.md`);
log(`training ${(trainMs / 60_000).toFixed(1)} min, median step ${medianStep.toFixed(0)} ms, ${Math.round(lastInfo.tokensPerSec)} tokens/s`);
