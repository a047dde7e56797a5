// What the serving engine counts while it runs, and the summary it reports.

import type { GenerationResult } from './request.js';

export interface EngineStats {
  scheduler: string;
  policy: string;
  /** kvFillName of the fill: 'propagate', 'reuse', 'reuse-loop' or 'predict'. */
  kvFill: string;
  loops: number;
  maxBatch: number;
  /** Requests finished by any reason, and by reason. */
  requests: number;
  completed: number;
  cancelled: number;
  errors: number;
  /** Generated tokens. */
  tokens: number;
  /** Time spent inside step(), ms. */
  busyMs: number;
  /** tokens / busy seconds. */
  tokensPerSecond: number;
  latencyMs: { mean: number; p95: number; max: number };
  timeToFirstTokenMs: { mean: number; p95: number };
  /** Block calls (decode + prefill). */
  steps: number;
  /** Calls with decode items (prompts may have joined them: mixedCalls), and calls of prompts only. */
  decodeCalls: number;
  prefillCalls: number;
  /** Of decodeCalls, those that prompts joined (ServingEngineOptions.mixPrefill). */
  mixedCalls: number;
  /** Mean decode items per decode call, padding included (prompts not counted), and mean useful ones / maxBatch. */
  meanBatch: number;
  meanOccupancy: number;
  /** Tokens that exited after loop b (hindsight policies: would have exited). */
  exitsPerLoop: number[];
  /** Mean loops run per generated token (prefill excluded). */
  meanLoopsPerToken: number;
  /** (token, depth) K/V entries filled for exited tokens. */
  kvFilled: number;
  /** Of kvFilled, the entries written inside a later decode call of the same block (the fold). */
  kvFolded: number;
  /** Rows put through the LM head (exit checks and final logits). */
  headRows: number;
  /**
   * Rows put through block calls: prompt tokens (a T-token prompt counts T in every call it runs
   * in, one per depth position) and decode items (padding rows included). What the model
   * computed, whatever the time.
   */
  blockRows: { prompt: number; decode: number };
  /**
   * Where the busy time went, ms: block calls of prompts only (prefill) and calls with decode
   * items (decode; the rows of prompts that joined them included), with embedding, input
   * gathering and folded K/V fills, exit and final logits with their host read, K/V
   * fill done apart from a call (copies, predictions, or every fill when folding is off), and
   * the rest (scheduling, sampling, admission, freeing).
   */
  timeMs: { prefill: number; decode: number; head: number; kvFill: number; other: number };
}

/** Running counts of one engine. */
export class EngineCounters {
  busyMs = 0;
  decodeCalls = 0;
  prefillCalls = 0;
  mixedCalls = 0;
  /** Rows of decode calls, padding included, and rows that were not padding. */
  decodeRows = 0;
  usefulRows = 0;
  /** Rows of prompt tokens in block calls. */
  promptRows = 0;
  tokens = 0;
  loopsRun = 0;
  kvFilled = 0;
  kvFolded = 0;
  headRows = 0;
  readonly timeMs = { prefill: 0, decode: 0, head: 0, kvFill: 0 };
  readonly exitsPerLoop: number[];

  constructor(loops: number) {
    this.exitsPerLoop = new Array<number>(loops).fill(0);
  }

  /** The summary of everything finished so far. */
  summary(results: Iterable<GenerationResult>, about: { scheduler: string; policy: string; kvFill: string; loops: number; maxBatch: number; steps: number }): EngineStats {
    const rs = [...results];
    const done = rs.filter((r) => r.finishReason !== 'error' && r.finishReason !== 'cancelled');
    const lat = done.map((r) => r.latencyMs).sort((a, b) => a - b);
    const ttft = done.filter((r) => !Number.isNaN(r.firstTokenAt)).map((r) => r.firstTokenAt - r.submittedAt).sort((a, b) => a - b);
    const t = this.timeMs;
    return {
      ...about,
      requests: rs.length,
      completed: done.length,
      cancelled: rs.filter((r) => r.finishReason === 'cancelled').length,
      errors: rs.filter((r) => r.finishReason === 'error').length,
      tokens: this.tokens,
      busyMs: this.busyMs,
      tokensPerSecond: this.busyMs > 0 ? (this.tokens * 1000) / this.busyMs : 0,
      latencyMs: { mean: meanOf(lat), p95: percentile(lat, 0.95), max: lat.length ? lat[lat.length - 1] : 0 },
      timeToFirstTokenMs: { mean: meanOf(ttft), p95: percentile(ttft, 0.95) },
      steps: about.steps,
      decodeCalls: this.decodeCalls,
      prefillCalls: this.prefillCalls,
      mixedCalls: this.mixedCalls,
      meanBatch: this.decodeCalls ? this.decodeRows / this.decodeCalls : 0,
      meanOccupancy: this.decodeCalls ? this.usefulRows / this.decodeCalls / about.maxBatch : 0,
      exitsPerLoop: [...this.exitsPerLoop],
      meanLoopsPerToken: this.tokens ? this.loopsRun / this.tokens : 0,
      kvFilled: this.kvFilled,
      kvFolded: this.kvFolded,
      headRows: this.headRows,
      blockRows: { prompt: this.promptRows, decode: this.decodeRows },
      timeMs: { ...t, other: this.busyMs - t.prefill - t.decode - t.head - t.kvFill },
    };
  }
}

function meanOf(xs: number[]): number {
  return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)];
}
