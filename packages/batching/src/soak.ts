// A soak test of the serving engine under load and faults: a long stream of requests with random
// prompt and output lengths arrives a few per call; some are malformed, some are cancelled (while
// queued, while running, or from inside a token callback). Every good request must end with
// exactly the tokens of one-request-at-a-time greedy decoding (early exit off), every bad one with
// its error, every cancelled one with 'cancelled' and a prefix of its greedy tokens; no request
// may be lost or finish twice, the run must end within a bound on calls, and the KV caches (and
// every other tensor the engine made) must be freed by the end.

import { type Backend, Generator, RrtError, backendByName } from '@rrt/tensor';
import { CausalLM, defineConfig, generate } from '@rrt/layers';
import { type FinishReason, type GenerationRequest, type GenerationResult, ServingEngine } from './engine/index.js';
import type { SchedulerKind } from './scheduler.js';

/** The kinds of malformed request the soak injects. */
export type SoakFault = 'empty-prompt' | 'prompt-too-long' | 'zero-max-tokens' | 'unknown-token';

export const SOAK_FAULTS: readonly SoakFault[] = ['empty-prompt', 'prompt-too-long', 'zero-max-tokens', 'unknown-token'];

/** How a cancellation is issued: right after submit (queued), between calls, or from onToken. */
export type SoakCancelKind = 'queued' | 'between-calls' | 'in-callback';

export interface SoakOptions {
  scheduler: SchedulerKind;
  /** Requests in the stream (default 10000). */
  requests?: number;
  /** Seeds the stream (lengths, faults, cancellations, arrival times). Default 0. */
  seed?: number;
  /** Engine slots (default 16). */
  maxBatch?: number;
  /** Fraction of requests cancelled (default 0.1) and malformed (default 0.05). */
  cancelFraction?: number;
  badFraction?: number;
  /**
   * Good prompts are drawn from this many distinct random prompts (default 256), so the greedy
   * reference costs one generation per distinct prompt, not per request.
   */
  distinctPrompts?: number;
  /** Prompt lengths of good requests: 1..maxPrompt (default: up to the context - 2). */
  maxPrompt?: number;
  /** New tokens of good requests: 1..maxNewTokens (default 8). */
  maxNewTokens?: number;
  /** Mean requests arriving before each call (default 1: near the engine's service rate, so queues form and drain). */
  arrivalsPerCall?: number;
  /** Reference tokens computed beforehand by soakReference (else computed here). */
  reference?: SoakReference;
  /** Problems listed in the report (default 10); the counts are always complete. */
  maxProblems?: number;
}

/** Greedy continuations of each distinct prompt, up to maxNewTokens tokens or the context. */
export interface SoakReference {
  prompts: number[][];
  /** tokens[i]: greedy tokens after prompts[i]; finishReason 'context' when the context cut them short. */
  tokens: number[][];
  reasons: FinishReason[];
  maxNewTokens: number;
}

export interface SoakReport {
  scheduler: SchedulerKind;
  requests: number;
  /** Well-formed requests, and those of them that ran to their own end (length / context). */
  good: number;
  completed: number;
  /** Malformed requests injected, by kind, and how many got finishReason 'error' with the expected message. */
  faults: Record<SoakFault, number>;
  errorsAsExpected: number;
  /** Cancellations issued, by kind; those that took effect; those that came after the request had finished (it then must be complete). */
  cancels: Record<SoakCancelKind, number>;
  cancelled: number;
  cancelsAfterFinish: number;
  /** Requests submitted that never got a result, and results reported more than once (must both be 0). */
  lost: number;
  duplicated: number;
  /** Good or cancelled requests whose tokens differ from greedy decoding (must be 0). */
  mismatched: number;
  generatedTokens: number;
  /** Bytes held by KV caches before the stream, at most during it, and after it. */
  kvBytesBefore: number;
  kvBytesPeak: number;
  kvBytesAfter: number;
  /** Live tensor storages of the model's backend before the engine was made and after it was disposed. */
  storagesBefore: number;
  storagesAfter: number;
  /** Block calls, and the bound they must not exceed: depth x max(1, new tokens) summed over good requests (every call serves a useful row). */
  steps: number;
  stepBound: number;
  /** Most calls between a request's submission and its result. */
  maxLatencyCalls: number;
  /** Wall time of the stream (reference excluded), ms. */
  ms: number;
  /** First problems found (empty when all checks pass). */
  problems: string[];
}

/**
 * The tiny random model the soak uses by default: llama-style, hidden size 16, 2 blocks run 2
 * loops (CYCLE schedule 0 1 0 1), 2 query heads over 1 key/value head, vocabulary 64, context 24,
 * on the float64-accumulating `ref` backend (so batched rows are bit-identical to single rows).
 */
export function soakModel(opts: { seed?: number; backend?: Backend; maxPositions?: number } = {}): CausalLM {
  const cfg = defineConfig('llama', {
    vocabSize: 64, hiddenSize: 16, numLayers: 4, numHeads: 2, numKvHeads: 1, intermediateSize: 32,
    maxPositions: opts.maxPositions ?? 24, tieWordEmbeddings: true,
  });
  // std 0.3: clearly separated logits, so greedy decoding is not a chain of near-ties.
  return new CausalLM(cfg, { backend: opts.backend ?? backendByName('ref'), rng: new Generator(opts.seed ?? 11), std: 0.3, blocks: 2, schedule: [0, 1, 0, 1] }).eval();
}

/**
 * Greedy decoding of `distinct` random prompts (lengths 1..maxPrompt) one at a time with the
 * model's own forward pass and KV cache (`generate` from @rrt/layers), up to maxNewTokens each.
 */
export function soakReference(model: CausalLM, opts: { seed?: number; distinctPrompts?: number; maxPrompt?: number; maxNewTokens?: number } = {}): SoakReference {
  const { maxPrompt, maxNewTokens } = soakLengths(model, opts);
  const n = opts.distinctPrompts ?? 256;
  if (!Number.isInteger(n) || n < 1) throw new RrtError(`soak: distinctPrompts must be an integer >= 1, got ${n}`);
  const rng = new Generator((opts.seed ?? 0) ^ 0x5eed);
  const V = model.cfg.vocabSize;
  const prompts = Array.from({ length: n }, () => Array.from({ length: rng.int(1, maxPrompt + 1) }, () => rng.int(0, V)));
  const tokens: number[][] = [];
  const reasons: FinishReason[] = [];
  for (const prompt of prompts) {
    const r = generate(model, null, { prompt, maxNewTokens, temperature: 0 });
    tokens.push(r.tokens);
    reasons.push(r.finishReason === 'context' ? 'context' : 'length');
  }
  return { prompts, tokens, reasons, maxNewTokens };
}

function soakLengths(model: CausalLM, opts: { maxPrompt?: number; maxNewTokens?: number }): { maxPrompt: number; maxNewTokens: number } {
  const ctx = model.cfg.maxPositions;
  const maxPrompt = opts.maxPrompt ?? Math.max(1, ctx - 2);
  const maxNewTokens = opts.maxNewTokens ?? 8;
  if (!Number.isInteger(maxPrompt) || maxPrompt < 1 || maxPrompt > ctx) throw new RrtError(`soak: maxPrompt must be an integer in [1, ${ctx}] (the context), got ${maxPrompt}`);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new RrtError(`soak: maxNewTokens must be an integer >= 1, got ${maxNewTokens}`);
  return { maxPrompt, maxNewTokens };
}

interface Planned {
  req: GenerationRequest;
  /** Index into the reference prompts (good requests). */
  prompt: number;
  fault: SoakFault | null;
  cancel: SoakCancelKind | null;
  /** between-calls: calls after submission; in-callback: cancel once this many tokens arrived. */
  cancelAfter: number;
}

/**
 * Runs one soak stream through a ServingEngine with the given scheduler (early exit off) and
 * checks every result against one-at-a-time greedy decoding. model: any CausalLM; the default
 * lengths suit soakModel(). Returns the figures; `problems` lists what failed (empty: passed).
 */
export function soak(model: CausalLM, opts: SoakOptions): SoakReport {
  const N = opts.requests ?? 10_000;
  if (!Number.isInteger(N) || N < 1) throw new RrtError(`soak: requests must be an integer >= 1, got ${N}`);
  const cancelFraction = opts.cancelFraction ?? 0.1;
  const badFraction = opts.badFraction ?? 0.05;
  if (!(cancelFraction >= 0 && badFraction >= 0 && cancelFraction + badFraction <= 1)) {
    throw new RrtError(`soak: cancelFraction and badFraction must be >= 0 with a sum <= 1, got ${cancelFraction} and ${badFraction}`);
  }
  const maxBatch = opts.maxBatch ?? 16;
  const rate = opts.arrivalsPerCall ?? 1;
  if (!(rate > 0)) throw new RrtError(`soak: arrivalsPerCall must be > 0, got ${rate}`);
  const { maxNewTokens } = soakLengths(model, opts);
  const ref = opts.reference ?? soakReference(model, opts);
  if (ref.maxNewTokens < maxNewTokens) throw new RrtError(`soak: the reference has ${ref.maxNewTokens} tokens per prompt, fewer than maxNewTokens ${maxNewTokens}; build it with the same maxNewTokens`);
  const maxProblems = opts.maxProblems ?? 10;
  const { vocabSize: V, maxPositions: ctx } = model.cfg;
  const L = model.depth;

  // The stream: lengths, faults and cancellations, all from the seed.
  const rng = new Generator(opts.seed ?? 0);
  const plan: Planned[] = [];
  const faults = Object.fromEntries(SOAK_FAULTS.map((f) => [f, 0])) as Record<SoakFault, number>;
  const cancels: Record<SoakCancelKind, number> = { queued: 0, 'between-calls': 0, 'in-callback': 0 };
  let stepBound = 0;
  for (let id = 0; id < N; id++) {
    const u = rng.next();
    const p = rng.int(0, ref.prompts.length);
    const maxNew = rng.int(1, maxNewTokens + 1);
    let req: GenerationRequest = { id, prompt: ref.prompts[p], maxNewTokens: maxNew };
    let fault: SoakFault | null = null;
    let cancel: SoakCancelKind | null = null;
    let cancelAfter = 0;
    if (u < badFraction) {
      fault = SOAK_FAULTS[rng.int(0, SOAK_FAULTS.length)];
      faults[fault]++;
      if (fault === 'empty-prompt') req = { ...req, prompt: [] };
      else if (fault === 'prompt-too-long') req = { ...req, prompt: Array.from({ length: ctx + 1 + rng.int(0, 8) }, () => rng.int(0, V)) };
      else if (fault === 'zero-max-tokens') req = { ...req, maxNewTokens: 0 };
      else {
        const bad = [V + rng.int(0, 100), -1 - rng.int(0, 5), 0.5 + rng.int(0, V - 1)][rng.int(0, 3)];
        const prompt = [...req.prompt];
        prompt[rng.int(0, prompt.length)] = bad;
        req = { ...req, prompt };
      }
    } else {
      stepBound += L * Math.max(1, Math.min(maxNew, ref.tokens[p].length));
      if (u < badFraction + cancelFraction) {
        const k = rng.next();
        cancel = k < 0.2 ? 'queued' : k < 0.6 ? 'between-calls' : 'in-callback';
        cancels[cancel]++;
        cancelAfter = cancel === 'between-calls' ? rng.int(0, 4 * maxBatch) : cancel === 'in-callback' ? rng.int(1, maxNew + 1) : 0;
      }
    }
    plan.push({ req, prompt: p, fault, cancel, cancelAfter });
  }

  const backend = model.embed.weight.backend;
  // Attention keeps a bounded cache of causal masks, one per shape, built on first use. Serve one
  // request per prompt length first, so that what is counted below is what the engine holds.
  const byLength = new Map<number, number[]>();
  for (const p of ref.prompts) byLength.set(p.length, p);
  const warm = new ServingEngine(model, { scheduler: opts.scheduler, maxBatch });
  warm.serve([...byLength.values()].map((prompt, i) => ({ id: i, prompt, maxNewTokens })));
  warm.dispose();
  const storagesBefore = backend.memory().storages;
  const finishes = new Map<string | number, number>();
  const tokensSoFar = new Map<string | number, number>();
  const submittedAtCall = new Map<string | number, number>();
  const finishedAtCall = new Map<string | number, number>();
  const callbackCancels = new Map<string | number, number>();
  let cancelsAfterFinish = 0;
  const problems: string[] = [];
  const problem = (msg: string): void => {
    if (problems.length < maxProblems) problems.push(msg);
  };

  const engine: ServingEngine = new ServingEngine(model, {
    scheduler: opts.scheduler,
    maxBatch,
    onToken: (id) => {
      const n = (tokensSoFar.get(id) ?? 0) + 1;
      tokensSoFar.set(id, n);
      const at = callbackCancels.get(id);
      if (at !== undefined && n === at) {
        callbackCancels.delete(id);
        // A cancel inside a callback is deferred to the end of the call; it has no effect when
        // this token was the request's last (the request then completes).
        if (!engine.cancel(id) && engine.result(id) === undefined) problem(`request ${id}: cancel from onToken was refused while it was still running`);
      }
    },
    onFinish: (r) => {
      finishes.set(r.id, (finishes.get(r.id) ?? 0) + 1);
      finishedAtCall.set(r.id, engine.steps);
    },
  });
  const kvBytesBefore = engine.kvBytes();
  let kvBytesPeak = kvBytesBefore;
  const due = new Map<number, (string | number)[]>();
  const started = performance.now();
  let next = 0;
  const hardLimit = stepBound + N + 16;
  while (next < N || !engine.idle) {
    // Arrivals: 0..2*rate requests before this call (at least one when the engine is idle).
    let arrivals = rng.int(0, Math.floor(2 * rate) + 1);
    if (engine.idle && arrivals === 0) arrivals = 1;
    for (let a = 0; a < arrivals && next < N; a++, next++) {
      const pl = plan[next];
      const id = pl.req.id;
      engine.submit(pl.req);
      submittedAtCall.set(id, engine.steps);
      if (pl.cancel === 'queued') {
        if (!engine.cancel(id)) problem(`request ${id}: cancel right after submit was refused`);
      } else if (pl.cancel === 'between-calls') {
        const at = engine.steps + pl.cancelAfter;
        let list = due.get(at);
        if (!list) due.set(at, (list = []));
        list.push(id);
      } else if (pl.cancel === 'in-callback') {
        callbackCancels.set(id, pl.cancelAfter);
      }
    }
    for (const id of due.get(engine.steps) ?? []) {
      const ok = engine.cancel(id);
      const r = engine.result(id);
      if (!ok) {
        if (!r || r.finishReason === 'cancelled') problem(`request ${id}: cancel between calls was refused, yet it ${r ? 'is cancelled' : 'has no result'}`);
      } else if (r?.finishReason !== 'cancelled') {
        problem(`request ${id}: cancel between calls was accepted but its result is ${r?.finishReason ?? 'missing'}`);
      }
    }
    due.delete(engine.steps);
    engine.step();
    kvBytesPeak = Math.max(kvBytesPeak, engine.kvBytes());
    if (engine.steps > hardLimit) {
      problem(`the engine made ${engine.steps} calls, past the bound of ${hardLimit}; stopped`);
      break;
    }
  }
  const ms = performance.now() - started;
  const kvBytesAfter = engine.kvBytes();
  const steps = engine.steps;
  engine.dispose();
  const storagesAfter = backend.memory().storages;

  // Check every request.
  let lost = 0, duplicated = 0, mismatched = 0, completed = 0, cancelled = 0, errorsAsExpected = 0, generatedTokens = 0, maxLatencyCalls = 0;
  for (const pl of plan) {
    const id = pl.req.id;
    const r = engine.result(id);
    const count = finishes.get(id) ?? 0;
    if (!r || count === 0) {
      lost++;
      problem(`request ${id}: no result`);
      continue;
    }
    if (count > 1) {
      duplicated++;
      problem(`request ${id}: finished ${count} times`);
    }
    maxLatencyCalls = Math.max(maxLatencyCalls, finishedAtCall.get(id)! - submittedAtCall.get(id)!);
    generatedTokens += r.tokens.length;
    if (pl.fault) {
      if (r.finishReason === 'error' && r.tokens.length === 0 && faultMessage(pl.fault).test(r.error ?? '')) errorsAsExpected++;
      else problem(`request ${id} (${pl.fault}): expected an error matching ${faultMessage(pl.fault)}, got ${describe(r)}`);
      continue;
    }
    const want = ref.tokens[pl.prompt].slice(0, pl.req.maxNewTokens);
    const wantReason: FinishReason = pl.req.maxNewTokens <= ref.tokens[pl.prompt].length ? 'length' : ref.reasons[pl.prompt];
    if (r.finishReason === 'cancelled') {
      cancelled++;
      if (!pl.cancel) problem(`request ${id}: cancelled, but no cancel was issued`);
      if (!isPrefix(r.tokens, want)) {
        mismatched++;
        problem(`request ${id}: cancelled with tokens [${r.tokens}], not a prefix of greedy [${want}]`);
      }
      continue;
    }
    if (pl.cancel === 'queued') problem(`request ${id}: cancelled while queued, yet it finished with ${r.finishReason}`);
    // A cancel that came after the request's last token (between calls, or from the callback of
    // that token) leaves it complete.
    if (pl.cancel) cancelsAfterFinish++;
    completed++;
    if (r.finishReason !== wantReason || r.tokens.join() !== want.join()) {
      mismatched++;
      problem(`request ${id}: ${describe(r)}; greedy decoding gives ${wantReason} [${want}]`);
    }
  }
  const good = plan.filter((p) => !p.fault).length;
  if (completed + cancelled + errorsAsExpected + lost !== N && problems.length === 0) problem('request counts do not add up');
  if (kvBytesAfter !== kvBytesBefore) problem(`KV caches hold ${kvBytesAfter} bytes after the stream, ${kvBytesBefore} before`);
  if (storagesAfter > storagesBefore) problem(`${storagesAfter - storagesBefore} tensor storages outlived the engine`);
  if (steps > stepBound) problem(`${steps} calls, more than the bound ${stepBound}`);

  return {
    scheduler: opts.scheduler, requests: N, good, completed, faults, errorsAsExpected, cancels, cancelled, cancelsAfterFinish,
    lost, duplicated, mismatched, generatedTokens, kvBytesBefore, kvBytesPeak, kvBytesAfter, storagesBefore, storagesAfter,
    steps, stepBound, maxLatencyCalls, ms, problems,
  };
}

/** What the engine's error message for each fault must say. */
function faultMessage(f: SoakFault): RegExp {
  switch (f) {
    case 'empty-prompt': return /prompt is empty/;
    case 'prompt-too-long': return /longer than the model's context/;
    case 'zero-max-tokens': return /maxNewTokens must be an integer >= 1, got 0/;
    case 'unknown-token': return /is not a token id in \[0, \d+\)/;
  }
}

function isPrefix(a: readonly number[], b: readonly number[]): boolean {
  return a.length <= b.length && a.every((t, i) => t === b[i]);
}

function describe(r: GenerationResult): string {
  return `${r.finishReason}${r.error ? ` (${r.error})` : ''} [${r.tokens}]`;
}

/** One line per figure, for scripts and logs. */
export function formatSoak(r: SoakReport): string {
  const f = r.faults;
  return [
    `${r.scheduler}: ${r.requests} requests (${r.good} well-formed), ${r.generatedTokens} tokens generated, ${r.steps} calls (bound ${r.stepBound}), ${(r.ms / 1000).toFixed(1)} s`,
    `  faults injected: ${f['empty-prompt']} empty prompt, ${f['prompt-too-long']} prompt longer than the context, ${f['zero-max-tokens']} max tokens 0, ${f['unknown-token']} unknown token id; ${r.errorsAsExpected} got their error`,
    `  cancels issued: ${r.cancels.queued} while queued, ${r.cancels['between-calls']} between calls, ${r.cancels['in-callback']} from onToken; ${r.cancelled} took effect, ${r.cancelsAfterFinish} came after the request finished`,
    `  completed ${r.completed} (tokens equal to greedy decoding: ${r.completed + r.cancelled - r.mismatched} of ${r.completed + r.cancelled}); lost ${r.lost}, duplicated ${r.duplicated}, mismatched ${r.mismatched}; longest wait ${r.maxLatencyCalls} calls`,
    `  KV bytes before / peak / after: ${r.kvBytesBefore} / ${r.kvBytesPeak} / ${r.kvBytesAfter}; live storages before / after: ${r.storagesBefore} / ${r.storagesAfter}`,
    `  ${r.problems.length === 0 ? 'all checks passed' : `PROBLEMS:\n    ${r.problems.join('\n    ')}`}`,
  ].join('\n');
}
