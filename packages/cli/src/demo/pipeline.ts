// The paper's pipeline at small scale (PAPER.md sections 1-4): convert a pretrained teacher into
// a 2-loop recursive model (CYCLE, stepwise), uptrain it with KD; relax a second conversion
// (average init) with SVD-init depth-wise LoRA and uptrain it the same way; post-train early
// exits two ways (the paper's recipe on the recursive model, nothing frozen; exit adapters on the
// relaxed model with its trunk frozen); evaluate all of them on held-out text; and serve the
// relaxed model with continuous depth-wise batching and early exit against the teacher.

import { type Tensor } from '@rrt/tensor';
import { freezeParameters, generate, loadTextData, type Batch, type CausalLM, type Tokenizer } from '@rrt/layers';
import { CYCLE, average, stepwise, toRecursive, uptrainLoss } from '@rrt/recursive';
import { relax, residualsFrom } from '@rrt/lora';
import {
  ExitHeadAdapters, ServingEngine, benchWorkload, constantCost, evaluateExits, exitTrainingLoss, fitStatePredictor, makeRequests, parseExitPolicy, scheduleToSvg,
  ROUTER_TRAINING_SEQUENCES, serveBench, servedContinuations, servedTextNll, simulate, trainExitRouter,
  type ExitLossSchedule, type KvFill, type ServeBenchReport,
} from '@rrt/batching';
import { runFullStudy, type FullStudyOptions, type FullStudyResult, type StudyRow } from './full.js';
import { exitMetrics, heldOut, heldOutSequences, train, type ExitMetrics, type LossPoint, type TrainSettings } from './training.js';

export type { LossPoint, StageProgress } from './training.js';

export interface PipelineOptions extends TrainSettings {
  teacher: CausalLM;
  tokenizer: Tokenizer;
  /** Text file to train and evaluate on. */
  corpus: string;
  /** Uptraining steps of the recursive and the relaxed model; each early-exit post-training runs half. */
  steps: number;
  /** LoRA rank of the relaxed model. */
  rank: number;
  /** Exit-loss coefficients of the paper-recipe post-training (default 'aggressive': 0.1 on loop 1). */
  exitSchedule?: 'aggressive' | 'weighted';
  /** Rank of the frozen-trunk exit adapters on the LM head (default 16). */
  exitAdapterRank?: number;
  /** The serving benchmark's early-exit policy (parseExitPolicy; router:<p> uses the router the pipeline fits). */
  exitPolicy?: string;
  /** Served continuations the exit router and the state predictor are fitted on (default ROUTER_TRAINING_SEQUENCES). */
  routerSequences?: number;
  /** The serving benchmark; new tokens per request default to serveBench's (32-96, scaled down for contexts under 128). */
  bench: { requests: number; maxBatch: number; newTokens?: { min: number; max: number }; repeats?: number };
  /** `rrt demo --full`: also run the full study (inits, ranks, zero vs SVD init, baselines). */
  full?: FullStudyOptions;
  /** Token cache folder (null: none). */
  cacheDir: string | null;
}

export interface ModelRow {
  name: string;
  parameters: number;
  loss: number;
  perplexity: number;
  bitsPerByte: number;
}

/** One early-exit post-training: which model, how, and its exits on held-out text before and after. */
export interface ExitTrainingRun {
  name: string;
  /** What trained: 'everything' (nothing frozen) or 'exit adapters' (the model frozen). */
  trained: string;
  schedule: string;
  steps: number;
  before: ExitMetrics;
  after: ExitMetrics;
}

/** A greedy continuation of the sample prompt by one model. */
export interface Sample {
  model: string;
  text: string;
}

/** One model served: the benchmark against the teacher, and how good the served text is. */
export interface ServingRun {
  /** e.g. 'recursive' or 'relaxed r=32'. */
  model: string;
  bench: ServeBenchReport;
  /** One per K/V fill, in the order of the benchmark's early-exit rows. */
  served: ServedQuality[];
}

/**
 * The K/V fills of exited tokens the demo serves with: a state predictor's estimate of each
 * skipped depth's input (computes the missing K/V), and the first loop's K/V of the same block
 * (copies, computes nothing).
 */
export const DEMO_KV_FILLS = ['predict', 'reuse-loop'] as const;

/** What was served and how good the served text is. */
export interface ServedQuality {
  policy: string;
  kvFill: string;
  /** Served continuations the exit router and the state predictor were fitted on. */
  fitSequences: number;
  /** Per early exit, the share of the fitting text's tokens whose exit top-1 equals the last exit's. */
  routerAgreement: number[];
  /** Of the early-exit run's tokens, the share equal to the full-depth run's at the same position. */
  agreement: number;
  /**
   * Teacher-forced held-out text (the evaluation sequences) decoded token by token with early
   * exit and this fill: mean NLL, the same at full depth, and the share of positions whose exit
   * top-1 equals the full depth's.
   */
  heldOut: { nll: number; fullNll: number; agreement: number };
  /** Mean NLL (nats/token) of the served text with early exit and at full depth, judged by the full-depth model and by the teacher. */
  nll: { exitByModel: number; exitByTeacher: number; fullByModel: number; fullByTeacher: number };
  /** The first request: its prompt and the continuations with early exit and at full depth. */
  sample: { prompt: string; exit: string; full: string };
}

export interface PipelineResult {
  /** Set when stopRequested ended the run early: the stage that was stopped (it and later ones are missing or partial). */
  interrupted?: { stage: string };
  teacher: { layers: number; hidden: number; vocab: number; parameters: number };
  /** The plain recursive model's conversion (the relaxed model's init is `relaxedInit`). */
  conversion: { loops: number; scheme: string; init: string; depthMap: number[]; sharedLayers: number };
  relaxedInit: string;
  rank: number;
  loraParameters: number;
  curves: { recursive: LossPoint[]; relaxed: LossPoint[]; exits: LossPoint[]; exitAdapters: LossPoint[] };
  models: ModelRow[];
  /** The two early-exit post-trainings (missing when interrupted before). */
  exitTraining: ExitTrainingRun[];
  /** Greedy continuations of `samplePrompt`, per model. */
  samples: Sample[];
  samplePrompt: string;
  /** The serving benchmarks, recursive then relaxed (missing when interrupted before serving). */
  serving: ServingRun[];
  /** The depth-wise schedule plot (not kept in result.json: renderSchedule(schedule) redraws it). */
  scheduleSvg?: string;
  /** How many of the simulated schedule's calls the plot shows. */
  scheduleShown?: { calls: number; total: number };
  /** What the schedule plot simulates. */
  schedule?: ScheduleInputs;
  exitDistribution?: number[];
  exitPolicy: string;
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
  /** Most calls drawn. */
  steps: number;
}

/**
 * The depth-wise schedule as SVG: continuous depth-wise batching of `s.requests` requests
 * (prompts of 12 tokens), simulated at unit cost per call; deterministic in its inputs, so a
 * saved report redraws the same plot. `calls` is how many calls it draws, of `total`.
 */
export function renderSchedule(s: ScheduleInputs): { svg: string; calls: number; total: number } {
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
  const drawn = sim.trace.steps.filter((t) => t.step < s.steps);
  const calls = drawn.length === 0 ? 0 : drawn[drawn.length - 1]!.step + 1;
  return { svg: scheduleToSvg(sim.trace, { maxSteps: s.steps }), calls, total: sim.trace.totalSteps };
}

export const SAMPLE_PROMPT = 'And God said';

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
  const exitPolicySpec = o.exitPolicy ?? 'router:0.6';
  const teacherInfo = { layers: teacher.depth, hidden: teacher.cfg.hiddenSize, vocab: teacher.cfg.vocabSize, parameters: teacher.numParameters() };
  const curves: PipelineResult['curves'] = { recursive: [], relaxed: [], exits: [], exitAdapters: [] };
  const models: ModelRow[] = [];
  const exitTraining: ExitTrainingRun[] = [];
  const samples: Sample[] = [];
  const sample = (name: string, model: CausalLM) => {
    model.eval();
    samples.push({ model: name, text: generate(model, tokenizer, { prompt: SAMPLE_PROMPT, maxNewTokens: 32, temperature: 0 }).text ?? '' });
  };
  const loops = 2;
  const base = { serving: [] as ServingRun[], teacher: teacherInfo, relaxedInit: average.name, rank: o.rank, curves, models, exitTraining, samples, samplePrompt: SAMPLE_PROMPT, exitPolicy: exitPolicySpec };
  // What a stopped run reports: the finished stages; `stage` is the one that was stopped.
  const stopped = (): boolean => o.stopRequested?.() === true;
  const interrupted = (stage: string, done: Pick<PipelineResult, 'conversion' | 'loraParameters'>, ...free: { dispose(): void }[]): PipelineResult => {
    for (const f of free) f.dispose();
    o.log(`interrupted during ${stage}: reporting the stages before it`);
    return { interrupted: { stage }, ...base, stageSeconds, seconds: (Date.now() - t0) / 1000, ...done };
  };
  const data = loadTextData(o.corpus, tokenizer, { seqLen: o.seqLen, cacheDir: o.cacheDir });
  stage('data');
  o.log(`data: ${data.train.count} training and ${data.validation.count} held-out sequences of ${o.seqLen} tokens`);
  const evalOf = (m: CausalLM) => heldOut(m, data, o);
  const trainFor = (m: Parameters<typeof train>[0], loss: (b: Batch) => Tensor, steps: number, label: string) => train(m, loss, data, o, steps, label);

  // 1. Convert: CYCLE sharing, stepwise init (the paper's best for plain recursive models).
  const { model: recursive } = toRecursive(teacher, { loops, scheme: CYCLE, init: stepwise, seed: o.seed });
  const conversion = { loops, scheme: CYCLE.name, init: stepwise.name, depthMap: [...recursive.schedule], sharedLayers: recursive.blocks.length };
  o.log(`convert: ${teacher.depth} layers -> ${conversion.sharedLayers} shared layers x ${loops} loops (depth map ${conversion.depthMap.join(' ')})`);
  const convertedPpl = evalOf(recursive);
  stage('convert');

  // 2. Uptrain the recursive model with forward-KL distillation from the teacher.
  const kd = { loss: 'kd' as const, kdDirection: 'forward' as const, temperature: 1 };
  curves.recursive = await trainFor(recursive, uptrainLoss(recursive, teacher, kd), o.steps, 'uptrain recursive (KD)');
  stage('uptrain');
  if (stopped()) return interrupted('uptrain', { conversion, loraParameters: 0 }, recursive);

  // 3. Relax: a fresh conversion with the average init (the paper's best base for relaxed models:
  // the SVD of W_l - mean corrects every depth) and SVD-init depth-wise LoRA, uptrained the same way.
  const { model: relaxed } = toRecursive(teacher, { loops, scheme: CYCLE, init: average, seed: o.seed });
  const lora = relax(relaxed, { rank: o.rank, init: 'svd', residuals: residualsFrom(teacher, relaxed), seed: o.seed });
  const loraParameters = lora.counts.lora;
  const done = { conversion, loraParameters };
  o.log(`relax: ${average.name} init, rank ${o.rank} SVD-init LoRA on ${lora.modules.length} modules (${loraParameters} parameters)`);
  const relaxedInitPpl = evalOf(relaxed);
  curves.relaxed = await trainFor(lora.trainable(), uptrainLoss(relaxed, teacher, kd), o.steps, 'uptrain relaxed (KD)');
  stage('relax');
  const disposeRelaxed = { dispose: () => (lora.remove(), relaxed.dispose()) };
  if (stopped()) return interrupted('relax', done, disposeRelaxed, recursive);

  // 4. Evaluate the uptrained models (before any exit training).
  const row = (name: string, parameters: number, m: { loss: number; perplexity: number; bitsPerByte: number }) => models.push({ name, parameters, ...m });
  const relaxedParams = relaxed.numParameters() + loraParameters;
  row('teacher (full size)', teacher.numParameters(), evalOf(teacher));
  row('recursive, converted (no uptraining)', recursive.numParameters(), convertedPpl);
  row('recursive, uptrained (KD)', recursive.numParameters(), evalOf(recursive));
  row(`relaxed r=${o.rank}, SVD init (no uptraining)`, relaxedParams, relaxedInitPpl);
  row(`relaxed r=${o.rank}, uptrained (KD)`, relaxedParams, evalOf(relaxed));
  sample('teacher', teacher);
  sample('recursive, uptrained', recursive);
  sample(`relaxed r=${o.rank}, uptrained`, relaxed);
  stage('evaluate');
  if (stopped()) return interrupted('evaluate', done, disposeRelaxed, recursive);

  // 4b. --full: the other inits, ranks, zero init and the from-scratch baselines, trained and
  // evaluated the same way; the two models above count as its stepwise and rank-r SVD rows.
  let full: FullStudyResult | undefined;
  if (o.full) {
    const reused = new Map<string, StudyRow>();
    const upRec = models[2]!;
    reused.set(`recursive, ${stepwise.name} init`, {
      name: `recursive, ${stepwise.name} init`, group: 'init', parameters: upRec.parameters, perplexityBefore: convertedPpl.perplexity,
      perplexityAfter: upRec.perplexity, lossAfter: upRec.loss, curve: curves.recursive,
    });
    const upRel = models[4]!;
    reused.set(`relaxed r=${o.rank}, SVD init`, {
      name: `relaxed r=${o.rank}, SVD init`, group: 'rank', parameters: upRel.parameters, perplexityBefore: relaxedInitPpl.perplexity,
      perplexityAfter: upRel.perplexity, lossAfter: upRel.loss, curve: curves.relaxed,
    });
    full = await runFullStudy(teacher, { steps: o.steps, seed: o.seed, log: o.log, rank: o.rank, full: o.full }, { heldOut: evalOf, train: trainFor }, reused);
    stage('full study');
    // Models trained after the stop ran a step or none: leave the study out.
    if (stopped()) return interrupted('full study', done, disposeRelaxed, recursive);
  }
  const withFull = full ? { full } : {};

  // 5a. The paper's early-exit recipe on the recursive model: post-training after uptraining,
  // nothing frozen, CE + KD on every exit with the aggressive (0.1) or weighted coefficients.
  const exitSteps = Math.max(1, Math.round(o.steps / 2));
  const schedule: ExitLossSchedule = o.exitSchedule ?? 'aggressive';
  const recBefore = exitMetrics(recursive, data, o);
  curves.exits = await trainFor(recursive, (b) => exitTrainingLoss(recursive, b, { schedule, teacher, kdWeight: 0.5 }), exitSteps, `early-exit post-training (${schedule}, nothing frozen)`);
  if (stopped()) {
    stage('early-exit');
    return { ...interrupted('early-exit', done, disposeRelaxed, recursive), ...withFull };
  }
  exitTraining.push({ name: 'recursive', trained: 'everything', schedule, steps: exitSteps, before: recBefore, after: exitMetrics(recursive, data, o) });
  row(`recursive, after early-exit post-training (${schedule})`, recursive.numParameters(), evalOf(recursive));

  // 5b. Exit adapters on the relaxed model with its trunk frozen: a low-rank delta on the head of
  // every early exit; the last exit keeps the plain head, so the full-depth model stays exactly as
  // uptrained. (With one trained term per adapter the coefficient only scales its gradient, which
  // Adam divides out: aggressive and weighted train the same adapters here.)
  const adapters = new ExitHeadAdapters(relaxed, {}, { rank: o.exitAdapterRank ?? 16, seed: o.seed, final: false });
  const relBefore = exitMetrics(relaxed, data, o, adapters);
  const unfreeze = freezeParameters(lora.trainable().parameters());
  relaxed.eval();
  try {
    curves.exitAdapters = await trainFor(adapters, (b) => exitTrainingLoss(relaxed, b, { schedule: 'aggressive', teacher, kdWeight: 0.5, adapters }), exitSteps, 'exit adapters (trunk frozen)');
  } finally {
    unfreeze();
  }
  const disposeServed = { dispose: () => (adapters.dispose(), disposeRelaxed.dispose(), recursive.dispose()) };
  if (stopped()) {
    stage('early-exit');
    return { ...interrupted('early-exit', done, disposeServed), ...withFull };
  }
  exitTraining.push({ name: `relaxed r=${o.rank}`, trained: `exit adapters (rank ${adapters.rank}), trunk frozen`, schedule: 'aggressive', steps: exitSteps, before: relBefore, after: exitMetrics(relaxed, data, o, adapters) });
  stage('early-exit');

  // 6. Serving each exit-trained model against the teacher (its static and sequence-wise runs):
  // the recursive model (one set of weights for both loops, so rows at any depth share a call for
  // free) and the relaxed one (LoRA merged per depth: rows at a minority depth pay a low-rank
  // correction). Prompts are cut from held-out text; the K/V of exited tokens comes from a state
  // predictor and, with router:<p>, the exit decision from a router, both fitted on the model's
  // own continuations of training prompts.
  const serving: ServingRun[] = [];
  const serveOne = (name: string, model: CausalLM, ad?: ExitHeadAdapters, beforeServing?: () => void): ServingRun => {
    const fitText = servedContinuations(model, data.train.tokens, { count: o.routerSequences ?? ROUTER_TRAINING_SEQUENCES, seed: o.seed + 1, adapters: ad });
    const routerFit = exitPolicySpec.startsWith('router:') ? trainExitRouter(model, fitText, { adapters: ad, seed: o.seed }) : undefined;
    const exitPolicy = parseExitPolicy(exitPolicySpec, routerFit?.router);
    const predictor = fitStatePredictor(model, fitText);
    const fills: KvFill[] = DEMO_KV_FILLS.map((f) => (f === 'predict' ? predictor : f));
    o.log(`serve ${name}: router and state predictor fitted on ${fitText.length} served continuations${routerFit ? `; loop-1 top-1 equal to the last exit's for ${(100 * routerFit.agreement[0]!).toFixed(1)}% of their tokens` : ''}`);
    beforeServing?.();
    const workload = { requests: o.bench.requests, newTokens: o.bench.newTokens, corpus: data.validation.tokens, seed: o.seed };
    o.log(`serve ${name}: ${workload.requests} requests, max batch ${o.bench.maxBatch}, policy ${exitPolicy.name}, K/V fills ${DEMO_KV_FILLS.join(', ')}`);
    const bench = serveBench(model, {
      ...workload, maxBatch: o.bench.maxBatch, exitPolicy, kvFill: fills, adapters: ad, baseline: teacher, repeats: o.bench.repeats ?? 1,
      onRun: (r) => o.log(`serve ${name}: ${r.name}${r.model === 'baseline' ? ' (teacher)' : ''}: ${r.tokensPerSecond.toFixed(1)} tokens/s`),
    });
    // How good the served text is: the workload again with early exit and at full depth, scored
    // by the model at full depth and by the teacher; and held-out text decoded with early exit.
    const reqs = benchWorkload(model, workload);
    const serveAll = (fill: KvFill | null) => {
      const engine = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: o.bench.maxBatch, adapters: ad, ...(fill ? { exitPolicy, kvFill: fill } : {}) });
      try {
        return engine.serve(reqs);
      } finally {
        engine.dispose();
      }
    };
    const fullOut = serveAll(null);
    const fullByModel = servedTextNll(model, reqs, fullOut), fullByTeacher = servedTextNll(teacher, reqs, fullOut);
    const heldOutText = heldOutSequences(data, o);
    const served = fills.map((fill, k): ServedQuality => {
      const exitOut = serveAll(fill);
      let same = 0, total = 0;
      exitOut.forEach((r, i) => r.tokens.forEach((t, j) => {
        total++;
        if (fullOut[i]!.tokens[j] === t) same++;
      }));
      const tf = evaluateExits(model, heldOutText, { policy: exitPolicy, kvFill: fill, adapters: ad });
      const q: ServedQuality = {
        policy: exitPolicy.name,
        kvFill: DEMO_KV_FILLS[k]!,
        fitSequences: fitText.length,
        routerAgreement: routerFit?.agreement ?? [],
        agreement: same / Math.max(1, total),
        heldOut: { nll: tf.nll, fullNll: tf.fullNll, agreement: tf.agreement },
        nll: {
          exitByModel: servedTextNll(model, reqs, exitOut),
          exitByTeacher: servedTextNll(teacher, reqs, exitOut),
          fullByModel,
          fullByTeacher,
        },
        sample: { prompt: tokenizer.decode([...reqs[0]!.prompt]), exit: tokenizer.decode(exitOut[0]!.tokens), full: tokenizer.decode(fullOut[0]!.tokens) },
      };
      const vb = bench.rows.filter((r) => r.earlyExit)[k]!.vsBaseline!;
      o.log(`serve ${name}, K/V fill ${q.kvFill}: depth-wise + exit ${vb.static.toFixed(2)}x the teacher's static, ${vb.sequence.toFixed(2)}x its sequence-wise batching; ${(100 * q.agreement).toFixed(1)}% of the tokens equal to full depth; NLL by the teacher ${q.nll.exitByTeacher.toFixed(3)} (full depth ${q.nll.fullByTeacher.toFixed(3)}); held-out NLL ${tf.nll.toFixed(3)} (full depth ${tf.fullNll.toFixed(3)})`);
      return q;
    });
    return { model: name, bench, served };
  };
  recursive.eval();
  serving.push(serveOne('recursive', recursive));
  stage('serve recursive');
  if (stopped()) return { ...interrupted('serve', done, disposeServed), ...withFull, serving };
  serving.push(serveOne(`relaxed r=${o.rank}`, relaxed, adapters, () => lora.mergeDepths()));
  stage('serve relaxed');

  // The depth-wise schedule of the recursive model, simulated with the exit distribution its benchmark measured.
  const exitRow = serving[0]!.bench.rows.find((r) => r.scheduler === 'depthwise' && r.earlyExit && r.model === 'model');
  const counts = exitRow?.exitsPerLoop ?? [];
  const sum = counts.reduce((a, b) => a + b, 0);
  const exitDistribution = sum > 0 ? counts.map((c) => c / sum) : [0, 1];
  const scheduleInputs: ScheduleInputs = { loops, maxBatch: o.bench.maxBatch, requests: o.bench.requests, newTokens: serving[0]!.bench.workload.newTokens, seed: o.seed, exitDistribution, steps: 120 };
  const { svg: scheduleSvg, calls, total: totalCalls } = renderSchedule(scheduleInputs);
  disposeServed.dispose();

  return {
    ...base,
    ...done,
    serving,
    scheduleSvg,
    scheduleShown: { calls, total: totalCalls },
    exitDistribution,
    schedule: scheduleInputs,
    ...withFull,
    stageSeconds,
    seconds: (Date.now() - t0) / 1000,
  };
}
