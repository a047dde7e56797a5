// Shared by the scripts: the relaxed recursive model with trained early exits, built from the
// shipped default model (or, with smoke, from a tiny random one), and its data.
//
// Recipe: CYCLE conversion with the average init (the paper's best base for relaxed models),
// depth-wise LoRA with SVD init, then post-training of everything with the exit-aware loss
// (aggressive schedule + KD from the original model). The paper uptrains first and post-trains
// for exits after; on this budget the one phase does both, because its last exit is trained
// with the same CE + KD as uptraining.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Generator, noGrad, tidy } from '@rrt/tensor';
import {
  BatchLoader, ByteTokenizer, type CausalLM, CausalLM as LM, type TextData, type Tokenizer, Trainer, defaultCorpusPath, defineConfig, loadDefaultModel,
  loadTextData,
} from '@rrt/layers';
import { CYCLE, average, loadRecursive, saveRecursive, toRecursive } from '@rrt/recursive';
import { type RelaxedLora, loadAdapters, relax, saveAdapters } from '@rrt/lora';
import {
  type ExitPolicy, ExitRouter, KV_FILL_MODES, type KvFill, type KvFillMode, ROUTER_TRAINING_SEQUENCES, StatePredictor, exitLosses, exitTrainingLoss, fitStatePredictor,
  parseExitPolicy, servedContinuations, trainExitRouter,
} from '../src/index.js';

export const DEFAULT_EXIT_MODEL_DIR = resolve('.rrt-cache', 'batching', 'exit-model');

export interface ExitModelInfo {
  loops: number;
  rank: number;
  steps: number;
  batch: number;
  seqLen: number;
  lr: number;
  kdWeight: number;
  schedule: string;
  seed: number;
  smoke: boolean;
  minutes: number;
  command: string;
  /** Held-out loss of each exit before and after post-training (first 8 batches). */
  exitLossBefore: number[];
  exitLossAfter: number[];
}

export interface Loaded {
  /** The plain model the recursive one was made from (teacher and baseline). */
  original: CausalLM;
  tokenizer: Tokenizer;
  data: TextData;
}

/**
 * The default model (or the model folder `dir`: config.json, model.safetensors, tokenizer.json)
 * and the corpus, or a tiny random model on the byte tokenizer (smoke).
 */
export async function loadOriginal(smoke: boolean, dir?: string): Promise<Loaded> {
  if (smoke) {
    const tokenizer = new ByteTokenizer();
    const cfg = defineConfig('llama', { vocabSize: tokenizer.vocabSize, hiddenSize: 32, numLayers: 4, numHeads: 2, intermediateSize: 64, maxPositions: 64, tieWordEmbeddings: true });
    const original = new LM(cfg, { rng: new Generator(1), std: 0.1 }).eval();
    return { original, tokenizer, data: loadTextData(defaultCorpusPath(), tokenizer, { seqLen: 32 }) };
  }
  const { model, tokenizer } = await loadDefaultModel(dir ? { dir: resolve(dir) } : {});
  return { original: model, tokenizer, data: loadTextData(defaultCorpusPath(), tokenizer, { seqLen: model.cfg.maxPositions }) };
}

/** Mean held-out loss of each exit over the first n batches. */
export function heldOutExitLoss(model: CausalLM, data: TextData, n = 8, batch = 8): number[] {
  const sums: number[] = [];
  let count = 0;
  for (let i = 0; i < n && (i + 1) * batch <= data.validation.count; i++) {
    const b = data.validation.batch(Int32Array.from({ length: batch }, (_, j) => i * batch + j));
    const per = noGrad(() => tidy(() => exitLosses(model, b, { schedule: 'final' }).perExit.map((t) => t.item())));
    per.forEach((v, k) => (sums[k] = (sums[k] ?? 0) + v));
    count++;
  }
  return sums.map((s) => s / count);
}

export interface BuildOptions {
  loops: number;
  rank: number;
  steps: number;
  batch: number;
  lr: number;
  kdWeight: number;
  seed: number;
  smoke: boolean;
  command: string;
  log: (msg: string) => void;
}

/** Converts, relaxes and post-trains; returns the model and what was done. */
export async function buildExitModel(base: Loaded, opts: BuildOptions): Promise<{ model: CausalLM; info: ExitModelInfo; save: (dir: string) => void }> {
  const { original, data } = base;
  const { model, residuals } = toRecursive(original, { loops: opts.loops, scheme: CYCLE, init: average });
  const lora = relax(model, { rank: opts.rank, init: 'svd', residuals, seed: opts.seed });
  const before = heldOutExitLoss(model, data);
  opts.log(`relaxed recursive model: ${model.blocks.length} blocks x ${opts.loops} loops, LoRA rank ${opts.rank}; held-out loss per exit ${fmt(before)}`);
  model.train();
  const started = performance.now();
  const trainer = new Trainer({
    // The shared weights and the LoRA pairs, both trained (as in the paper's uptraining).
    model: lora.trainable(),
    data: new BatchLoader(data.train, { batchSize: opts.batch, seed: opts.seed }),
    loss: (b) => exitTrainingLoss(model, b, { schedule: 'aggressive', teacher: original, kdWeight: opts.kdWeight }),
    steps: opts.steps,
    lr: opts.lr,
    schedule: { kind: 'cosine', warmup: Math.max(1, Math.floor(opts.steps / 10)), minLr: opts.lr / 10 },
    onStep: (i) => {
      if (i.step % 10 === 0 || i.step === opts.steps) opts.log(`step ${i.step}/${opts.steps} loss ${i.loss.toFixed(4)} (${Math.round(i.tokensPerSec)} tok/s)`);
    },
  });
  await trainer.run();
  model.eval();
  const after = heldOutExitLoss(model, data);
  opts.log(`held-out loss per exit after post-training: ${fmt(after)}`);
  const info: ExitModelInfo = {
    loops: opts.loops, rank: opts.rank, steps: opts.steps, batch: opts.batch, seqLen: data.train.seqLen, lr: opts.lr, kdWeight: opts.kdWeight,
    schedule: 'aggressive', seed: opts.seed, smoke: opts.smoke, minutes: (performance.now() - started) / 60_000, command: opts.command,
    exitLossBefore: before, exitLossAfter: after,
  };
  const save = (dir: string): void => {
    mkdirSync(dir, { recursive: true });
    saveRecursive(model, join(dir, 'recursive'));
    saveAdapters(lora, join(dir, 'adapters'));
    writeFileSync(join(dir, 'info.json'), JSON.stringify(info, null, 2));
  };
  return { model, info, save };
}

/** Loads what make-exit-model.ts saved: the recursive model with its LoRA attached. */
export function loadExitModel(dir = DEFAULT_EXIT_MODEL_DIR): { model: CausalLM; lora: RelaxedLora; info: ExitModelInfo } {
  if (!existsSync(join(dir, 'info.json'))) {
    throw new Error(`${dir}: no exit model; build it with npx tsx packages/batching/scripts/make-exit-model.ts`);
  }
  const model = loadRecursive(join(dir, 'recursive'));
  const lora = loadAdapters(join(dir, 'adapters'), model);
  model.eval();
  return { model, lora, info: JSON.parse(readFileSync(join(dir, 'info.json'), 'utf8')) as ExitModelInfo };
}

/** The options every script that reads an exit model takes (parseArgs form). */
export const EXIT_MODEL_OPTIONS = {
  dir: { type: 'string' },
  model: { type: 'string' },
  smoke: { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
} as const;

/** The exit-model folder a script's --dir / --smoke name, and a stderr logger with elapsed seconds (silent with --json). */
export function scriptContext(args: { dir?: string; smoke?: boolean; json?: boolean }): { dir: string; log: (msg: string) => void } {
  const started = Date.now();
  return {
    dir: resolve(args.dir ?? (args.smoke ? `${DEFAULT_EXIT_MODEL_DIR}-smoke` : DEFAULT_EXIT_MODEL_DIR)),
    log: (msg) => {
      if (!args.json) console.error(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
    },
  };
}

export function fmt(xs: number[]): string {
  return `[${xs.map((x) => x.toFixed(3)).join(', ')}]`;
}

/** Prompts from the training split continued by the model at full depth (what router and predictor fit), made once per process. */
const servedCache = new WeakMap<CausalLM, number[][]>();
function servedFitSequences(model: CausalLM, data: TextData, log: (msg: string) => void): number[][] {
  let seqs = servedCache.get(model);
  if (!seqs) {
    const started = performance.now();
    seqs = servedContinuations(model, data.train.tokens, { count: ROUTER_TRAINING_SEQUENCES, seed: 1 });
    log(`${seqs.length} training prompts continued at full depth (${seqs.reduce((a, s) => a + s.length, 0)} tokens) in ${((performance.now() - started) / 1000).toFixed(0)} s`);
    servedCache.set(model, seqs);
  }
  return seqs;
}

/** What `file` holds (read with `load`), else what `fit` makes, saved to `file`. */
function loadOrFit<T extends { toJSON(): unknown }>(file: string, load: (json: never) => T, fit: () => T, log: (msg: string) => void): T {
  if (existsSync(file)) return load(JSON.parse(readFileSync(file, 'utf8')) as never);
  const started = performance.now();
  const made = fit();
  writeFileSync(file, JSON.stringify(made.toJSON()));
  log(`fitted in ${((performance.now() - started) / 1000).toFixed(0)} s; saved to ${file}`);
  return made;
}

/**
 * The exit router of the model in `dir` (router.json beside it), trained on the model's own
 * greedy continuations of training prompts and saved there when missing.
 */
export function exitRouterFor(model: CausalLM, data: TextData, dir: string, log: (msg: string) => void): ExitRouter {
  const backend = model.embed.weight.backend;
  return loadOrFit(join(dir, 'router.json'), (json) => ExitRouter.fromJSON(json, backend), () => {
    const { router, tokens, agreement, finalLoss } = trainExitRouter(model, servedFitSequences(model, data, log));
    log(`exit router: ${tokens} training tokens, exit top-1 equal to the last exit's for ${fmt(agreement)}, final loss ${fmt(finalLoss)}`);
    return router;
  }, log);
}

/** The state predictor of the model in `dir` (state-predictor.json beside it), fitted like the router when missing. */
export function statePredictorFor(model: CausalLM, data: TextData, dir: string, log: (msg: string) => void): StatePredictor {
  const backend = model.embed.weight.backend;
  return loadOrFit(join(dir, 'state-predictor.json'), (json) => StatePredictor.fromJSON(json, backend), () => fitStatePredictor(model, servedFitSequences(model, data, log)), log);
}

/** A --kv-fill value: a mode, or 'predict' for the model's state predictor (statePredictorFor). */
export function kvFillFor(spec: string, model: CausalLM, data: TextData, dir: string, log: (msg: string) => void): KvFill {
  if (spec === 'predict') return statePredictorFor(model, data, dir, log);
  if (!(KV_FILL_MODES as readonly string[]).includes(spec)) throw new Error(`unknown KV fill '${spec}'; expected ${KV_FILL_MODES.join(', ')} or predict`);
  return spec as KvFillMode;
}

/** Policies from comma-separated specs; a router:<p> spec gets the model's router (exitRouterFor). */
export function policiesFor(specs: string, model: CausalLM, data: TextData, dir: string, log: (msg: string) => void): ExitPolicy[] {
  const list = specs.split(',');
  const router = list.some((s) => s.startsWith('router:')) ? exitRouterFor(model, data, dir, log) : undefined;
  return list.map((s) => parseExitPolicy(s, router));
}
