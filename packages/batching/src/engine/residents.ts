// The engine's queue and resident set: who waits, who holds a slot and what it owns (KV cache,
// kept hidden states, K/V still owed to its cache), and which items share the next call.

import type { Generator, Tensor } from '@rrt/tensor';
import type { CausalLM } from '@rrt/layers';
import { ServingKVCache } from '../kv-fill.js';
import { requestRng } from '../sampling.js';
import type { Scheduler } from '../scheduler.js';
import type { GenerationRequest } from './request.js';

/** A call's output, kept while items continue from it or fills still read it. */
export class SharedHidden {
  private refs = 0;
  constructor(readonly t: Tensor) {}

  /** A reference to one row; the tensor is freed when the last reference is dropped. */
  ref(row: number): HiddenRef {
    this.refs++;
    return { src: this, row };
  }

  release(): void {
    if (--this.refs === 0) this.t.dispose();
  }
}

export interface HiddenRef {
  src: SharedHidden;
  /** First row of src [rows, 1, D] that is the item's (a prompt spans one row per token). */
  row: number;
}

/**
 * K/V entries an exited token still owes its cache: the input of each missing depth (the exit
 * state, or a state predictor's estimate), written by the next decode call of that depth's
 * block (CacheWrites) before any later token of the request reaches it.
 */
export interface PendingFill {
  position: number;
  depths: number[];
  inputs: HiddenRef[];
}

export type SeqState = 'prefill' | 'decode' | 'parked';

/** A resident request. It always owns exactly one work item: its prompt or its current token. */
export interface Seq {
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
  /** Oldest first, in token order. */
  pendingFills: PendingFill[];
  /** Step at which the current item became ready (oldest first). */
  readySince: number;
  /** Finished, still computing as a padding row of a padded batch. */
  padding: boolean;
  tokens: number[];
  exitLoops: number[];
  perLoop: Float32Array[] | null;
  rng: Generator | null;
  stop: Set<number> | null;
  submittedAt: number;
  firstTokenAt: number;
}

/**
 * One call: items whose next depth runs the same block. A decode item is one token; a prefill
 * item is its whole prompt, and prompts of any lengths share the call packed. kind: what the
 * items are ('mixed': prompts joined decode items, see Residents.plan).
 */
export interface Plan {
  kind: 'prefill' | 'decode' | 'mixed';
  block: number;
  items: Seq[];
}

/** Tokens item `s` computes in its next call: its prompt (prefill) or one. */
export function tokensOf(s: Seq): number {
  return s.state === 'prefill' ? s.req.prompt.length : 1;
}

export interface Waiting {
  req: GenerationRequest;
  submittedAt: number;
}

export class Residents {
  readonly queue: Waiting[] = [];
  readonly slots: (Seq | null)[];
  private admitted = 0;

  /** mixPrefill: prompts may join decode calls (plan()). */
  constructor(private readonly model: CausalLM, readonly maxBatch: number, private readonly maxPrefillTokens: number, private readonly mixPrefill: boolean) {
    this.slots = new Array<Seq | null>(maxBatch).fill(null);
  }

  /** Resident requests, by slot. */
  *[Symbol.iterator](): IterableIterator<Seq> {
    for (const s of this.slots) if (s) yield s;
  }

  get count(): number {
    let n = 0;
    for (const s of this.slots) if (s) n++;
    return n;
  }

  /** True while some resident item is mid-iteration (its token or prompt not yet done). */
  midIteration(): boolean {
    for (const s of this) if (s.state !== 'parked') return true;
    return false;
  }

  /**
   * What the scheduler does before a call: a padded batch whose requests are all done stops
   * computing its padding rows; queued requests take free slots when the scheduler admits
   * them; at an iteration boundary parked requests start their next token together.
   */
  prepare(scheduler: Scheduler, step: number): void {
    const all = [...this];
    if (all.length > 0 && all.every((s) => s.padding)) for (const s of all) this.release(s);
    const boundary = !this.midIteration();
    if (this.queue.length > 0 && scheduler.admits(this.count, boundary)) this.admit(step);
    if (!boundary) return;
    for (const s of this) {
      if (s.state === 'parked') {
        s.state = 'decode';
        s.readySince = step;
      }
    }
  }

  /** Fills free slots (lowest first) from the queue, in order. */
  private admit(step: number): void {
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
        pendingFills: [],
        readySince: step,
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

  /**
   * The oldest ready item (ties: lowest slot) and every ready item whose next depth runs the same
   * block: of its kind only, or with mixPrefill of both kinds (prompts then cost no calls of their
   * own); prompts up to maxPrefillTokens tokens in all. Items come in depth order.
   */
  plan(): Plan | null {
    let first: Seq | null = null;
    for (const s of this) {
      if (s.state === 'parked') continue;
      if (!first || s.readySince < first.readySince) first = s;
    }
    if (!first) return null;
    const schedule = this.model.schedule;
    const block = schedule[first.depth];
    const items: Seq[] = [];
    let tokens = first.state === 'prefill' ? first.req.prompt.length : 0;
    let prompts = 0;
    for (const s of this) {
      if (s.state === 'parked' || schedule[s.depth] !== block) continue;
      if (s.state !== first.state && !this.mixPrefill) continue;
      if (s.state === 'prefill') {
        if (s !== first) {
          if (tokens + s.req.prompt.length > this.maxPrefillTokens) continue;
          tokens += s.req.prompt.length;
        }
        prompts++;
      }
      items.push(s);
    }
    // In depth order (slot order within a depth): a relaxed model's per-depth weights then each
    // take one run of consecutive rows.
    items.sort((a, b) => a.depth - b.depth);
    const kind = prompts === items.length ? 'prefill' : prompts === 0 ? 'decode' : 'mixed';
    return { kind, block, items };
  }

  /** Frees a request's slot, cache, kept hidden state and owed fills. */
  release(s: Seq): void {
    this.dropHidden(s);
    for (const p of s.pendingFills) for (const h of p.inputs) h.src.release();
    s.pendingFills = [];
    s.cache.dispose();
    if (this.slots[s.slot] === s) this.slots[s.slot] = null;
  }

  dropHidden(s: Seq): void {
    const h = s.hidden;
    if (!h) return;
    s.hidden = null;
    h.src.release();
  }
}
