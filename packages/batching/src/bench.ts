// serveBench: one fixed, seeded workload served by every scheduler on the same model (and,
// optionally, static and sequence-wise on a baseline such as the full-size original), with
// throughput, latency, occupancy and the ratios the paper's section 4 talks about.

import { Generator, RrtError } from '@rrt/tensor';
import type { CausalLM } from '@rrt/layers';
import { type EngineStats, type GenerationRequest, type GenerationResult, ServingEngine } from './engine/index.js';
import { type ExitHeadAdapters, resolveLayout } from './exits.js';
import { type KvFill, kvFillName } from './kv-fill.js';
import type { LoopLayout, LoopLayoutOptions } from './loops.js';
import { type ExitPolicy, maxProbExit } from './policies.js';
import { ROUTER_TRAINING_SEQUENCES } from './router.js';
import type { SchedulerKind } from './scheduler.js';

/** An inclusive integer range. */
export interface IntRange {
  min: number;
  max: number;
}

export interface ServeBenchOptions {
  /** Requests in the workload (default 256). */
  requests?: number;
  /** Seeds prompts and lengths (default 0). */
  seed?: number;
  /** Most resident requests (default 32). */
  maxBatch?: number;
  /** Prompt lengths (default 8..24; a prompt is cut to leave room for its new tokens in the context). */
  promptTokens?: IntRange;
  /** New tokens per request (default 32..96; both defaults shrink for contexts under 128). */
  newTokens?: IntRange;
  /** Token stream to cut prompts from (e.g. a tokenised corpus); default uniform random ids. */
  corpus?: ArrayLike<number>;
  /** The early-exit policy of the early-exit run (default max-prob:0.8); several: one run each. */
  exitPolicy?: ExitPolicy | readonly ExitPolicy[];
  /** Run everything this many times, round-robin, and keep each run's fastest (default 1). */
  repeats?: number;
  /**
   * When > 0, the runs of a repeat serve together, each engine in turn running calls for about
   * this many milliseconds, so that a slow spell of the machine falls on all of them alike
   * (default 0: one run after another, each with the machine's caches to itself, as a server
   * runs). Each run's time is its own calls' time either way, and the tokens are the same;
   * latencies taking turns include the other engines' turns.
   */
  sliceMs?: number;
  /** A mode or a fitted StatePredictor (default 'propagate'); several: one early-exit run per policy and fill. */
  kvFill?: KvFill | readonly KvFill[];
  /** Write computed fills inside later calls of the same block (default true; see ServingEngineOptions). */
  foldKvFill?: boolean;
  /** Prompts join decode calls of the same block (default true; see ServingEngineOptions). */
  mixPrefill?: boolean;
  /** Engines keep the weights packed for the matmul kernel (default true; see ServingEngineOptions). */
  packWeights?: boolean;
  layout?: LoopLayout | LoopLayoutOptions;
  adapters?: ExitHeadAdapters;
  /** Sampling temperature of every request (default 0: greedy, so runs are comparable token by token). */
  temperature?: number;
  /** Also run static and sequence-wise batching on this model (e.g. the full-size original). */
  baseline?: CausalLM;
  /** Requests each run's engine serves once before timing, to warm the JIT and caches (default 32). */
  warmup?: number;
  /** Called after each run (its speedups are filled in once all runs are done). */
  onRun?: (row: ServeBenchRow) => void;
}

export interface ServeBenchRow {
  /** e.g. 'depthwise+exit'. */
  name: string;
  scheduler: SchedulerKind;
  model: 'model' | 'baseline';
  earlyExit: boolean;
  policy: string;
  /** kvFillName of an early-exit run's K/V fill; null for runs without early exit. */
  kvFill: string | null;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  /** CPU time of this process during the run (all threads) and tokens per CPU second: less sensitive to other load on the machine. */
  cpuSeconds: number;
  tokensPerCpuSecond: number;
  meanLatencyMs: number;
  p95LatencyMs: number;
  meanTimeToFirstTokenMs: number;
  /** Mean useful rows per decode call / maxBatch. */
  meanOccupancy: number;
  /** Mean rows per decode call (padding included). */
  meanBatch: number;
  steps: number;
  decodeCalls: number;
  prefillCalls: number;
  /** Of decodeCalls, those that prompts joined. */
  mixedCalls: number;
  meanLoopsPerToken: number;
  exitsPerLoop: number[];
  kvFilled: number;
  /** Of kvFilled, the entries written inside later calls (the fold). */
  kvFolded: number;
  /** Rows the model computed in block calls (EngineStats.blockRows). */
  blockRows: { prompt: number; decode: number };
  /** Fraction of its tokens equal to the full-depth depth-wise run's at the same position (baseline rows: to the baseline's sequence-wise run). */
  agreement: number;
  /** Where the time went (EngineStats.timeMs). */
  timeMs: EngineStats['timeMs'];
  /** tokens/s over the static and sequence-wise runs on the same model (baseline rows: on the baseline). */
  speedupVsStatic: number;
  speedupVsSequence: number;
  /** The same ratios in tokens per CPU second. */
  cpuSpeedupVsStatic: number;
  cpuSpeedupVsSequence: number;
  /** Early-exit rows, with a baseline: this run over the baseline's static and sequence-wise runs (as ServeBenchReport.exitVsBaseline). */
  vsBaseline?: BaselineRatios;
}

/** Tokens/s over the baseline's static and sequence-wise runs: medians of the per-repeat ratios, and each repeat's. */
export interface BaselineRatios {
  static: number;
  sequence: number;
  perRepeat: { static: number[]; sequence: number[] };
}

export interface ServeBenchReport {
  workload: { requests: number; seed: number; maxBatch: number; promptTokens: IntRange; newTokens: IntRange; meanPromptTokens: number; meanNewTokens: number; temperature: number };
  model: { depth: number; blocks: number; loops: number; parameters: number };
  rows: ServeBenchRow[];
  /** Depth-wise with (the first) early-exit policy over static and over sequence-wise (same model). */
  depthwiseExitVsStatic: number;
  depthwiseExitVsSequence: number;
  repeats: number;
  /** The runs of a repeat took turns of about this many ms (0: one after another). */
  sliceMs: number;
  /**
   * Time of one decode call of one block as a line in its rows, fitted to the sequence-wise
   * run's calls: t(n) = fixedMs + perRowMs * n. On a GPU decode is memory-bound and t is nearly
   * flat in n; on a CPU it grows about linearly.
   */
  callCost: CallCost;
  /** Without early exit, every scheduler produced the same tokens (sampling is seeded per request, so this holds for sampled workloads too). */
  tokensAgree: boolean;
  /** Of the early-exit run's tokens, the fraction equal to the full-depth run's at the same position. */
  exitAgreement: number;
  /** kvFillName of the first early-exit run's K/V fill. */
  kvFill: string;
  /**
   * With a baseline: the first early-exit run over the baseline's static and sequence-wise runs,
   * as the median of the per-repeat ratios (each repeat runs the baseline's static run, every
   * early-exit run, then its sequence-wise run, next to each other), with each repeat's ratios.
   * Less sensitive than the best-of rows to the machine slowing down for minutes at a time.
   * Every early-exit row carries its own as vsBaseline.
   */
  exitVsBaseline?: BaselineRatios;
}

/**
 * Default lengths: prompts 8-24 and 32-96 new tokens (means 16 and 64: the paper's 1:4 ratio of
 * prefix to decoded tokens, 512 and 2048 there), scaled down for contexts under 128 tokens.
 */
function workloadRanges(model: CausalLM, opts: Pick<ServeBenchOptions, 'promptTokens' | 'newTokens'>): { promptTokens: IntRange; newTokens: IntRange } {
  const f = Math.min(1, model.cfg.maxPositions / 128);
  const scaled = (min: number, max: number): IntRange => ({ min: Math.max(1, Math.floor(min * f)), max: Math.max(1, Math.floor(max * f)) });
  return { promptTokens: opts.promptTokens ?? scaled(8, 24), newTokens: opts.newTokens ?? scaled(32, 96) };
}

/** The seeded workload serveBench runs (exported so other tools can replay it). */
export function benchWorkload(model: CausalLM, opts: Pick<ServeBenchOptions, 'requests' | 'seed' | 'promptTokens' | 'newTokens' | 'corpus' | 'temperature'> = {}): GenerationRequest[] {
  const n = opts.requests ?? 256;
  if (!Number.isInteger(n) || n < 1) throw new RrtError(`serveBench: requests must be an integer >= 1, got ${n}`);
  const ctx = model.cfg.maxPositions, V = model.cfg.vocabSize;
  const { promptTokens, newTokens } = workloadRanges(model, opts);
  checkRange(newTokens, 'newTokens');
  checkRange(promptTokens, 'promptTokens');
  if (promptTokens.min + newTokens.max > ctx) {
    throw new RrtError(`serveBench: prompts of ${promptTokens.min}+ tokens and ${newTokens.max} new tokens do not fit the context (${ctx})`);
  }
  const rng = new Generator(opts.seed ?? 0);
  const corpus = opts.corpus;
  if (corpus && corpus.length < promptTokens.max + 1) throw new RrtError(`serveBench: the corpus has ${corpus.length} tokens, fewer than the longest prompt`);
  return Array.from({ length: n }, (_, id) => {
    const maxNewTokens = rng.int(newTokens.min, newTokens.max + 1);
    const len = Math.min(rng.int(promptTokens.min, promptTokens.max + 1), ctx - maxNewTokens);
    let prompt: number[];
    if (corpus) {
      const at = rng.int(0, corpus.length - len);
      prompt = Array.from({ length: len }, (_, i) => corpus[at + i]);
    } else {
      prompt = Array.from({ length: len }, () => rng.int(0, V));
    }
    return { id, prompt, maxNewTokens, temperature: opts.temperature, seed: id };
  });
}

/**
 * Text as a served model sees it: `count` prompts cut from `corpus` (benchWorkload's lengths,
 * seeded), each followed by its greedy full-depth continuation from the engine. The exit router
 * and the state predictor learn from these: a model's own greedy text is more predictable than
 * the corpus, and that is what they meet when serving.
 */
export function servedContinuations(
  model: CausalLM,
  corpus: ArrayLike<number>,
  opts: Pick<ServeBenchOptions, 'seed' | 'promptTokens' | 'newTokens' | 'maxBatch' | 'layout' | 'adapters'> & { count?: number } = {},
): number[][] {
  const reqs = benchWorkload(model, { requests: opts.count ?? ROUTER_TRAINING_SEQUENCES, seed: opts.seed, promptTokens: opts.promptTokens, newTokens: opts.newTokens, corpus });
  const engine = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: opts.maxBatch ?? 32, layout: opts.layout, adapters: opts.adapters });
  try {
    return engine.serve(reqs).map((r, i) => [...reqs[i].prompt, ...r.tokens]);
  } finally {
    engine.dispose();
  }
}

/**
 * Serves one seeded workload with static, sequence-wise and depth-wise batching (without and
 * with early exit, one run per exit policy) on `model`, plus static and sequence-wise on
 * `baseline` if given, one after another or taking turns (sliceMs). With repeats > 1 that
 * happens that many times and each run keeps its fastest repeat (other
 * processes on the machine slow runs down, never speed them up).
 * Ratios compare tokens/s. model: a (recursive) CausalLM.
 */
export function serveBench(model: CausalLM, opts: ServeBenchOptions = {}): ServeBenchReport {
  const maxBatch = opts.maxBatch ?? 32;
  const reqs = benchWorkload(model, opts);
  const given = opts.exitPolicy ?? maxProbExit(0.8);
  const policies = Array.isArray(given) ? given : [given];
  if (policies.length === 0) throw new RrtError('serveBench: exitPolicy lists no policy');
  const givenFill = opts.kvFill ?? 'propagate';
  const fills: readonly KvFill[] = Array.isArray(givenFill) ? givenFill : [givenFill as KvFill];
  if (fills.length === 0) throw new RrtError('serveBench: kvFill lists no fill');
  const repeats = opts.repeats ?? 1;
  if (!Number.isInteger(repeats) || repeats < 1) throw new RrtError(`serveBench: repeats must be an integer >= 1, got ${repeats}`);
  const sliceMs = opts.sliceMs ?? 0;
  if (!(sliceMs >= 0)) throw new RrtError(`serveBench: sliceMs must be a number >= 0, got ${sliceMs}`);
  const common = { maxBatch, layout: opts.layout, adapters: opts.adapters, foldKvFill: opts.foldKvFill, mixPrefill: opts.mixPrefill, packWeights: opts.packWeights };
  const exitName = (p: ExitPolicy, f: KvFill): string =>
    ['depthwise+exit', ...(policies.length > 1 ? [p.name] : []), ...(fills.length > 1 ? [kvFillName(f)] : [])].join(' ');
  const runs: BenchRun[] = [
    { name: 'static', scheduler: 'static', target: 'model', policy: null, kvFill: null },
    { name: 'sequence', scheduler: 'sequence', target: 'model', policy: null, kvFill: null },
    { name: 'depthwise', scheduler: 'depthwise', target: 'model', policy: null, kvFill: null },
    ...policies.flatMap((p) => fills.map((f) => ({ name: exitName(p, f), scheduler: 'depthwise' as const, target: 'model' as const, policy: p, kvFill: f }))),
  ];
  if (opts.baseline) {
    runs.unshift(
      { name: 'baseline static', scheduler: 'static', target: 'baseline', policy: null, kvFill: null },
      { name: 'baseline sequence', scheduler: 'sequence', target: 'baseline', policy: null, kvFill: null },
    );
  }
  // Run order: the exit runs between the two baseline runs they are compared with.
  const exitRuns = runs.filter((r) => r.policy !== null);
  const order = opts.baseline ? [runs[0], ...exitRuns, runs[1], ...runs.slice(2).filter((r) => r.policy === null)] : runs;
  const tps = new Map<string, number[]>();
  const best = new Map<string, ServeBenchRow>();
  let callCost: CallCost = { fixedMs: NaN, perRowMs: NaN, batch1Ms: NaN, maxBatchMs: NaN };
  const outputs = new Map<string, GenerationResult[]>();
  const engineFor = (run: BenchRun, trace: boolean): ServingEngine =>
    new ServingEngine(run.target === 'model' ? model : opts.baseline!, {
      ...common,
      trace,
      layout: run.target === 'model' ? opts.layout : undefined,
      adapters: run.target === 'model' ? opts.adapters : undefined,
      scheduler: run.scheduler,
      exitPolicy: run.policy ?? undefined,
      kvFill: run.kvFill ?? undefined,
    });
  // Every run's engine serves a few requests untimed first. After a warm-up of 8-16 requests the
  // first timed run of an engine was 6-19% slower than its later repeats, which biased the
  // first repeat's ratios (the baseline's static run goes first); with 32-64 per run no repeat
  // stood out.
  const warm = opts.warmup ?? 32;
  if (warm > 0) {
    for (const run of order) {
      const e = engineFor(run, false);
      e.serve(reqs.slice(0, warm).map((r) => ({ ...r, id: `warmup-${r.id}` })));
      e.dispose();
    }
  }
  for (let rep = 0; rep < repeats; rep++) {
    const start = (run: BenchRun): { engine: ServingEngine; cpu: number } => {
      const engine = engineFor(run, run.name === 'sequence' && rep === 0);
      for (const r of reqs) engine.submit(r);
      return { engine, cpu: 0 };
    };
    // One after another, each engine starts when the previous one is done (its requests' latency
    // counts from then); taking turns, all start now.
    const together = sliceMs > 0 ? serveInTurns(order.map(start), sliceMs) : null;
    for (const [k, run] of order.entries()) {
      const { engine, cpu } = together?.[k] ?? serveInTurns([start(run)], Infinity)[0];
      const results = reqs.map((r) => engine.result(r.id)!);
      engine.dispose();
      if (run.name === 'sequence' && rep === 0) callCost = fitCallCost(engine.trace().steps.filter((t) => t.kind === 'decode'));
      if (rep === 0) outputs.set(run.name, results);
      const row = rowOf(run, engine.stats(), cpu);
      opts.onRun?.(row);
      tps.set(run.name, [...(tps.get(run.name) ?? []), row.tokensPerSecond]);
      const prev = best.get(run.name);
      if (!prev) {
        best.set(run.name, row);
      } else {
        // Fastest repeat by wall time, and separately the least CPU time.
        const cpuBest = Math.max(prev.tokensPerCpuSecond, row.tokensPerCpuSecond);
        const pick = row.tokensPerSecond > prev.tokensPerSecond ? row : prev;
        best.set(run.name, { ...pick, tokensPerCpuSecond: cpuBest, cpuSeconds: pick.tokens / cpuBest });
      }
    }
  }
  const rows = runs.map((r) => best.get(r.name)!);
  const get = (name: string): ServeBenchRow => rows.find((r) => r.name === name)!;
  for (const r of rows) {
    const prefix = r.model === 'baseline' ? 'baseline ' : '';
    r.speedupVsStatic = r.tokensPerSecond / get(`${prefix}static`).tokensPerSecond;
    r.speedupVsSequence = r.tokensPerSecond / get(`${prefix}sequence`).tokensPerSecond;
    r.cpuSpeedupVsStatic = r.tokensPerCpuSecond / get(`${prefix}static`).tokensPerCpuSecond;
    r.cpuSpeedupVsSequence = r.tokensPerCpuSecond / get(`${prefix}sequence`).tokensPerCpuSecond;
  }
  const same = (a: GenerationResult[], b: GenerationResult[]): boolean => a.every((r, i) => r.tokens.join() === b[i].tokens.join());
  const seq = outputs.get('sequence')!;
  const full = outputs.get('depthwise')!;
  for (const r of rows) r.agreement = agreementWith(outputs.get(r.name)!, r.model === 'model' ? full : outputs.get('baseline sequence')!);
  const meanOf = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  if (opts.baseline) {
    for (const r of rows.filter((x) => x.earlyExit)) {
      const perRepeat = (of: string): number[] => tps.get(r.name)!.map((t, i) => t / tps.get(of)![i]);
      const st = perRepeat('baseline static'), sq = perRepeat('baseline sequence');
      r.vsBaseline = { static: median(st), sequence: median(sq), perRepeat: { static: st, sequence: sq } };
    }
  }
  const firstExit = get(exitRuns[0].name);
  const exitVsBaseline = firstExit.vsBaseline;
  return {
    workload: {
      requests: reqs.length,
      seed: opts.seed ?? 0,
      maxBatch,
      ...workloadRanges(model, opts),
      meanPromptTokens: meanOf(reqs.map((r) => r.prompt.length)),
      meanNewTokens: meanOf(reqs.map((r) => r.maxNewTokens)),
      temperature: opts.temperature ?? 0,
    },
    model: { depth: model.depth, blocks: model.blocks.length, loops: resolveLayout(model, opts.layout).loops, parameters: model.numParameters() },
    rows,
    depthwiseExitVsStatic: firstExit.speedupVsStatic,
    depthwiseExitVsSequence: firstExit.speedupVsSequence,
    repeats,
    sliceMs,
    callCost: { ...callCost, maxBatchMs: callCost.fixedMs + maxBatch * callCost.perRowMs },
    tokensAgree: same(outputs.get('static')!, seq) && same(seq, full),
    exitAgreement: firstExit.agreement,
    kvFill: kvFillName(fills[0]),
    ...(exitVsBaseline ? { exitVsBaseline } : {}),
  };
}

/**
 * Serves the engines' queued requests to the end, the engines taking turns: each runs calls
 * for about sliceMs (Infinity: to the end), then the next. Adds each engine's CPU seconds to its
 * entry; returns the entries.
 */
export function serveInTurns<E extends { engine: ServingEngine; cpu: number }>(served: E[], sliceMs: number): E[] {
  let active = served;
  while (active.length > 0) {
    for (const s of active) {
      const cpu0 = cpuSeconds();
      const t0 = performance.now();
      while (s.engine.step() && performance.now() - t0 < sliceMs);
      s.cpu += cpuSeconds() - cpu0;
    }
    active = active.filter((s) => !s.engine.idle);
  }
  return served;
}

/** Median of a non-empty list (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** One run of the benchmark: a scheduler on the model or the baseline, with or without early exit. */
interface BenchRun {
  name: string;
  scheduler: SchedulerKind;
  target: 'model' | 'baseline';
  policy: ExitPolicy | null;
  kvFill: KvFill | null;
}

function rowOf(run: BenchRun, st: EngineStats, cpu: number): ServeBenchRow {
  return {
    name: run.name,
    scheduler: run.scheduler,
    model: run.target,
    earlyExit: run.policy !== null,
    policy: st.policy,
    kvFill: run.kvFill === null ? null : kvFillName(run.kvFill),
    tokens: st.tokens,
    seconds: st.busyMs / 1000,
    tokensPerSecond: st.tokensPerSecond,
    cpuSeconds: cpu,
    tokensPerCpuSecond: cpu > 0 ? st.tokens / cpu : NaN,
    meanLatencyMs: st.latencyMs.mean,
    p95LatencyMs: st.latencyMs.p95,
    meanTimeToFirstTokenMs: st.timeToFirstTokenMs.mean,
    meanOccupancy: st.meanOccupancy,
    meanBatch: st.meanBatch,
    steps: st.steps,
    decodeCalls: st.decodeCalls,
    prefillCalls: st.prefillCalls,
    mixedCalls: st.mixedCalls,
    meanLoopsPerToken: st.meanLoopsPerToken,
    exitsPerLoop: st.exitsPerLoop,
    kvFilled: st.kvFilled,
    kvFolded: st.kvFolded,
    blockRows: st.blockRows,
    timeMs: st.timeMs,
    agreement: NaN,
    speedupVsStatic: NaN,
    speedupVsSequence: NaN,
    cpuSpeedupVsStatic: NaN,
    cpuSpeedupVsSequence: NaN,
  };
}

/** Fraction of a run's tokens equal to the reference run's token at the same position. */
function agreementWith(run: GenerationResult[], ref: GenerationResult[]): number {
  let agree = 0, total = 0;
  run.forEach((r, i) => {
    r.tokens.forEach((t, j) => {
      total++;
      if (ref[i].tokens[j] === t) agree++;
    });
  });
  return total ? agree / total : 1;
}

/** CPU seconds this process has used (all threads), or NaN where there is no process. */
function cpuSeconds(): number {
  if (typeof process === 'undefined' || typeof process.cpuUsage !== 'function') return NaN;
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

export interface CallCost {
  fixedMs: number;
  perRowMs: number;
  /** fixedMs + perRowMs, and the same at maxBatch rows. */
  batch1Ms: number;
  maxBatchMs: number;
}

/** Least-squares line through (rows, ms) of traced calls. */
function fitCallCost(steps: readonly { duration: number; items: readonly unknown[] }[]): CallCost {
  const n = steps.length;
  let sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const s of steps) {
    const x = s.items.length, y = s.duration * 1000;
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  const den = n * sxx - sx * sx;
  const perRowMs = n > 1 && den !== 0 ? (n * sxy - sx * sy) / den : NaN;
  const fixedMs = n > 0 ? (Number.isNaN(perRowMs) ? sy / n : (sy - perRowMs * sx) / n) : NaN;
  return { fixedMs, perRowMs, batch1Ms: fixedMs + (Number.isNaN(perRowMs) ? 0 : perRowMs), maxBatchMs: NaN };
}

/** A plain-text table of a report (one row per run). */
export function formatServeBench(report: ServeBenchReport): string {
  const w = report.workload;
  const lines = [
    `workload: ${w.requests} requests, seed ${w.seed}, max batch ${w.maxBatch}, prompts ${w.promptTokens.min}-${w.promptTokens.max} tokens (mean ${w.meanPromptTokens.toFixed(1)}), ` +
      `new tokens ${w.newTokens.min}-${w.newTokens.max} (mean ${w.meanNewTokens.toFixed(1)}), temperature ${w.temperature}` +
      (report.repeats > 1 ? `; best of ${report.repeats} repeats` : '') +
      (report.sliceMs > 0 ? `; the runs taking turns of ${report.sliceMs} ms` : ''),
    `model: ${report.model.depth} depth positions over ${report.model.blocks} blocks, ${report.model.loops} loops, ${report.model.parameters} parameters`,
    '',
    pad(['run', 'tok/s', 'x static', 'x seq', 'tok/cpu-s', 'x static', 'x seq', 'lat ms', 'p95 ms', 'occup.', 'batch', 'calls', 'loops/tok', 'exits per loop']),
  ];
  for (const r of report.rows) {
    lines.push(pad([
      r.name, r.tokensPerSecond.toFixed(1), r.speedupVsStatic.toFixed(2), r.speedupVsSequence.toFixed(2),
      r.tokensPerCpuSecond.toFixed(1), r.cpuSpeedupVsStatic.toFixed(2), r.cpuSpeedupVsSequence.toFixed(2),
      r.meanLatencyMs.toFixed(0), r.p95LatencyMs.toFixed(0), r.meanOccupancy.toFixed(2), r.meanBatch.toFixed(1), String(r.steps),
      r.meanLoopsPerToken.toFixed(2), r.exitsPerLoop.join('/'),
    ]));
  }
  lines.push('');
  const c = report.callCost;
  lines.push(`one decode call of one block: ${c.fixedMs.toFixed(2)} ms + ${c.perRowMs.toFixed(3)} ms per row ` +
    `(${c.batch1Ms.toFixed(2)} ms at 1 row, ${c.maxBatchMs.toFixed(2)} ms at ${w.maxBatch}; fitted to the sequence-wise run's calls)`);
  lines.push(`depthwise+exit (${report.rows.find((r) => r.earlyExit)?.policy}, K/V fill ${report.kvFill}): ${report.depthwiseExitVsStatic.toFixed(2)}x static, ` +
    `${report.depthwiseExitVsSequence.toFixed(2)}x sequence-wise; schedulers agree without exit: ${report.tokensAgree ? 'yes' : 'no'}`);
  const vb = report.exitVsBaseline;
  if (vb) {
    const each = (xs: number[]): string => xs.map((x) => x.toFixed(2)).join(' ');
    lines.push(`depthwise+exit over the baseline, median of ${vb.perRepeat.static.length} per-repeat ratio${vb.perRepeat.static.length > 1 ? 's' : ''}: ` +
      `${vb.static.toFixed(2)}x static (${each(vb.perRepeat.static)}), ${vb.sequence.toFixed(2)}x sequence-wise (${each(vb.perRepeat.sequence)})`);
  }
  const exits = report.rows.filter((r) => r.earlyExit);
  if (vb && exits.length > 1) {
    for (const r of exits.slice(1)) lines.push(`${r.name} over the baseline: ${r.vsBaseline!.static.toFixed(2)}x static, ${r.vsBaseline!.sequence.toFixed(2)}x sequence-wise (medians)`);
  }
  lines.push(`tokens equal to the full-depth run's at the same position: ` +
    exits.map((r) => `${r.policy} (K/V fill ${r.kvFill}) ${(100 * r.agreement).toFixed(1)}%`).join(', '));
  return lines.join('\n');
}

/**
 * Where each run's busy time went (EngineStats.timeMs), as a plain-text table: block calls of
 * prefill and decode items, exit and final logits with their host read, K/V fill of exited
 * tokens, and the rest (scheduling, sampling, admission, freeing); ms and % of the run.
 */
export function formatServeBenchTimes(report: ServeBenchReport): string {
  const cols = ['prefill', 'decode', 'head', 'kvFill', 'other'] as const;
  const head = ['run'.padEnd(30), ...cols.map((c) => c.padStart(15)), 'total ms'.padStart(10), 'ms/token'.padStart(9)].join(' ');
  const lines = [head];
  for (const r of report.rows) {
    const total = cols.reduce((a, c) => a + r.timeMs[c], 0);
    const cells = cols.map((c) => `${r.timeMs[c].toFixed(0)} (${((100 * r.timeMs[c]) / total).toFixed(0)}%)`.padStart(15));
    lines.push([r.name.padEnd(30), ...cells, total.toFixed(0).padStart(10), (total / r.tokens).toFixed(3).padStart(9)].join(' '));
  }
  return lines.join('\n');
}

function pad(cells: string[]): string {
  const widths = [30, 8, 8, 6, 9, 8, 6, 8, 8, 6, 6, 6, 9, 11];
  return cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' ');
}

function checkRange(r: IntRange, what: string): void {
  if (!Number.isInteger(r.min) || !Number.isInteger(r.max) || r.min < 1 || r.max < r.min) {
    throw new RrtError(`serveBench: ${what} must be integers with 1 <= min <= max, got {min: ${r.min}, max: ${r.max}}`);
  }
}
