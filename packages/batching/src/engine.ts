// The serving engine: a stream of generation requests on one (recursive) model, scheduled by
// continuous depth-wise batching or by the two baselines, all through the same step loop.
//
// A resident request always owns exactly one work item: its prompt (prefill, T tokens) or its
// current token (decode, 1 token), at some depth position. One step = one batched call of one
// block: the scheduler picks the oldest ready item, then every ready item of the same kind whose
// next depth runs the same block joins the call (rows at different depth positions share it:
// ctx.depth holds each row's depth for per-depth hooks such as depth-wise LoRA, and each row
// appends to its own depth's cache). Prefill rows need equal lengths to share a [B, T, D] call,
// so prompts of equal length are prefilled together and other prefills get calls of their own
// (a prefill never exits early: later tokens need its K/V at every depth).
//
// Schedulers differ only in when items are allowed to be ready:
//   depthwise: a token that finishes (at an exit or the last loop) starts the next one at depth 0
//              in the next call, and freed slots are refilled before every call;
//   sequence:  iteration-level batching: a finished token waits until every resident token of
//              the iteration is done, and requests join or leave only at that boundary;
//   static:    a batch is formed when the engine is empty and runs until all of its requests are
//              done; finished rows keep computing (a padded batch) unless staticPadding is off.

import { type Generator, RrtError, type Tensor, concat, narrow, noGrad, reshape, tidy } from '@rrt/tensor';
import type { CausalLM, ForwardContext } from '@rrt/layers';
import { type ExitHeadAdapters, exitLogits, resolveLayout } from './exits.js';
import { type ExitedToken, type KvFill, ServingKVCache, checkKvFill, fillExitedKV, kvFillName } from './kv-fill.js';
import { type LoopLayout, type LoopLayoutOptions, loopEndingAt } from './loops.js';
import { type ExitPolicy, neverExit } from './policies.js';
import { requestRng, sampleToken } from './sampling.js';
import type { ScheduleTrace, SchedulerKind, TraceStep } from './simulator/index.js';

/** One generation request. Token ids are plain integers. */
export interface GenerationRequest {
  /** Unique among the requests an engine holds. */
  id: string | number;
  prompt: readonly number[];
  /** Tokens to generate, >= 1. */
  maxNewTokens: number;
  /** 0 or absent: greedy. */
  temperature?: number;
  /** Sample among the topK largest logits (0 or absent: all). */
  topK?: number;
  /** Seeds sampling (default: derived from the id). */
  seed?: number;
  /** Token ids that end generation (the stop token is kept in the output). */
  stop?: readonly number[];
}

/** length: maxNewTokens reached; stop: a stop token; context: the model's context is full. */
export type FinishReason = 'length' | 'stop' | 'context' | 'cancelled' | 'error';

export interface GenerationResult {
  id: string | number;
  tokens: number[];
  finishReason: FinishReason;
  /** Why the request was refused (finishReason 'error'). */
  error?: string;
  /**
   * Per generated token, the 0-based loop after which it exited (loops - 1 = full depth). For
   * a hindsight policy (oracle) the loop it would have exited at; the token ran all loops.
   */
  exitLoops: number[];
  /** Engine clock, ms. firstTokenAt is NaN when no token was generated. */
  submittedAt: number;
  firstTokenAt: number;
  finishedAt: number;
  /** finishedAt - submittedAt. */
  latencyMs: number;
}

export interface ServingEngineOptions {
  /** Default 'depthwise'. */
  scheduler?: SchedulerKind;
  /** Most resident requests, hence most rows in one call (default 16). */
  maxBatch?: number;
  /** Early-exit rule (default never). Static and sequence-wise honour it too: an exited row sits out the rest of its iteration. */
  exitPolicy?: ExitPolicy;
  /** How exited tokens' missing K/V are filled: a mode or a fitted StatePredictor (default 'propagate'). */
  kvFill?: KvFill;
  layout?: LoopLayout | LoopLayoutOptions;
  adapters?: ExitHeadAdapters;
  /** Most prompt tokens in one prefill call (default 2048); equal-length prompts share calls up to it. */
  maxPrefillTokens?: number;
  /** Static batching keeps finished rows computing until the whole batch is done (default true). */
  staticPadding?: boolean;
  /** Milliseconds; default performance.now. */
  clock?: () => number;
  /** Keep a trace of the first N calls (true = all), for scheduleToSvg and tests. */
  trace?: boolean | number;
  onToken?: (id: string | number, token: number, exitLoop: number) => void;
  onFinish?: (result: GenerationResult) => void;
}

export interface EngineStats {
  scheduler: SchedulerKind;
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
  decodeCalls: number;
  prefillCalls: number;
  /** Mean rows per decode call, padding included, and mean useful rows / maxBatch. */
  meanBatch: number;
  meanOccupancy: number;
  /** Tokens that exited after loop b (hindsight policies: would have exited). */
  exitsPerLoop: number[];
  /** Mean loops run per generated token (prefill excluded). */
  meanLoopsPerToken: number;
  /** (token, depth) K/V entries filled for exited tokens. */
  kvFilled: number;
  /** Rows put through the LM head (exit checks and final logits). */
  headRows: number;
  /**
   * Where the busy time went, ms: block calls of prefill and decode items (embedding and input
   * gathering included), exit and final logits with their host read, K/V fill of exited
   * tokens, and the rest (scheduling, sampling, admission, freeing).
   */
  timeMs: { prefill: number; decode: number; head: number; kvFill: number; other: number };
}

type SeqState = 'prefill' | 'decode' | 'parked';

/** A call's output shared by the items that continue from it (kept until the last lets go). */
class SharedHidden {
  refs = 0;
  constructor(readonly t: Tensor) {}
}

interface HiddenRef {
  src: SharedHidden;
  row: number;
}

interface Seq {
  req: GenerationRequest;
  /** Admission order (trace rows). */
  index: number;
  slot: number;
  cache: ServingKVCache;
  state: SeqState;
  /** Next depth position to run. */
  depth: number;
  /** Position of the token being computed (decode). */
  position: number;
  /** Token id being computed (decode). */
  input: number;
  hidden: HiddenRef | null;
  /** Step at which the current item became ready (oldest first). */
  readySince: number;
  /** Finished, still computing as a padding row of a static batch. */
  padding: boolean;
  tokens: number[];
  exitLoops: number[];
  perLoop: Float32Array[] | null;
  rng: Generator | null;
  stop: Set<number> | null;
  submittedAt: number;
  firstTokenAt: number;
}

interface Plan {
  kind: 'prefill' | 'decode';
  block: number;
  items: Seq[];
  /** Tokens per row. */
  T: number;
}

interface Waiting {
  req: GenerationRequest;
  submittedAt: number;
}

/**
 * Serves generation requests on a causal LM (recursive or plain) with continuous depth-wise
 * batching ('depthwise') or the baselines 'sequence' and 'static'. Usage:
 *
 *     const engine = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 32, exitPolicy: maxProbExit(0.8) });
 *     for (const r of requests) engine.submit(r);
 *     const results = engine.run();       // or step() in your own loop
 *
 * Bad requests (empty prompt, unknown token ids, ...) finish at once with finishReason 'error'
 * and do not disturb the others.
 */
export class ServingEngine {
  readonly model: CausalLM;
  readonly scheduler: SchedulerKind;
  readonly maxBatch: number;
  readonly policy: ExitPolicy;
  readonly kvFill: KvFill;
  readonly layout: LoopLayout;
  private readonly adapters?: ExitHeadAdapters;
  private readonly maxPrefillTokens: number;
  private readonly staticPadding: boolean;
  private readonly clock: () => number;
  private readonly traceLimit: number;
  private readonly onToken?: ServingEngineOptions['onToken'];
  private readonly onFinish?: ServingEngineOptions['onFinish'];
  /** Loop ending after each depth position, or -1. */
  private readonly loopAt: Int32Array;
  private readonly canExit: boolean;

  private readonly queue: Waiting[] = [];
  private readonly slots: (Seq | null)[];
  private readonly known = new Set<string | number>();
  private readonly results = new Map<string | number, GenerationResult>();
  private admitted = 0;
  /** True while a call runs: callbacks that cancel are applied after it. */
  private inStep = false;
  private readonly deferredCancels: (string | number)[] = [];
  private stepCount = 0;
  private readonly traceSteps: TraceStep[] = [];

  // Statistics.
  private busyMs = 0;
  private decodeCalls = 0;
  private prefillCalls = 0;
  private decodeRows = 0;
  private usefulRows = 0;
  private tokens = 0;
  private loopsRun = 0;
  private kvFilled = 0;
  private headRows = 0;
  private readonly timeMs = { prefill: 0, decode: 0, head: 0, kvFill: 0 };
  private readonly exitsPerLoop: number[];

  constructor(model: CausalLM, opts: ServingEngineOptions = {}) {
    this.model = model;
    this.scheduler = opts.scheduler ?? 'depthwise';
    if (!['static', 'sequence', 'depthwise'].includes(this.scheduler)) {
      throw new RrtError(`ServingEngine: unknown scheduler '${String(this.scheduler)}'; expected static, sequence or depthwise`);
    }
    this.maxBatch = opts.maxBatch ?? 16;
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1) throw new RrtError(`ServingEngine: maxBatch must be an integer >= 1, got ${this.maxBatch}`);
    this.policy = opts.exitPolicy ?? neverExit();
    this.kvFill = opts.kvFill ?? 'propagate';
    checkKvFill(model, this.kvFill, 'ServingEngine');
    this.layout = resolveLayout(model, opts.layout);
    this.adapters = opts.adapters;
    this.maxPrefillTokens = opts.maxPrefillTokens ?? 2048;
    this.staticPadding = opts.staticPadding ?? true;
    this.clock = opts.clock ?? (() => performance.now());
    this.traceLimit = opts.trace === true ? Infinity : typeof opts.trace === 'number' ? opts.trace : 0;
    this.onToken = opts.onToken;
    this.onFinish = opts.onFinish;
    this.loopAt = loopEndingAt(this.layout);
    this.canExit = this.layout.loops > 1 && this.policy.name !== 'never';
    this.slots = new Array<Seq | null>(this.maxBatch).fill(null);
    this.exitsPerLoop = new Array<number>(this.layout.loops).fill(0);
  }

  /**
   * Queues a request; returns its id. A malformed request finishes at once with finishReason
   * 'error' (see result()); only a duplicate id throws, since its result could not be told apart.
   */
  submit(req: GenerationRequest): string | number {
    if (this.known.has(req.id)) throw new RrtError(`ServingEngine: request id ${JSON.stringify(req.id)} is already in use`);
    this.known.add(req.id);
    const now = this.clock();
    const problem = this.validate(req);
    if (problem) {
      this.record({ id: req.id, tokens: [], finishReason: 'error', error: problem, exitLoops: [], submittedAt: now, firstTokenAt: NaN, finishedAt: now, latencyMs: 0 });
    } else {
      this.queue.push({ req, submittedAt: now });
    }
    return req.id;
  }

  /**
   * Stops a request (queued or running): frees its slot and KV cache now (called from a
   * callback during a step: right after that step); its tokens so far are kept. False if
   * unknown or already finished.
   */
  cancel(id: string | number): boolean {
    if (this.inStep) {
      if (this.results.has(id) || !this.known.has(id)) return false;
      this.deferredCancels.push(id);
      return true;
    }
    const q = this.queue.findIndex((w) => w.req.id === id);
    if (q >= 0) {
      const [w] = this.queue.splice(q, 1);
      const now = this.clock();
      this.record({ id, tokens: [], finishReason: 'cancelled', exitLoops: [], submittedAt: w.submittedAt, firstTokenAt: NaN, finishedAt: now, latencyMs: now - w.submittedAt });
      return true;
    }
    const seq = this.slots.find((s) => s !== null && s.req.id === id);
    if (!seq) return false;
    if (seq.padding) {
      this.release(seq);
      return false;
    }
    this.finish(seq, 'cancelled');
    this.release(seq);
    return true;
  }

  /** The result of a finished request, else undefined. */
  result(id: string | number): GenerationResult | undefined {
    return this.results.get(id);
  }

  /** Requests waiting for a slot. */
  get pending(): number {
    return this.queue.length;
  }

  /** Requests holding a slot (padding rows of a static batch included). */
  get resident(): number {
    let n = 0;
    for (const s of this.slots) if (s) n++;
    return n;
  }

  /** True when nothing is queued or running. */
  get idle(): boolean {
    return this.queue.length === 0 && this.resident === 0;
  }

  /** Bytes held by the KV caches of resident requests. */
  kvBytes(): number {
    let b = 0;
    for (const s of this.slots) if (s) b += s.cache.bytes;
    return b;
  }

  /** Calls run so far. */
  get steps(): number {
    return this.stepCount;
  }

  /**
   * Runs one batched call (admitting requests first). Returns false when there was nothing to
   * do. Everything a call creates is freed before it returns, except the hidden states that
   * continue to the next call and the KV caches.
   */
  step(): boolean {
    const t0 = this.clock();
    this.admitAndRelease();
    const plan = this.plan();
    if (!plan) {
      this.busyMs += this.clock() - t0;
      return false;
    }
    const traced = this.traceSteps.length < this.traceLimit ? this.traceItems(plan) : null;
    this.inStep = true;
    try {
      noGrad(() => tidy(() => this.execute(plan)));
    } finally {
      this.inStep = false;
    }
    for (const id of this.deferredCancels.splice(0)) this.cancel(id);
    const t1 = this.clock();
    this.busyMs += t1 - t0;
    if (traced) this.traceSteps.push({ step: this.stepCount, time: t0 / 1000, duration: (t1 - t0) / 1000, kind: plan.kind, items: traced });
    this.stepCount++;
    return true;
  }

  /** Steps until idle (or maxSteps calls); returns the results of every request finished so far, in submission order. */
  run(maxSteps = Infinity): GenerationResult[] {
    let n = 0;
    while (n < maxSteps && this.step()) n++;
    return [...this.results.values()];
  }

  /** Submits all requests and runs until they are done; results in request order. */
  serve(requests: readonly GenerationRequest[]): GenerationResult[] {
    for (const r of requests) this.submit(r);
    this.run();
    return requests.map((r) => this.results.get(r.id)!);
  }

  /** Throughput, latency, occupancy and exits of everything finished so far. */
  stats(): EngineStats {
    const rs = [...this.results.values()];
    const done = rs.filter((r) => r.finishReason !== 'error' && r.finishReason !== 'cancelled');
    const lat = done.map((r) => r.latencyMs).sort((a, b) => a - b);
    const ttft = done.filter((r) => !Number.isNaN(r.firstTokenAt)).map((r) => r.firstTokenAt - r.submittedAt).sort((a, b) => a - b);
    return {
      scheduler: this.scheduler,
      policy: this.policy.name,
      kvFill: kvFillName(this.kvFill),
      loops: this.layout.loops,
      maxBatch: this.maxBatch,
      requests: rs.length,
      completed: done.length,
      cancelled: rs.filter((r) => r.finishReason === 'cancelled').length,
      errors: rs.filter((r) => r.finishReason === 'error').length,
      tokens: this.tokens,
      busyMs: this.busyMs,
      tokensPerSecond: this.busyMs > 0 ? (this.tokens * 1000) / this.busyMs : 0,
      latencyMs: { mean: meanOf(lat), p95: percentile(lat, 0.95), max: lat.length ? lat[lat.length - 1] : 0 },
      timeToFirstTokenMs: { mean: meanOf(ttft), p95: percentile(ttft, 0.95) },
      steps: this.stepCount,
      decodeCalls: this.decodeCalls,
      prefillCalls: this.prefillCalls,
      meanBatch: this.decodeCalls ? this.decodeRows / this.decodeCalls : 0,
      meanOccupancy: this.decodeCalls ? this.usefulRows / this.decodeCalls / this.maxBatch : 0,
      exitsPerLoop: [...this.exitsPerLoop],
      meanLoopsPerToken: this.tokens ? this.loopsRun / this.tokens : 0,
      kvFilled: this.kvFilled,
      headRows: this.headRows,
      timeMs: { ...this.timeMs, other: this.busyMs - this.timeMs.prefill - this.timeMs.decode - this.timeMs.head - this.timeMs.kvFill },
    };
  }

  /** The calls traced so far, in the simulator's format (depth = loop index), for scheduleToSvg. */
  trace(): ScheduleTrace {
    return {
      scheduler: this.scheduler,
      loops: this.layout.loops,
      maxBatch: this.maxBatch,
      steps: this.traceSteps,
      totalSteps: this.stepCount,
      truncated: this.stepCount > this.traceSteps.length,
    };
  }

  /** Frees every resident request's cache and hidden state; queued requests are dropped. */
  dispose(): void {
    for (const s of this.slots) if (s) this.release(s);
    this.queue.length = 0;
  }

  // -------------------------------------------------------------------------------------------
  // Admission and scheduling

  private validate(req: GenerationRequest): string | null {
    const { vocabSize, maxPositions } = this.model.cfg;
    if (!Array.isArray(req.prompt) && !ArrayBuffer.isView(req.prompt)) return 'prompt must be an array of token ids';
    if (req.prompt.length === 0) return 'prompt is empty; give at least one token id';
    if (req.prompt.length > maxPositions) return `prompt has ${req.prompt.length} tokens, longer than the model's context (${maxPositions})`;
    for (let i = 0; i < req.prompt.length; i++) {
      const t = req.prompt[i];
      if (!Number.isInteger(t) || t < 0 || t >= vocabSize) return `prompt token ${JSON.stringify(t)} at position ${i} is not a token id in [0, ${vocabSize})`;
    }
    if (!Number.isInteger(req.maxNewTokens) || req.maxNewTokens < 1) return `maxNewTokens must be an integer >= 1, got ${JSON.stringify(req.maxNewTokens)}`;
    if (req.temperature !== undefined && !(req.temperature >= 0 && Number.isFinite(req.temperature))) return `temperature must be a finite number >= 0, got ${req.temperature}`;
    if (req.topK !== undefined && !(Number.isInteger(req.topK) && req.topK >= 0)) return `topK must be an integer >= 0, got ${req.topK}`;
    if (req.stop !== undefined && !req.stop.every((t) => Number.isInteger(t) && t >= 0 && t < vocabSize)) return `stop must list token ids in [0, ${vocabSize})`;
    return null;
  }

  /** True while some resident item is mid-iteration (its token or prompt not yet done). */
  private midIteration(): boolean {
    for (const s of this.slots) if (s && s.state !== 'parked') return true;
    return false;
  }

  private admitAndRelease(): void {
    if (this.scheduler === 'depthwise') {
      this.admit();
      return;
    }
    // A static batch whose requests are all done stops computing its padding rows.
    if (this.scheduler === 'static' && this.slots.some((s) => s !== null) && this.slots.every((s) => s === null || s.padding)) {
      for (const s of this.slots) if (s) this.release(s);
    }
    if (this.midIteration()) return;
    // An iteration boundary: finished rows leave, parked rows start their next token together.
    if (this.scheduler === 'static') {
      if (this.slots.every((s) => s === null)) {
        this.admit();
        return;
      }
    } else {
      this.admit();
    }
    for (const s of this.slots) {
      if (s && s.state === 'parked') {
        s.state = 'decode';
        s.readySince = this.stepCount;
      }
    }
  }

  private admit(): void {
    for (let slot = 0; slot < this.maxBatch && this.queue.length > 0; slot++) {
      if (this.slots[slot] !== null) continue;
      const { req, submittedAt } = this.queue.shift()!;
      const capacity = Math.min(req.prompt.length + req.maxNewTokens, this.model.cfg.maxPositions);
      this.slots[slot] = {
        req,
        index: this.admitted++,
        slot,
        cache: new ServingKVCache(this.model, capacity),
        state: 'prefill',
        depth: 0,
        position: 0,
        input: -1,
        hidden: null,
        readySince: this.stepCount,
        padding: false,
        tokens: [],
        exitLoops: [],
        perLoop: null,
        rng: req.temperature ? requestRng(req.id, req.seed) : null,
        stop: req.stop && req.stop.length > 0 ? new Set(req.stop) : null,
        submittedAt,
        firstTokenAt: NaN,
      };
    }
  }

  /** The oldest ready item (ties: lowest slot) and everything that can share its call. */
  private plan(): Plan | null {
    let first: Seq | null = null;
    for (const s of this.slots) {
      if (!s || s.state === 'parked') continue;
      if (!first || s.readySince < first.readySince) first = s;
    }
    if (!first) return null;
    const schedule = this.model.schedule;
    const block = schedule[first.depth];
    const kind = first.state === 'prefill' ? 'prefill' : 'decode';
    const T = kind === 'prefill' ? first.req.prompt.length : 1;
    const items: Seq[] = [];
    let tokens = 0;
    for (const s of this.slots) {
      if (!s || s.state !== first.state || schedule[s.depth] !== block) continue;
      if (kind === 'prefill') {
        if (s.req.prompt.length !== T) continue;
        if (s !== first && tokens + T > this.maxPrefillTokens) continue;
        tokens += T;
      }
      items.push(s);
    }
    return { kind, block, items, T };
  }

  // -------------------------------------------------------------------------------------------
  // One call

  private execute(plan: Plan): void {
    const { items, T, kind } = plan;
    const n = items.length;
    const model = this.model;
    const depths = new Int32Array(n);
    const positions = new Int32Array(n * T);
    for (let i = 0; i < n; i++) {
      const s = items[i];
      depths[i] = s.depth;
      for (let t = 0; t < T; t++) positions[i * T + t] = kind === 'prefill' ? t : s.position;
    }
    const t0 = this.clock();
    const x = this.gatherInput(items, T, positions);
    const ctx: ForwardContext = { depth: depths, positions, batch: n, seq: T };
    const out = model.blocks[plan.block].forward(x, ctx, items.map((s) => s.cache.layers[s.depth]));
    const t1 = this.clock();
    this.timeMs[kind] += t1 - t0;

    if (kind === 'decode') {
      this.decodeCalls++;
      this.decodeRows += n;
      for (const s of items) if (!s.padding) this.usefulRows++;
    } else {
      this.prefillCalls++;
    }

    // Route every row: continue to the next depth, or read logits at a loop end.
    const L = this.layout.depth;
    const cont: number[] = [];
    const heads: HeadRow[] = [];
    // Exit checks a hidden-state policy (a router) decides before any head runs.
    const routed: HeadRow[] = [];
    const router = this.canExit && !this.policy.hindsight && this.policy.exitFromHidden ? this.policy : null;
    for (let i = 0; i < n; i++) {
      const s = items[i];
      this.dropHidden(s);
      s.depth++;
      // Served items go to the back of the line: nothing waits more than maxBatch - 1 calls.
      s.readySince = this.stepCount + 1;
      if (kind === 'prefill') {
        if (s.depth === L) heads.push({ row: i, loop: this.layout.loops - 1 });
        else cont.push(i);
        continue;
      }
      const loop = this.loopAt[s.depth - 1];
      const last = s.depth === L;
      if (s.padding) {
        if (last) {
          s.position++;
          this.nextItem(s);
        } else {
          cont.push(i);
        }
      } else if (last || (loop >= 0 && (this.canExit || this.policy.hindsight))) {
        (router && !last ? routed : heads).push({ row: i, loop });
      } else {
        cont.push(i);
      }
    }
    if (routed.length > 0) {
      this.route(out, T, routed, heads, cont);
      this.timeMs.head += this.clock() - t1;
    }

    const exited: ExitedToken[] = [];
    if (heads.length > 0) {
      const t2 = this.clock();
      const rows = this.readLogits(out, T, heads);
      this.timeMs.head += this.clock() - t2;
      for (let j = 0; j < heads.length; j++) {
        const { row, loop, exit } = heads[j];
        const s = items[row];
        const logits = rows[j];
        const lastLoop = loop === this.layout.loops - 1;
        if (kind === 'prefill') {
          s.state = 'decode';
          this.emit(s, logits, loop, true);
          continue;
        }
        if (this.policy.hindsight) {
          (s.perLoop ??= []).push(logits);
          if (!lastLoop) {
            cont.push(row);
            continue;
          }
          const would = this.policy.hindsight(s.perLoop);
          s.perLoop = null;
          this.emit(s, logits, would, false);
          continue;
        }
        if (lastLoop) {
          this.emit(s, logits, loop, false);
        } else if (exit || this.policy.shouldExit(logits, loop, this.layout.loops)) {
          const fill: ExitedToken = { cache: s.cache, exitDepth: s.depth, position: s.position, row };
          this.emit(s, logits, loop, false);
          // A request that just finished has no cache left to fill.
          if (this.slots[s.slot] === s) exited.push(fill);
        } else {
          cont.push(row);
        }
      }
    }

    if (exited.length > 0) {
      const hid = reshape(out, [n * T, model.cfg.hiddenSize]);
      const rows = exited.map((e) => e.row);
      // fillExitedKV reads rows by index; give it just the exited rows, renumbered.
      const sub = concatRows(hid, rows);
      const t3 = this.clock();
      this.kvFilled += fillExitedKV(model, this.kvFill, sub, exited.map((e, j) => ({ ...e, row: j })));
      this.timeMs.kvFill += this.clock() - t3;
    }

    if (cont.length > 0) {
      const shared = new SharedHidden(out.keep());
      cont.sort((a, b) => a - b);
      for (const i of cont) {
        items[i].hidden = { src: shared, row: i };
        shared.refs++;
      }
    }
  }

  /** The rows' inputs [n, T, D]: embeddings for items at depth 0, else their kept hidden states. */
  private gatherInput(items: Seq[], T: number, positions: Int32Array): Tensor {
    const n = items.length;
    const D = this.model.cfg.hiddenSize;
    const fresh: number[] = [];
    for (let i = 0; i < n; i++) if (items[i].depth === 0) fresh.push(i);
    let embedded: Tensor | null = null;
    if (fresh.length > 0) {
      const ids = new Int32Array(fresh.length * T);
      const pos = new Int32Array(fresh.length * T);
      fresh.forEach((i, j) => {
        const s = items[i];
        for (let t = 0; t < T; t++) {
          ids[j * T + t] = s.state === 'prefill' ? s.req.prompt[t] : s.input;
          pos[j * T + t] = positions[i * T + t];
        }
      });
      embedded = this.model.embedTokens(ids, fresh.length, T, pos);
      if (fresh.length === n) return embedded;
    }
    // Consecutive rows of one source become one slice; a call that continues exactly the
    // previous call's rows reuses its output as is.
    const parts: Tensor[] = [];
    let i = 0, e = 0;
    while (i < n) {
      const s = items[i];
      if (s.depth === 0) {
        let len = 1;
        while (i + len < n && items[i + len].depth === 0) len++;
        parts.push(len === embedded!.shape[0] ? embedded! : narrow(embedded!, 0, e, len));
        e += len;
        i += len;
        continue;
      }
      const ref = s.hidden!;
      let len = 1;
      while (i + len < n && items[i + len].hidden?.src === ref.src && items[i + len].hidden!.row === ref.row + len) len++;
      parts.push(len === ref.src.t.shape[0] ? ref.src.t : narrow(ref.src.t, 0, ref.row, len));
      i += len;
    }
    const x = parts.length === 1 ? parts[0] : concat(parts, 0);
    if (x.shape[0] !== n || x.shape[1] !== T || x.shape[2] !== D) throw new RrtError(`ServingEngine: internal error, input [${x.shape}] for ${n} rows of ${T} tokens`);
    return x;
  }

  /**
   * Asks the hidden-state policy about the routed rows (grouped by loop): rows that leave go to
   * heads marked exit, the others continue.
   */
  private route(out: Tensor, T: number, routed: HeadRow[], heads: HeadRow[], cont: number[]): void {
    const flat = this.lastTokens(out, T);
    const byLoop = new Map<number, HeadRow[]>();
    for (const r of routed) {
      let g = byLoop.get(r.loop);
      if (!g) byLoop.set(r.loop, (g = []));
      g.push(r);
    }
    for (const [loop, group] of byLoop) {
      const normed = this.model.norm.forward(concatRows(flat, group.map((r) => r.row)));
      const flags = this.policy.exitFromHidden!(normed, loop, this.layout.loops);
      if (flags.length !== group.length) throw new RrtError(`exit policy ${this.policy.name}: exitFromHidden returned ${flags.length} flags for ${group.length} rows`);
      group.forEach((r, k) => (flags[k] ? heads.push({ row: r.row, loop, exit: true }) : cont.push(r.row)));
    }
  }

  /** The last token's hidden state of each row: out [n, T, D] -> [n, D]. */
  private lastTokens(out: Tensor, T: number): Tensor {
    const last = T === 1 ? out : narrow(out, 1, T - 1, 1);
    return reshape(last, [out.shape[0], this.model.cfg.hiddenSize]);
  }

  /** Logits of the requested rows (the last token of each), grouped by loop; host rows [V]. */
  private readLogits(out: Tensor, T: number, heads: HeadRow[]): Float32Array[] {
    const V = this.model.cfg.vocabSize;
    const flat = this.lastTokens(out, T);
    const result = new Array<Float32Array>(heads.length);
    // Without adapters every exit uses the same head: one call for all rows.
    const groups = new Map<number, number[]>();
    heads.forEach((h, j) => {
      const key = this.adapters ? h.loop : 0;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = []));
      g.push(j);
    });
    for (const [loop, js] of groups) {
      const h = concatRows(flat, js.map((j) => heads[j].row));
      const logits = exitLogits(this.model, h, loop, { adapters: this.adapters }).dataSync();
      this.headRows += js.length;
      js.forEach((j, k) => (result[j] = logits.subarray(k * V, (k + 1) * V)));
    }
    return result;
  }

  // -------------------------------------------------------------------------------------------
  // Tokens and lifetimes

  /**
   * Picks the token, records the exit, and moves the request on: to its next token (fed at the
   * next position), or finished (kept as a padding row in a padded static batch).
   */
  private emit(s: Seq, logits: Float32Array, exitLoop: number, fromPrefill: boolean): void {
    const token = sampleToken(logits, s.req.temperature, s.req.topK, s.rng);
    const now = this.clock();
    s.tokens.push(token);
    s.exitLoops.push(exitLoop);
    if (s.tokens.length === 1) s.firstTokenAt = now;
    this.tokens++;
    this.exitsPerLoop[exitLoop]++;
    this.loopsRun += fromPrefill || this.policy.hindsight ? this.layout.loops : exitLoop + 1;
    this.onToken?.(s.req.id, token, exitLoop);
    let reason: FinishReason | null = null;
    if (s.stop?.has(token)) reason = 'stop';
    else if (s.tokens.length >= s.req.maxNewTokens) reason = 'length';
    // Feeding token n (0-based) needs position prompt + n - 1 < context.
    else if (s.req.prompt.length + s.tokens.length > this.model.cfg.maxPositions) reason = 'context';
    if (reason) {
      this.finish(s, reason);
      if (this.scheduler !== 'static' || !this.staticPadding) {
        this.release(s);
        return;
      }
      s.padding = true;
    }
    s.input = token;
    s.position = fromPrefill ? s.req.prompt.length : s.position + 1;
    this.nextItem(s);
  }

  /** The request's next token becomes ready: now (depthwise) or at the iteration boundary. */
  private nextItem(s: Seq): void {
    s.depth = 0;
    s.readySince = this.stepCount + 1;
    s.state = this.scheduler === 'depthwise' ? 'decode' : 'parked';
    // A padding row stops once its cache reaches the context.
    if (s.padding && s.position >= this.model.cfg.maxPositions) this.release(s);
  }

  private finish(s: Seq, reason: FinishReason): void {
    const now = this.clock();
    this.record({
      id: s.req.id,
      tokens: s.tokens,
      finishReason: reason,
      exitLoops: s.exitLoops,
      submittedAt: s.submittedAt,
      firstTokenAt: s.firstTokenAt,
      finishedAt: now,
      latencyMs: now - s.submittedAt,
    });
  }

  private record(r: GenerationResult): void {
    this.results.set(r.id, r);
    this.onFinish?.(r);
  }

  /** Frees a request's slot, cache and hidden state. */
  private release(s: Seq): void {
    this.dropHidden(s);
    s.cache.dispose();
    if (this.slots[s.slot] === s) this.slots[s.slot] = null;
  }

  private dropHidden(s: Seq): void {
    const h = s.hidden;
    if (!h) return;
    s.hidden = null;
    if (--h.src.refs === 0) h.src.t.dispose();
  }

  private traceItems(plan: Plan): TraceStep['items'] {
    return plan.items.map((s) => ({
      request: s.index,
      token: plan.kind === 'prefill' ? -1 : s.tokens.length,
      depth: this.loopOfDepth(s.depth),
      slot: s.slot,
    }));
  }

  private loopOfDepth(d: number): number {
    let b = 0;
    while (this.layout.ends[b] <= d) b++;
    return b;
  }
}

/** Rows of x [N, ...] in the given order, as one tensor (runs of consecutive rows are sliced once). */
/** A row whose logits are read at a loop end; exit: a hidden-state policy already chose to stop it. */
interface HeadRow {
  row: number;
  loop: number;
  exit?: boolean;
}

function concatRows(x: Tensor, rows: readonly number[]): Tensor {
  const parts: Tensor[] = [];
  let i = 0;
  while (i < rows.length) {
    let len = 1;
    while (i + len < rows.length && rows[i + len] === rows[i] + len) len++;
    parts.push(len === x.shape[0] ? x : narrow(x, 0, rows[i], len));
    i += len;
  }
  return parts.length === 1 ? parts[0] : concat(parts, 0);
}

function meanOf(xs: number[]): number {
  return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)];
}
