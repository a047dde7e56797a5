// The paper's pipeline at small scale (PAPER.md sections 1-4): convert a pretrained teacher into
// a 2-loop recursive model (CYCLE, stepwise), uptrain it with KD, relax a second conversion with
// SVD-init LoRA and uptrain it the same way, post-train the early exits, evaluate all of them on
// held-out text, and benchmark serving with continuous depth-wise batching.

import { noGrad, tidy, type Tensor } from '@rrt/tensor';
import {
  BatchLoader, Trainer, batches, evaluateLM, loadTextData, TokenSequences,
  type Batch, type CausalLM, type TextData, type Tokenizer,
} from '@rrt/layers';
import { CYCLE, stepwise, toRecursive, uptrainLoss } from '@rrt/recursive';
import { relax, residualsFrom } from '@rrt/lora';
import { runFullStudy, type FullStudyOptions, type FullStudyResult, type StudyRow } from './full.js';
import {
  allExitLogits, argmaxRow, exitTrainingLoss, makeRequests, maxProbExit, scheduleToSvg, serveBench, simulate, constantCost,
  type ServeBenchReport,
} from '@rrt/batching';

export interface PipelineOptions {
  teacher: CausalLM;
  tokenizer: Tokenizer;
  /** Text file to train and evaluate on. */
  corpus: string;
  /** Uptraining steps of the recursive and the relaxed model; early-exit post-training runs half. */
  steps: number;
  seed: number;
  seqLen: number;
  batchSize: number;
  /** Held-out batches per evaluation. */
  evalBatches: number;
  /** LoRA rank of the relaxed model. */
  rank: number;
  lr: number;
  /** Max-probability threshold of early exit in the serving benchmark (default 0.2, as `rrt demo`). */
  exitThreshold?: number;
  bench: { requests: number; maxBatch: number; newTokens: { min: number; max: number } };
  /** `rrt demo --full`: also run the full study (inits, ranks, zero vs SVD init, baselines). */
  full?: FullStudyOptions;
  /** Token cache folder (null: none). */
  cacheDir: string | null;
  log: (line: string) => void;
  /** A progress bar per training stage (the CLI draws one on a terminal); loss lines are logged either way. */
  progress?: (label: string, total: number) => StageProgress;
  /**
   * Polled after every training step and every stage (Ctrl-C in `rrt demo`): once it returns
   * true, the running stage stops and the pipeline returns what the finished stages measured,
   * with `interrupted` set.
   */
  stopRequested?: () => boolean;
}

export interface LossPoint {
  step: number;
  loss: number;
}

export interface ModelRow {
  name: string;
  parameters: number;
  loss: number;
  perplexity: number;
  bitsPerByte: number;
}

/** What the pipeline reports to a progress bar while a stage trains. */
export interface StageProgress {
  update(done: number, stats: { tokens?: number; loss?: number }): void;
  finish(): void;
}

export interface PipelineResult {
  /** Set when stopRequested ended the run early: the stage that was stopped (it and later ones are missing or partial). */
  interrupted?: { stage: string };
  teacher: { layers: number; hidden: number; vocab: number; parameters: number };
  conversion: { loops: number; scheme: string; init: string; depthMap: number[]; sharedLayers: number };
  rank: number;
  loraParameters: number;
  curves: { recursive: LossPoint[]; relaxed: LossPoint[]; exits: LossPoint[] };
  models: ModelRow[];
  /** Next-token accuracy of each exit on held-out text, before and after early-exit post-training (missing when interrupted before). */
  exitAccuracy?: { before: number[]; after: number[]; tokens: number };
  /** The serving benchmark, and below the schedule plot of its exit distribution (missing when interrupted before serving). */
  bench?: ServeBenchReport;
  /** The depth-wise schedule plot (not kept in result.json: renderSchedule(schedule) redraws it). */
  scheduleSvg?: string;
  /** What the schedule plot simulates. */
  schedule?: ScheduleInputs;
  exitDistribution?: number[];
  exitThreshold: number;
  /** The full study's rows, with `rrt demo --full`. */
  full?: FullStudyResult;
  stageSeconds: Record<string, number>;
  seconds: number;
}

/** The inputs of the depth-wise schedule plot: a simulated workload with the measured exit distribution. */
export interface ScheduleInputs {
  loops: number;
  maxBatch: number;
  requests: number;
  newTokens: { min: number; max: number };
  seed: number;
  /** Fraction of tokens leaving after each loop (sums to 1). */
  exitDistribution: number[];
  /** Calls drawn. */
  steps: number;
}

/**
 * The depth-wise schedule as SVG: continuous depth-wise batching of `s.requests` requests
 * (prompts of 12 tokens), simulated at unit cost per call; deterministic in its inputs, so a
 * saved report redraws the same plot.
 */
export function renderSchedule(s: ScheduleInputs): string {
  const sim = simulate({
    scheduler: 'depthwise',
    loops: s.loops,
    maxBatch: s.maxBatch,
    cost: constantCost(1),
    requests: makeRequests({ count: s.requests, prefixLength: 12, decodeLength: s.newTokens, seed: s.seed }),
    exitDistribution: s.exitDistribution,
    seed: s.seed,
    traceSteps: s.steps,
  });
  return scheduleToSvg(sim.trace, { maxSteps: s.steps });
}

/** Held-out loss / perplexity / bits per byte over the first `maxBatches` batches. */
function heldOut(model: CausalLM, data: TextData, o: PipelineOptions): { loss: number; perplexity: number; bitsPerByte: number } {
  const seqs = firstSequences(data.validation, o.batchSize * o.evalBatches);
  const bytes = Buffer.byteLength(o.tokenizer.decode(Array.from(seqs.scoredIds())), 'utf8');
  const r = evaluateLM(model, batches(seqs, { batchSize: o.batchSize, shuffle: false, dropLast: false }), { bytes });
  return { loss: r.loss, perplexity: r.perplexity, bitsPerByte: r.bitsPerByte ?? NaN };
}

function firstSequences(seqs: TokenSequences, n: number): TokenSequences {
  const k = Math.min(seqs.count, n);
  return k === seqs.count ? seqs : new TokenSequences(seqs.tokens.subarray(0, k * seqs.seqLen + 1), seqs.seqLen, seqs.what);
}

/** Fraction of held-out positions where each exit's argmax is the next token. */
function exitAccuracy(model: CausalLM, data: TextData, o: PipelineOptions): { acc: number[]; tokens: number } {
  const seqs = firstSequences(data.validation, o.batchSize * o.evalBatches);
  let hits: number[] = [];
  let tokens = 0;
  const was = model.training;
  model.train(false);
  noGrad(() => {
    for (const b of batches(seqs, { batchSize: o.batchSize, shuffle: false, dropLast: false })) {
      tidy(() => {
        const exits = allExitLogits(model, b.ids, b.shape);
        if (hits.length === 0) hits = new Array<number>(exits.length).fill(0);
        const V = model.cfg.vocabSize;
        exits.forEach((logits, e) => {
          const data = logits.dataSync();
          for (let i = 0; i < b.targets.length; i++) {
            if (b.targets[i]! < 0) continue;
            if (argmaxRow(data.subarray(i * V, (i + 1) * V)) === b.targets[i]) hits[e]! += 1;
          }
        });
      });
      for (const t of b.targets) if (t >= 0) tokens++;
    }
  });
  model.train(was);
  return { acc: hits.map((h) => h / Math.max(1, tokens)), tokens };
}

/** Runs a Trainer for `steps`, collecting the loss of every step. */
async function train(
  model: { parameters(): Tensor[]; namedParameters?(): Map<string, Tensor>; train?(flag?: boolean): unknown },
  loss: (b: Batch) => Tensor,
  data: TextData,
  o: PipelineOptions,
  steps: number,
  label: string,
): Promise<LossPoint[]> {
  const curve: LossPoint[] = [];
  const every = Math.max(1, Math.round(steps / 5));
  const bar = o.progress?.(label, steps);
  const tokensPerStep = o.batchSize * o.seqLen;
  const trainer = new Trainer<Batch>({
    model,
    loss,
    data: new BatchLoader(data.train, { batchSize: o.batchSize, seed: o.seed }),
    steps,
    lr: o.lr,
    schedule: { kind: 'cosine', warmup: Math.min(10, Math.floor(steps / 10)), minLr: o.lr / 10 },
    onStep: (s) => {
      if (o.stopRequested?.()) trainer.stop();
      curve.push({ step: s.step, loss: s.loss });
      bar?.update(s.step, { tokens: s.step * tokensPerStep, loss: s.loss });
      if (s.step === 1 || s.step % every === 0 || s.step === steps) o.log(`${label}: step ${s.step}/${steps}  loss ${s.loss.toFixed(4)}  (${(s.elapsedMs / 1000).toFixed(0)} s)`);
    },
  });
  try {
    await trainer.run();
  } finally {
    bar?.finish();
  }
  return curve;
}

export async function runPipeline(o: PipelineOptions): Promise<PipelineResult> {
  const t0 = Date.now();
  const stageSeconds: Record<string, number> = {};
  let mark = Date.now();
  const stage = (name: string) => {
    stageSeconds[name] = (Date.now() - mark) / 1000;
    mark = Date.now();
  };
  const { teacher, tokenizer } = o;
  teacher.eval();
  const exitThreshold = o.exitThreshold ?? 0.2;
  const teacherInfo = { layers: teacher.depth, hidden: teacher.cfg.hiddenSize, vocab: teacher.cfg.vocabSize, parameters: teacher.numParameters() };
  const curves: PipelineResult['curves'] = { recursive: [], relaxed: [], exits: [] };
  const models: ModelRow[] = [];
  // What a stopped run reports: the finished stages; `stage` is the one that was stopped.
  const stopped = (): boolean => o.stopRequested?.() === true;
  const interrupted = (stage: string, done: Pick<PipelineResult, 'conversion' | 'loraParameters'>, ...free: { dispose(): void }[]): PipelineResult => {
    for (const f of free) f.dispose();
    o.log(`interrupted during ${stage}: reporting the stages before it`);
    return {
      interrupted: { stage }, teacher: teacherInfo, rank: o.rank, curves, models, exitThreshold, stageSeconds, seconds: (Date.now() - t0) / 1000, ...done,
    };
  };
  const data = loadTextData(o.corpus, tokenizer, { seqLen: o.seqLen, cacheDir: o.cacheDir });
  stage('data');
  o.log(`data: ${data.train.count} training and ${data.validation.count} held-out sequences of ${o.seqLen} tokens`);

  // 1. Convert: CYCLE sharing, stepwise init (the paper's best for plain recursive models).
  const loops = 2;
  const { model: recursive } = toRecursive(teacher, { loops, scheme: CYCLE, init: stepwise, seed: o.seed });
  const conversion = { loops, scheme: CYCLE.name, init: stepwise.name, depthMap: [...recursive.schedule], sharedLayers: recursive.blocks.length };
  o.log(`convert: ${teacher.depth} layers -> ${conversion.sharedLayers} shared layers x ${loops} loops (depth map ${conversion.depthMap.join(' ')})`);
  const convertedPpl = heldOut(recursive, data, o);
  stage('convert');

  // 2. Uptrain the recursive model with forward-KL distillation from the teacher.
  const kd = { loss: 'kd' as const, kdDirection: 'forward' as const, temperature: 1 };
  const recCurve = await train(recursive, uptrainLoss(recursive, teacher, kd), data, o, o.steps, 'uptrain recursive (KD)');
  curves.recursive = recCurve;
  stage('uptrain');
  if (stopped()) return interrupted('uptrain', { conversion, loraParameters: 0 }, recursive);

  // 3. Relax: a fresh conversion with SVD-init depth-wise LoRA, uptrained the same way. Its shared
  // weights start from the stepwise init too, so the comparison isolates the LoRA.
  const { model: relaxedBase } = toRecursive(teacher, { loops, scheme: CYCLE, init: stepwise, seed: o.seed });
  const handle = relax(relaxedBase, { rank: o.rank, init: 'svd', residuals: residualsFrom(teacher, relaxedBase), seed: o.seed });
  const loraParameters = handle.counts.lora;
  o.log(`relax: rank ${o.rank} SVD-init LoRA on ${handle.modules.length} modules (${loraParameters} parameters)`);
  const relaxedInit = heldOut(relaxedBase, data, o);
  const relCurve = await train(handle.trainable(), uptrainLoss(relaxedBase, teacher, kd), data, o, o.steps, 'uptrain relaxed (KD)');
  curves.relaxed = relCurve;
  stage('relax');
  if (stopped()) {
    handle.remove();
    return interrupted('relax', { conversion, loraParameters }, relaxedBase, recursive);
  }

  // 4. Evaluate before exit training, so the recursive row is the plain uptrained model.
  const row = (name: string, parameters: number, m: { loss: number; perplexity: number; bitsPerByte: number }) => models.push({ name, parameters, ...m });
  row('teacher (full size)', teacher.numParameters(), heldOut(teacher, data, o));
  row('recursive, converted (no uptraining)', recursive.numParameters(), convertedPpl);
  row('recursive, uptrained (KD)', recursive.numParameters(), heldOut(recursive, data, o));
  row(`relaxed r=${o.rank}, SVD init (no uptraining)`, relaxedBase.numParameters() + loraParameters, relaxedInit);
  row(`relaxed r=${o.rank}, uptrained (KD)`, relaxedBase.numParameters() + loraParameters, heldOut(relaxedBase, data, o));
  handle.remove();
  relaxedBase.dispose();
  const before = exitAccuracy(recursive, data, o);
  stage('evaluate');
  if (stopped()) return interrupted('evaluate', { conversion, loraParameters }, recursive);

  // 4b. --full: the other inits, ranks, zero init and the from-scratch baselines, trained and
  // evaluated the same way; the two models above count as their stepwise and rank-r SVD rows.
  let full: FullStudyResult | undefined;
  if (o.full) {
    const done = new Map<string, StudyRow>();
    const upRec = models[2]!, upRel = models[4]!;
    done.set(`recursive, ${stepwise.name} init`, {
      name: `recursive, ${stepwise.name} init`, group: 'init', parameters: upRec.parameters, perplexityBefore: convertedPpl.perplexity,
      perplexityAfter: upRec.perplexity, lossAfter: upRec.loss, curve: recCurve,
    });
    done.set(`relaxed r=${o.rank}, SVD init`, {
      name: `relaxed r=${o.rank}, SVD init`, group: 'rank', parameters: upRel.parameters, perplexityBefore: relaxedInit.perplexity,
      perplexityAfter: upRel.perplexity, lossAfter: upRel.loss, curve: relCurve,
    });
    full = await runFullStudy(teacher, { steps: o.steps, seed: o.seed, log: o.log, rank: o.rank, full: o.full }, {
      heldOut: (m) => heldOut(m, data, o),
      train: (m, loss, steps, label) => train(m, loss, data, o, steps, label),
    }, done);
    stage('full study');
    // Models trained after the stop ran a step or none: leave the study out.
    if (stopped()) return interrupted('full study', { conversion, loraParameters }, recursive);
  }

  // 5. Early-exit post-training: aggressive CE + KD on every exit (the paper's best recipe).
  const exitSteps = Math.max(1, Math.round(o.steps / 2));
  const exitCurve = await train(recursive, (b) => exitTrainingLoss(recursive, b, { schedule: 'aggressive', teacher, kdWeight: 0.5 }), data, o, exitSteps, 'early-exit post-training');
  curves.exits = exitCurve;
  if (stopped()) {
    stage('early-exit');
    return { ...interrupted('early-exit', { conversion, loraParameters }, recursive), ...(full ? { full } : {}) };
  }
  const after = exitAccuracy(recursive, data, o);
  row('recursive, after early-exit post-training', recursive.numParameters(), heldOut(recursive, data, o));
  stage('early-exit');

  // 6. Serving: static / sequence-wise / depth-wise batching of the recursive model, the teacher
  // as the vanilla baseline; prompts cut from held-out text.
  o.log(`serve: ${o.bench.requests} requests, max batch ${o.bench.maxBatch}, ${o.bench.newTokens.min}-${o.bench.newTokens.max} new tokens each`);
  recursive.eval();
  const bench = serveBench(recursive, {
    requests: o.bench.requests,
    maxBatch: o.bench.maxBatch,
    newTokens: o.bench.newTokens,
    promptTokens: { min: 8, max: 16 },
    corpus: data.validation.tokens,
    seed: o.seed,
    exitPolicy: maxProbExit(exitThreshold),
    baseline: teacher,
    warmup: 2,
    onRun: (r) => o.log(`serve: ${r.name} (${r.model}): ${r.tokensPerSecond.toFixed(1)} tokens/s`),
  });
  // The depth-wise schedule, simulated with the exit distribution the benchmark measured.
  const exitRow = bench.rows.find((r) => r.scheduler === 'depthwise' && r.earlyExit && r.model === 'model');
  const counts = exitRow?.exitsPerLoop ?? [];
  const total = counts.reduce((a, b) => a + b, 0);
  const exitDistribution = total > 0 ? counts.map((c) => c / total) : [0, 1];
  const schedule: ScheduleInputs = { loops, maxBatch: o.bench.maxBatch, requests: o.bench.requests, newTokens: o.bench.newTokens, seed: o.seed, exitDistribution, steps: 120 };
  const scheduleSvg = renderSchedule(schedule);
  recursive.dispose();
  stage('serve');

  return {
    teacher: teacherInfo,
    conversion,
    rank: o.rank,
    loraParameters,
    curves,
    models,
    exitAccuracy: { before: before.acc, after: after.acc, tokens: before.tokens },
    bench,
    scheduleSvg,
    exitDistribution,
    schedule,
    exitThreshold,
    ...(full ? { full } : {}),
    stageSeconds,
    seconds: (Date.now() - t0) / 1000,
  };
}
