// `rrt train`: pretrain a vanilla decoder LM on a text file with the layers Trainer. The run
// folder holds config.json, tokenizer.json, rrt-train.json (the options, so --resume needs no
// flags) and checkpoints/; the final weights are written as model.safetensors, so the folder
// is a model that `rrt generate` and `rrt eval` load.

import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Option, type Command } from 'commander';
import {
  BatchLoader, CausalLM, MODEL_FAMILIES, TokenSequences, Trainer, batches, defineConfig, evaluateLM, latestCheckpoint, loadTextData,
  loadTokenizer, nextTokenLoss, parseHfConfig, saveTokenizer, savePretrained, scoredBytes, splitCorpus, toHfConfig,
  type ModelConfig, type ModelFamily, type ScheduleSpec, type TextData, type Tokenizer,
} from '@rrt/layers';
import { applyConfigValues, isPlainObject, readJsonFile } from '../config.js';
import type { CommandContext } from '../context.js';
import { EXIT_INTERRUPTED, UsageError } from '../errors.js';
import { parseNonNegativeInt, parseNumber, parsePositiveInt } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatCompact, formatDuration, formatInt } from '../ui/format.js';
import { corpusPath, newTokenizer, writeJsonFile } from './model-files.js';
import { TrainingMonitor, runReport } from './train-loop.js';

/** The options file of a run folder: what `--resume` restores. */
export const TRAIN_OPTIONS_FILE = 'rrt-train.json';

export interface TrainOptions {
  data?: string;
  out: string;
  family: ModelFamily;
  modelConfig?: string;
  layers: number;
  hidden: number;
  heads: number;
  kvHeads?: number;
  ffn?: number;
  tokenizer: string;
  vocabSize: number;
  seqLen: number;
  batchSize: number;
  steps: number;
  lr: number;
  schedule: 'constant' | 'cosine' | 'wsd';
  warmup?: number;
  minLr: number;
  weightDecay: number;
  gradClip: number;
  accumulation: number;
  heldOut: number;
  evalEvery: number;
  evalBatches: number;
  checkpointEvery: number;
  keepCheckpoints: number;
  logEvery?: number;
  cache: boolean;
  resume?: boolean;
  seed?: number;
}

export interface TrainReport {
  out: string;
  data: string;
  model: { family: string; layers: number; hidden: number; heads: number; vocab: number; parameters: number };
  tokenizer: string;
  seed: number;
  startStep: number;
  steps: number;
  targetSteps: number;
  interrupted: boolean;
  lastLoss: number | null;
  skippedSteps: number;
  tokens: number;
  elapsedMs: number;
  tokensPerSec: number;
  evals: { step: number; metrics: Record<string, number> }[];
  checkpoint: string | null;
  weights: string;
}

/** Defaults of the training options; `rrt demo` uses smaller ones. */
export const TRAIN_DEFAULTS = { layers: 4, hidden: 128, heads: 4, seqLen: 128, batchSize: 16, steps: 1000, lr: 1e-3, evalEvery: 200, checkpointEvery: 200 };

/** The options every training-like command shares (train, demo). */
export function addTrainOptions(cmd: Command, defaults: typeof TRAIN_DEFAULTS = TRAIN_DEFAULTS): Command {
  const d = defaults;
  cmd
    .option('--data <file>', 'UTF-8 text to train on (default: the shipped King James Bible)')
    .addOption(new Option('--family <name>', 'model family').choices([...MODEL_FAMILIES]).default('llama'))
    .option('--model-config <file>', 'a config.json giving the architecture (instead of --family/--layers/...)')
    .option('--layers <n>', 'decoder layers', parsePositiveInt, d.layers)
    .option('--hidden <d>', 'hidden size', parsePositiveInt, d.hidden)
    .option('--heads <n>', 'attention heads', parsePositiveInt, d.heads)
    .option('--kv-heads <n>', 'key/value heads (default: --heads; gemma: 1)', parsePositiveInt)
    .option('--ffn <n>', 'MLP width (default: 4 x hidden; gemma: 8 x)', parsePositiveInt)
    .option('--tokenizer <kind>', '"byte", "bpe" (trained on the data) or a tokenizer.json path', 'byte')
    .option('--vocab-size <n>', 'vocabulary of a trained BPE', parsePositiveInt, 1024);
  return addRunOptions(cmd, d);
}

/** Data, optimisation and bookkeeping options of a training run (train, demo, uptrain). */
export function addRunOptions(cmd: Command, d: Pick<typeof TRAIN_DEFAULTS, 'seqLen' | 'batchSize' | 'steps' | 'lr' | 'evalEvery' | 'checkpointEvery'>): Command {
  if (!cmd.options.some((o) => o.long === '--data')) cmd.option('--data <file>', 'UTF-8 text to train on (default: the shipped King James Bible)');
  return cmd
    .option('--seq-len <T>', 'tokens per training sequence', parsePositiveInt, d.seqLen)
    .option('--batch-size <B>', 'sequences per micro-batch', parsePositiveInt, d.batchSize)
    .option('--steps <n>', 'optimizer steps in total (a resumed run continues up to it)', parsePositiveInt, d.steps)
    .option('--lr <rate>', 'peak learning rate', parseNumber({ min: 0, exclusiveMin: true }), d.lr)
    .addOption(new Option('--schedule <kind>', 'learning-rate schedule').choices(['constant', 'cosine', 'wsd']).default('cosine'))
    .option('--warmup <n>', 'warmup steps of cosine / wsd (default: 10% of --steps, at most 50)', parseNonNegativeInt)
    .option('--min-lr <rate>', 'final learning rate of cosine / wsd', parseNumber({ min: 0 }), 0)
    .option('--weight-decay <w>', 'AdamW weight decay on matrices', parseNumber({ min: 0 }), 0.1)
    .option('--grad-clip <norm>', 'clip the gradient norm (0 = off)', parseNumber({ min: 0 }), 1)
    .option('--accumulation <n>', 'micro-batches per optimizer step', parsePositiveInt, 1)
    .option('--held-out <fraction>', 'fraction of the text held out for evaluation', parseNumber({ min: 0, max: 0.5, exclusiveMin: true }), 0.05)
    .option('--eval-every <n>', 'evaluate every n steps (0 = only at the end)', parseNonNegativeInt, d.evalEvery)
    .option('--eval-batches <n>', 'held-out batches per evaluation', parsePositiveInt, 20)
    .option('--checkpoint-every <n>', 'checkpoint every n steps (0 = only at the end)', parseNonNegativeInt, d.checkpointEvery)
    .option('--keep-checkpoints <n>', 'checkpoints kept in <out>/checkpoints', parsePositiveInt, 2)
    .option('--log-every <n>', 'print a loss line every n steps (default: 10 lines per run when there is no progress bar)', parsePositiveInt)
    .option('--no-cache', 'do not cache token ids in .rrt-cache/');
}

function modelConfig(ctx: CommandContext, o: TrainOptions, tokenizer: Tokenizer): ModelConfig {
  if (o.modelConfig !== undefined) {
    const raw = readJsonFile(ctx.resolvePath(o.modelConfig), o.modelConfig);
    if (!isPlainObject(raw)) throw new UsageError(`--model-config ${o.modelConfig}: expected a config.json object`);
    const cfg = parseHfConfig({ ...raw, vocab_size: tokenizer.vocabSize }, o.modelConfig);
    if (cfg.maxPositions < o.seqLen) throw new UsageError(`--seq-len ${o.seqLen} is longer than the model's context (${cfg.maxPositions}) in ${o.modelConfig}`);
    return cfg;
  }
  if (o.hidden % o.heads !== 0) throw new UsageError(`--hidden ${o.hidden} is not divisible by --heads ${o.heads}`);
  if (o.kvHeads !== undefined && o.heads % o.kvHeads !== 0) throw new UsageError(`--heads ${o.heads} is not divisible by --kv-heads ${o.kvHeads}`);
  return defineConfig(o.family, {
    vocabSize: tokenizer.vocabSize,
    hiddenSize: o.hidden,
    numLayers: o.layers,
    numHeads: o.heads,
    numKvHeads: o.kvHeads,
    intermediateSize: o.ffn,
    maxPositions: o.seqLen,
  });
}

/** The Trainer options addRunOptions's flags set: optimizer, schedule, evaluation cadence, checkpoints in `checkpointDir`. */
export function runTrainerOptions(
  o: Pick<TrainOptions, 'steps' | 'lr' | 'schedule' | 'warmup' | 'minLr' | 'weightDecay' | 'gradClip' | 'accumulation' | 'evalEvery' | 'checkpointEvery' | 'keepCheckpoints'>,
  checkpointDir: string,
) {
  return {
    steps: o.steps, lr: o.lr, schedule: scheduleOf(o), weightDecay: o.weightDecay, gradClip: o.gradClip, accumulation: o.accumulation,
    evalEvery: o.evalEvery, checkpointDir, checkpointEvery: o.checkpointEvery, keepCheckpoints: o.keepCheckpoints,
  };
}

/** The learning-rate schedule the options ask for. */
export function scheduleOf(o: Pick<TrainOptions, 'schedule' | 'warmup' | 'steps' | 'minLr'>): ScheduleSpec {
  if (o.schedule === 'constant') return { kind: 'constant' };
  if (o.warmup !== undefined && o.warmup >= o.steps) throw new UsageError(`--warmup ${o.warmup} must be below --steps ${o.steps}`);
  const warmup = o.warmup ?? Math.min(50, Math.floor(o.steps / 10));
  return o.schedule === 'cosine' ? { kind: 'cosine', warmup, minLr: o.minLr } : { kind: 'wsd', warmup, minLr: o.minLr };
}

/** Held-out metrics on the first `maxBatches` batches, bits per byte over exactly those tokens. */
export function heldOutMetrics(model: CausalLM, data: TextData, tokenizer: Tokenizer, batchSize: number, maxBatches: number): Record<string, number> {
  const val = data.validation;
  const n = Math.min(val.count, batchSize * maxBatches);
  const seqs = n === val.count ? val : new TokenSequences(val.tokens.subarray(0, n * val.seqLen + 1), val.seqLen, val.what);
  const bytes = n === val.count ? data.validationScoredBytes : scoredBytes(seqs, tokenizer);
  const r = evaluateLM(model, batches(seqs, { batchSize, shuffle: false, dropLast: false }), { bytes });
  return { loss: r.loss, perplexity: r.perplexity, bitsPerByte: r.bitsPerByte ?? NaN, tokens: r.tokens };
}

/** "eval at step N: loss, perplexity, bits/byte". */
export function metricsLine(step: number, m: Record<string, number>): string {
  return `eval at step ${step}: loss ${m.loss!.toFixed(4)}, perplexity ${m.perplexity!.toFixed(2)}, ${m.bitsPerByte!.toFixed(3)} bits/byte`;
}

/** The option values a run folder keeps (everything but where the run is and how it started). */
export function savedOptions(o: object, paths: Record<string, string>): Record<string, unknown> {
  const skip = ['out', 'resume', 'seed', 'modelConfig', 'config', 'backend', 'json', 'quiet'];
  const clean = Object.fromEntries(Object.entries(o).filter(([k, v]) => v !== undefined && !skip.includes(k)));
  return { ...clean, ...paths };
}

/**
 * --resume: applies the options saved in the run folder's options file to `cmd` (flags given
 * now win) and returns the saved seed; without --resume, refuses a folder that already holds a run.
 */
export function restoreRun(cmd: Command, opts: Record<string, unknown>, optionsPath: string, ckptDir: string, command: string): number | undefined {
  if (opts.resume !== true) {
    if (latestCheckpoint(ckptDir) !== null) throw new UsageError(`--out ${opts.out as string} already holds a run; add --resume to continue it, or pick another --out`);
    return undefined;
  }
  if (!existsSync(optionsPath)) throw new UsageError(`--resume: ${join(optionsPath, '..')} holds no run (no ${basename(optionsPath)}); start one without --resume`);
  const saved = readJsonFile(optionsPath);
  if (!isPlainObject(saved) || !isPlainObject(saved.options)) throw new Error(`${optionsPath}: not an options file of rrt ${command}`);
  applyConfigValues(cmd, saved.options, optionsPath);
  Object.assign(opts, cmd.opts());
  return typeof saved.seed === 'number' ? saved.seed : undefined;
}

/**
 * Trains (or resumes) a model as the options say, with a progress bar, periodic loss lines,
 * held-out evaluation and Ctrl-C handling. Returns the exit code.
 */
export async function runTraining(ctx: CommandContext, opts: Record<string, unknown>, cmd: Command, how: { progressBar?: boolean } = {}): Promise<number> {
  const out = ctx.resolvePath(opts.out as string);
  const ckptDir = join(out, 'checkpoints');
  const optionsPath = join(out, TRAIN_OPTIONS_FILE);
  const resume = opts.resume === true;
  const restoredSeed = restoreRun(cmd, opts, optionsPath, ckptDir, 'train');
  const seed = restoredSeed ?? (opts.seed as number | undefined) ?? 0;
  const o = opts as unknown as TrainOptions;
  const dataPath = corpusPath(ctx, o.data);
  const cacheDir = o.cache ? ctx.resolvePath('.rrt-cache') : null;

  const tokenizer = resume
    ? await loadTokenizer(join(out, 'tokenizer.json'))
    : await newTokenizer(ctx, o.tokenizer, o.vocabSize, () => splitCorpus(readFileSync(dataPath, 'utf8'), { heldOutFraction: o.heldOut }).train);
  const cfg = resume ? parseHfConfig(readJsonFile(join(out, 'config.json')), join(out, 'config.json')) : modelConfig(ctx, o, tokenizer);
  if (cfg.maxPositions < o.seqLen) throw new UsageError(`--seq-len ${o.seqLen} is longer than the model's context (${cfg.maxPositions})`);
  scheduleOf(o); // a bad --warmup fails before the data is read
  const model = new CausalLM(cfg);
  const parameters = model.numParameters();
  ctx.note(
    `model: ${cfg.family}, ${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ${cfg.numHeads} heads, ffn ${cfg.intermediateSize}, vocab ${cfg.vocabSize}: ${formatInt(parameters)} parameters`,
  );

  const data = loadTextData(dataPath, tokenizer, { seqLen: o.seqLen, heldOutFraction: o.heldOut, cacheDir });
  ctx.note(
    `data: ${basename(dataPath)}: ${formatInt(data.train.tokens.length)} training tokens (${formatInt(data.train.count)} sequences of ${o.seqLen}), ${formatInt(data.validation.tokens.length)} held out`,
  );
  if (!resume) {
    writeJsonFile(join(out, 'config.json'), toHfConfig(cfg));
    await saveTokenizer(tokenizer, join(out, 'tokenizer.json'));
    writeJsonFile(optionsPath, { format: 'rrt-train-options', version: 1, seed, options: savedOptions(o, { data: dataPath }) });
  }

  const loader = new BatchLoader(data.train, { batchSize: o.batchSize, seed });
  const monitor = new TrainingMonitor(ctx, {
    steps: o.steps,
    tokensPerStep: o.batchSize * o.seqLen * o.accumulation,
    label: 'train',
    logEvery: o.logEvery,
    progressBar: how.progressBar,
  });
  const trainer = new Trainer({
    ...runTrainerOptions(o, ckptDir),
    model,
    loss: (b) => nextTokenLoss(model.forward(b.ids, b.shape).logits, b.targets),
    data: loader,
    evaluate: (step) => {
      const m = heldOutMetrics(model, data, tokenizer, o.batchSize, o.evalBatches);
      ctx.note(metricsLine(step, m));
      return m;
    },
    onStep: monitor.onStep,
  });
  const run = await monitor.run(trainer, ckptDir, resume);
  const { startStep, interrupted } = run;
  savePretrained(model, out);
  await saveTokenizer(tokenizer, join(out, 'tokenizer.json'));

  const report: TrainReport = {
    out,
    data: dataPath,
    model: { family: cfg.family, layers: cfg.numLayers, hidden: cfg.hiddenSize, heads: cfg.numHeads, vocab: cfg.vocabSize, parameters },
    tokenizer: o.tokenizer,
    seed,
    ...runReport(run, o.steps),
    weights: join(out, 'model.safetensors'),
  };
  model.dispose();
  const lastEval = report.evals[report.evals.length - 1];
  ctx.output(
    () => [
      interrupted
        ? `interrupted at step ${report.steps} of ${report.targetSteps}; continue with: rrt train --out ${opts.out as string} --resume`
        : `trained steps ${startStep + 1}-${report.steps} in ${formatDuration(report.elapsedMs / 1000)} (${formatCompact(report.tokensPerSec)} tok/s); last loss ${report.lastLoss?.toFixed(4) ?? 'n/a'}`,
      ...(lastEval ? [`held-out ${metricsLine(lastEval.step, lastEval.metrics).replace(/^eval /, '')}`] : []),
      `saved: ${report.weights}${report.checkpoint ? `; checkpoint ${report.checkpoint}` : ''}`,
    ],
    () => ({ ...report }),
  );
  return interrupted ? EXIT_INTERRUPTED : 0;
}

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('train')
    .description('pretrain a vanilla decoder LM on a text file (progress bar, checkpoints, Ctrl-C saves, --resume)')
    .requiredOption('--out <dir>', 'run folder: config, tokenizer, checkpoints and final weights')
    .option('--resume', 'continue the run in --out from its latest checkpoint (its saved options apply; flags override)')
    .option('--config <file>', 'JSON file of option values (flags override it)');
  addTrainOptions(cmd);
  withExamples(cmd, [
    ['rrt train --out runs/kjv', 'a 4-layer byte-level llama on the shipped corpus'],
    ['rrt train --data my.txt --out runs/my --layers 6 --hidden 256 --steps 5000', 'a larger model on your text'],
    ['rrt train --out runs/kjv --resume', 'continue after Ctrl-C (or raise --steps to train longer)'],
    ['rrt train --config train.json --out runs/a --json', 'options from a file, summary as JSON'],
  ]);
  cmd.addHelpText('after', '\nCtrl-C stops after the current step, saves a checkpoint and exits with code 130.\n');
  defineAction(cmd, state, { config: 'options', run: (ctx, opts, command) => runTraining(ctx, opts, command) });
}
