// The serving engine: a stream of generation requests on one (recursive) model, scheduled by
// continuous depth-wise batching or by the two baselines, all through the same step loop.
//
// A resident request always owns exactly one work item: its prompt (prefill, T tokens) or its
// current token (decode, 1 token), at some depth position. One step = one batched call of one
// block: the scheduler picks the oldest ready item, then every ready item whose next depth runs
// the same block joins the call (rows at different depth positions share it: ctx.depth holds
// each row's depth for per-depth hooks such as depth-wise LoRA, and each row appends to its own
// depth's cache). Prompts of any lengths share the call with the decode tokens, packed one row
// per token with each prompt attending to its own cache (a prefill never exits early: later
// tokens need its K/V at every depth).
//
// Schedulers (scheduler.ts) differ only in when items are allowed to be ready: when queued
// requests are admitted, and whether a finished token's request starts its next token at once
// (depthwise) or at the iteration boundary (sequence, static; static also pads its batch).
//
// The rooms: residents.ts holds the queue, the slots and the plan of the next call; call.ts
// runs one call and reads logits; stats.ts counts. This file routes rows after a call (continue,
// exit, finish) and owns the requests' lifetimes.

import { type PackedWeights, RrtError, type Tensor, noGrad, packWeights, reshape, tidy } from '@rrt/tensor';
import type { CausalLM } from '@rrt/layers';
import { type ExitHeadAdapters, resolveLayout } from '../exits.js';
import { type ExitedToken, type KvFill, checkKvFill, fillExitedKV, kvFillName } from '../kv-fill.js';
import { type LoopLayout, type LoopLayoutOptions, loopEndingAt } from '../loops.js';
import { type ExitPolicy, neverExit } from '../policies.js';
import { sampleToken } from '../sampling.js';
import { type ScheduleTrace, type Scheduler, type SchedulerKind, type TraceStep, resolveScheduler } from '../scheduler.js';
import { StatePredictor } from '../state-predictor.js';
import { type HeadRow, concatRows, lastTokens, readLogits, runBlock } from './call.js';
import { type FinishReason, type GenerationRequest, type GenerationResult, requestProblem } from './request.js';
import { type HiddenRef, type Plan, Residents, type Seq, SharedHidden } from './residents.js';
import { EngineCounters, type EngineStats } from './stats.js';

export interface ServingEngineOptions {
  /** 'static', 'sequence', 'depthwise' (default) or your own Scheduler. */
  scheduler?: SchedulerKind | Scheduler;
  /** Most resident requests, hence most rows in one call (default 16). */
  maxBatch?: number;
  /** Early-exit rule (default never). Static and sequence-wise honour it too: an exited row sits out the rest of its iteration. */
  exitPolicy?: ExitPolicy;
  /** How exited tokens' missing K/V are filled: a mode or a fitted StatePredictor (default 'propagate'). */
  kvFill?: KvFill;
  /**
   * Write the K/V that 'propagate' and predictor fills compute inside the next decode call of
   * each missing depth's block, sharing its projection, instead of in calls of their own right
   * after the exit (default true; the entries are the same).
   */
  foldKvFill?: boolean;
  layout?: LoopLayout | LoopLayoutOptions;
  adapters?: ExitHeadAdapters;
  /** Most prompt tokens in one call (default 2048): prompts of any lengths share calls up to it. */
  maxPrefillTokens?: number;
  /**
   * Prompts join the decode calls of the same block (one call computes both, each prompt
   * attending to its own cache), instead of waiting for calls of their own (default true).
   * The tokens are the same either way.
   */
  mixPrefill?: boolean;
  /**
   * Keep the model's weight matrices (and the adapters') in the matmul kernel's packed form
   * while the engine lives, so calls of more than a few rows skip packing them (default true;
   * the cpu backend holds a second copy of each matrix until dispose(); the tokens are the
   * same). Training the model meanwhile drops the packed forms (the optimizer writes the weights).
   */
  packWeights?: boolean;
  /** A padding scheduler (static) keeps finished rows computing until the whole batch is done (default true). */
  staticPadding?: boolean;
  /** Milliseconds; default performance.now. */
  clock?: () => number;
  /** Keep a trace of the first N calls (true = all), for scheduleToSvg and tests. */
  trace?: boolean | number;
  onToken?: (id: string | number, token: number, exitLoop: number) => void;
  onFinish?: (result: GenerationResult) => void;
}

/** Releases the packed weights of an engine dropped without dispose() (a safety net). */
const unreleasedPacks = new FinalizationRegistry<PackedWeights>((p) => p.release());

/** A token that exited at a loop end before the last: its K/V at depths exitDepth.. are missing. */
interface Exit {
  seq: Seq;
  exitDepth: number;
  position: number;
  /** Its token row in the call's output (an item's index differs where prompts share the call). */
  row: number;
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
  readonly scheduler: Scheduler;
  readonly maxBatch: number;
  readonly policy: ExitPolicy;
  readonly kvFill: KvFill;
  readonly layout: LoopLayout;
  private readonly foldKvFill: boolean;
  private readonly adapters?: ExitHeadAdapters;
  private readonly pads: boolean;
  private readonly clock: () => number;
  private readonly traceLimit: number;
  private readonly onToken?: ServingEngineOptions['onToken'];
  private readonly onFinish?: ServingEngineOptions['onFinish'];
  /** Loop ending after each depth position, or -1. */
  private readonly loopAt: Int32Array;
  private readonly canExit: boolean;

  private readonly residents: Residents;
  private readonly known = new Set<string | number>();
  private readonly results = new Map<string | number, GenerationResult>();
  /** True while a call runs: callbacks that cancel are applied after it. */
  private inStep = false;
  private readonly deferredCancels: (string | number)[] = [];
  private stepCount = 0;
  private readonly traceSteps: TraceStep[] = [];
  private readonly counters: EngineCounters;
  private packed: PackedWeights | null = null;

  constructor(model: CausalLM, opts: ServingEngineOptions = {}) {
    this.model = model;
    this.scheduler = resolveScheduler(opts.scheduler ?? 'depthwise', 'ServingEngine');
    this.maxBatch = opts.maxBatch ?? 16;
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1) throw new RrtError(`ServingEngine: maxBatch must be an integer >= 1, got ${this.maxBatch}`);
    this.policy = opts.exitPolicy ?? neverExit();
    this.kvFill = opts.kvFill ?? 'propagate';
    checkKvFill(model, this.kvFill, 'ServingEngine');
    const computes = this.kvFill === 'propagate' || this.kvFill instanceof StatePredictor;
    this.foldKvFill = (opts.foldKvFill ?? true) && computes;
    this.layout = resolveLayout(model, opts.layout);
    this.adapters = opts.adapters;
    this.pads = this.scheduler.pads && (opts.staticPadding ?? true);
    this.clock = opts.clock ?? (() => performance.now());
    this.traceLimit = opts.trace === true ? Infinity : typeof opts.trace === 'number' ? opts.trace : 0;
    this.onToken = opts.onToken;
    this.onFinish = opts.onFinish;
    this.loopAt = loopEndingAt(this.layout);
    this.canExit = this.layout.loops > 1 && this.policy.name !== 'never';
    this.residents = new Residents(model, this.maxBatch, opts.maxPrefillTokens ?? 2048, opts.mixPrefill ?? true);
    this.counters = new EngineCounters(this.layout.loops);
    if (opts.packWeights ?? true) {
      this.packed = packWeights([...model.parameters(), ...(this.adapters?.parameters() ?? [])]);
      unreleasedPacks.register(this, this.packed, this);
    }
  }

  /**
   * Queues a request; returns its id. A malformed request finishes at once with finishReason
   * 'error' (see result()); only a duplicate id throws, since its result could not be told apart.
   */
  submit(req: GenerationRequest): string | number {
    if (this.known.has(req.id)) throw new RrtError(`ServingEngine: request id ${JSON.stringify(req.id)} is already in use`);
    this.known.add(req.id);
    const now = this.clock();
    const problem = requestProblem(this.model.cfg, req);
    if (problem) {
      this.record({ id: req.id, tokens: [], finishReason: 'error', error: problem, exitLoops: [], submittedAt: now, firstTokenAt: NaN, finishedAt: now, latencyMs: 0 });
    } else {
      this.residents.queue.push({ req, submittedAt: now });
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
    const queue = this.residents.queue;
    const q = queue.findIndex((w) => w.req.id === id);
    if (q >= 0) {
      const [w] = queue.splice(q, 1);
      const now = this.clock();
      this.record({ id, tokens: [], finishReason: 'cancelled', exitLoops: [], submittedAt: w.submittedAt, firstTokenAt: NaN, finishedAt: now, latencyMs: now - w.submittedAt });
      return true;
    }
    const seq = [...this.residents].find((s) => s.req.id === id);
    if (!seq) return false;
    if (seq.padding) {
      this.residents.release(seq);
      return false;
    }
    this.finish(seq, 'cancelled');
    this.residents.release(seq);
    return true;
  }

  /** The result of a finished request, else undefined. */
  result(id: string | number): GenerationResult | undefined {
    return this.results.get(id);
  }

  /** Requests waiting for a slot. */
  get pending(): number {
    return this.residents.queue.length;
  }

  /** Requests holding a slot (padding rows of a static batch included). */
  get resident(): number {
    return this.residents.count;
  }

  /** True when nothing is queued or running. */
  get idle(): boolean {
    return this.pending === 0 && this.resident === 0;
  }

  /** Bytes held by the KV caches of resident requests. */
  kvBytes(): number {
    let b = 0;
    for (const s of this.residents) b += s.cache.bytes;
    return b;
  }

  /** Calls run so far. */
  get steps(): number {
    return this.stepCount;
  }

  /**
   * Runs one batched call (admitting requests first). Returns false when there was nothing to
   * do. Everything a call creates is freed before it returns, except the hidden states that
   * continue to the next call, the inputs of owed K/V fills, and the KV caches.
   */
  step(): boolean {
    const t0 = this.clock();
    this.residents.prepare(this.scheduler, this.stepCount);
    const plan = this.residents.plan();
    if (!plan) {
      this.counters.busyMs += this.clock() - t0;
      if (this.pending > 0) throw new RrtError(`ServingEngine: scheduler '${this.scheduler.name}' admitted nothing into an empty engine with ${this.pending} requests queued`);
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
    this.counters.busyMs += t1 - t0;
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
    return this.counters.summary(this.results.values(), {
      scheduler: this.scheduler.name,
      policy: this.policy.name,
      kvFill: kvFillName(this.kvFill),
      loops: this.layout.loops,
      maxBatch: this.maxBatch,
      steps: this.stepCount,
    });
  }

  /** The calls traced so far, in the simulator's format (depth = loop index), for scheduleToSvg. */
  trace(): ScheduleTrace {
    return {
      scheduler: this.scheduler.name,
      loops: this.layout.loops,
      maxBatch: this.maxBatch,
      steps: this.traceSteps,
      totalSteps: this.stepCount,
      truncated: this.stepCount > this.traceSteps.length,
    };
  }

  /** Frees every resident request's cache and hidden state; queued requests are dropped. */
  dispose(): void {
    for (const s of [...this.residents]) this.residents.release(s);
    this.residents.queue.length = 0;
    if (this.packed) {
      this.packed.release();
      unreleasedPacks.unregister(this);
      this.packed = null;
    }
  }

  // -------------------------------------------------------------------------------------------
  // One call, and where each row goes next

  private execute(plan: Plan): void {
    const { items, kind } = plan;
    const n = items.length;
    const c = this.counters;
    // Which items are prompts (routing changes their state).
    const prompt = items.map((s) => s.state === 'prefill');
    const t0 = this.clock();
    const call = runBlock(this.model, plan, this.residents, this.foldKvFill);
    const { out, starts, written } = call;
    // The last token's hidden state of each item, [n, D], when a router or a head reads it.
    let last: Tensor | null = null;
    const lastOf = (): Tensor => (last ??= lastTokens(this.model, call));
    c.kvFilled += written;
    c.kvFolded += written;
    const t1 = this.clock();
    for (let i = 0; i < n; i++) if (prompt[i]) c.promptRows += starts[i + 1] - starts[i];
    if (kind === 'prefill') {
      c.timeMs.prefill += t1 - t0;
      c.prefillCalls++;
    } else {
      c.timeMs.decode += t1 - t0;
      c.decodeCalls++;
      if (kind === 'mixed') c.mixedCalls++;
      for (let i = 0; i < n; i++) {
        if (prompt[i]) continue;
        c.decodeRows++;
        if (!items[i].padding) c.usefulRows++;
      }
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
      this.residents.dropHidden(s);
      s.depth++;
      // Served items go to the back of the line: nothing waits more than maxBatch - 1 calls.
      s.readySince = this.stepCount + 1;
      if (prompt[i]) {
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
      this.route(lastOf(), routed, heads, cont);
      c.timeMs.head += this.clock() - t1;
    }

    const exits: Exit[] = [];
    if (heads.length > 0) {
      const t2 = this.clock();
      const rows = readLogits(this.model, this.adapters, lastOf(), heads);
      c.headRows += heads.length;
      c.timeMs.head += this.clock() - t2;
      for (let j = 0; j < heads.length; j++) {
        const { row, loop, exit } = heads[j];
        const s = items[row];
        const logits = rows[j];
        const lastLoop = loop === this.layout.loops - 1;
        if (prompt[row]) {
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
          const exit: Exit = { seq: s, exitDepth: s.depth, position: s.position, row: starts[row] };
          this.emit(s, logits, loop, false);
          // A request that just finished has no cache left to fill.
          if (this.residents.slots[s.slot] === s) exits.push(exit);
        } else {
          cont.push(row);
        }
      }
    }

    let kept: SharedHidden | null = null;
    const keep = (): SharedHidden => (kept ??= new SharedHidden(out.keep()));
    if (exits.length > 0) {
      const t3 = this.clock();
      if (this.foldKvFill) this.oweFills(out, exits, keep);
      else this.fillNow(out, exits);
      c.timeMs.kvFill += this.clock() - t3;
    }
    if (cont.length > 0) {
      cont.sort((a, b) => a - b);
      for (const i of cont) items[i].hidden = keep().ref(starts[i]);
    }
  }

  /** Fills the exited tokens' missing K/V now, in calls of their own. */
  private fillNow(out: Tensor, exits: Exit[]): void {
    // fillExitedKV gathers the rows it projects (the copy modes read none).
    const tokens: ExitedToken[] = exits.map((e) => ({ cache: e.seq.cache, exitDepth: e.exitDepth, position: e.position, row: e.row }));
    this.counters.kvFilled += fillExitedKV(this.model, this.kvFill, out, tokens);
  }

  /**
   * Records the K/V each exited token owes at its missing depths, for later decode calls of
   * those depths' blocks to write: the input of depth l is the exit state (propagate) or, past
   * the exit depth, the state predictor's estimate of it (computed now, one product per exit
   * depth and missing depth).
   */
  private oweFills(out: Tensor, exits: Exit[], keep: () => SharedHidden): void {
    const L = this.model.depth;
    const predictor = this.kvFill instanceof StatePredictor ? this.kvFill : null;
    const byExit = new Map<number, Exit[]>();
    for (const e of exits) {
      const g = byExit.get(e.exitDepth);
      if (g) g.push(e);
      else byExit.set(e.exitDepth, [e]);
    }
    for (const [e, group] of byExit) {
      // estimates[l - e - 1]: the estimated inputs of depth l, one row per exit of the group.
      const estimates: SharedHidden[] = [];
      if (predictor) {
        const h = concatRows(reshape(out, [out.shape[0], this.model.cfg.hiddenSize]), group.map((x) => x.row));
        for (let l = e + 1; l < L; l++) estimates.push(new SharedHidden(predictor.predict(h, e, l).keep()));
      }
      group.forEach((x, k) => {
        const depths: number[] = [];
        const inputs: HiddenRef[] = [];
        for (let l = e; l < L; l++) {
          depths.push(l);
          inputs.push(l === e || !predictor ? keep().ref(x.row) : estimates[l - e - 1].ref(k));
        }
        x.seq.pendingFills.push({ position: x.position, depths, inputs });
      });
    }
  }

  /**
   * Asks the hidden-state policy about the routed rows (grouped by loop; flat: the items' last
   * hidden states [n, D]): rows that leave go to heads marked exit, the others continue.
   */
  private route(flat: Tensor, routed: HeadRow[], heads: HeadRow[], cont: number[]): void {
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

  // -------------------------------------------------------------------------------------------
  // Tokens and lifetimes

  /**
   * Picks the token, records the exit, and moves the request on: to its next token (fed at the
   * next position), or finished (kept as a padding row in a padded batch).
   */
  private emit(s: Seq, logits: Float32Array, exitLoop: number, fromPrefill: boolean): void {
    const c = this.counters;
    const token = sampleToken(logits, s.req.temperature, s.req.topK, s.rng);
    const now = this.clock();
    s.tokens.push(token);
    s.exitLoops.push(exitLoop);
    if (s.tokens.length === 1) s.firstTokenAt = now;
    c.tokens++;
    c.exitsPerLoop[exitLoop]++;
    c.loopsRun += fromPrefill || this.policy.hindsight ? this.layout.loops : exitLoop + 1;
    this.onToken?.(s.req.id, token, exitLoop);
    let reason: FinishReason | null = null;
    if (s.stop?.has(token)) reason = 'stop';
    else if (s.tokens.length >= s.req.maxNewTokens) reason = 'length';
    // Feeding token n (0-based) needs position prompt + n - 1 < context.
    else if (s.req.prompt.length + s.tokens.length > this.model.cfg.maxPositions) reason = 'context';
    if (reason) {
      this.finish(s, reason);
      if (!this.pads) {
        this.residents.release(s);
        return;
      }
      s.padding = true;
    }
    s.input = token;
    s.position = fromPrefill ? s.req.prompt.length : s.position + 1;
    this.nextItem(s);
  }

  /** The request's next token becomes ready: now, or at the iteration boundary. */
  private nextItem(s: Seq): void {
    s.depth = 0;
    s.readySince = this.stepCount + 1;
    s.state = this.scheduler.nextToken === 'now' ? 'decode' : 'parked';
    // A padding row stops once its cache reaches the context.
    if (s.padding && s.position >= this.model.cfg.maxPositions) this.residents.release(s);
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

  private traceItems(plan: Plan): TraceStep['items'] {
    return plan.items.map((s) => ({
      request: s.index,
      token: s.state === 'prefill' ? -1 : s.tokens.length,
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
