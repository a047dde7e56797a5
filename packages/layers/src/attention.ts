// Multi-head attention with grouped-query / multi-query heads, causal masking and a KV cache.

import {
  type Backend, type CacheSegment, RrtError, Tensor, add, affine, appendAttend, causalSoftmax, concat, copyRuns, empty, fromValues, getBackend, matmul,
  narrow, noGrad, permute, reshape, slice, softmax,
} from '@rrt/tensor';
import type { ModelConfig } from './config.js';
import { Module, type ForwardContext } from './module.js';
import { Linear, Rotary, type InitOptions } from './nn.js';
import { parseRopeScaling } from './rope.js';

/**
 * Keys and values of one attention layer for one sequence: [Hkv, capacity, headDim] each,
 * filled up to `length`. Grows by doubling.
 */
export class LayerKVCache {
  length = 0;
  protected k: Tensor | null = null;
  protected v: Tensor | null = null;

  constructor(readonly kvHeads: number, readonly headDim: number, protected capacity = 16) {}

  /** Appends k, v: [Hkv, T, headDim]; returns views of everything cached: [Hkv, length, headDim]. */
  append(k: Tensor, v: Tensor): [Tensor, Tensor] {
    const t = k.shape[1];
    this.reserve(this.length + t, k.backend);
    const region = [this.kvHeads, t, this.headDim];
    const shape = [this.kvHeads, this.capacity, this.headDim];
    const start = [0, this.length, 0];
    noGrad(() => {
      k.backend.kernels.copyRegion(k.storage, k.shape, [0, 0, 0], this.k!.storage, shape, start, region, false);
      k.backend.kernels.copyRegion(v.storage, v.shape, [0, 0, 0], this.v!.storage, shape, start, region, false);
    });
    this.length += t;
    return [this.view(this.k!), this.view(this.v!)];
  }

  /** True unless a subclass overrides append() and keeps its own storage (then only append() writes it). */
  get writesInPlace(): boolean {
    return this.append === LayerKVCache.prototype.append;
  }

  /**
   * Makes room for t more entries and counts them as cached; returns where they go: the cache
   * buffers [Hkv, capacity, headDim], valid up to `length`, and the first new position. The
   * caller writes the entries before anything reads them (appendAttend, appendRows). Only for
   * caches that write in place (writesInPlace). A later claim may move the buffers: take them
   * again with segment() after claiming several times.
   */
  claim(t: number, backend: Backend): CacheSegment {
    if (!this.writesInPlace) throw new RrtError('kv cache: this cache keeps its own storage (it overrides append()); call append()');
    this.reserve(this.length + t, backend);
    this.length += t;
    return this.segment(this.length - t, t);
  }

  /** The buffers and position of entries start..start + tokens - 1 (already counted in `length`). */
  segment(start: number, tokens: number): CacheSegment {
    if (!this.k || !this.v || start < 0 || start + tokens > this.length) throw new RrtError(`kv cache: no entries ${start}..${start + tokens - 1} (holds ${this.length})`);
    return { k: this.k, v: this.v, start, tokens };
  }

  private view(buf: Tensor): Tensor {
    return this.length === this.capacity ? buf.view(buf.shape) : slice(buf, [null, [0, this.length]]);
  }

  protected reserve(n: number, backend: Backend): void {
    if (this.k && n <= this.capacity) return;
    let cap = Math.max(this.capacity, 1);
    while (cap < n) cap *= 2;
    const k = empty([this.kvHeads, cap, this.headDim], backend).keep();
    const v = empty([this.kvHeads, cap, this.headDim], backend).keep();
    if (this.k && this.v && this.length > 0) {
      const region = [this.kvHeads, this.length, this.headDim];
      const oldShape = [this.kvHeads, this.capacity, this.headDim], newShape = [this.kvHeads, cap, this.headDim];
      backend.kernels.copyRegion(this.k.storage, oldShape, [0, 0, 0], k.storage, newShape, [0, 0, 0], region, false);
      backend.kernels.copyRegion(this.v.storage, oldShape, [0, 0, 0], v.storage, newShape, [0, 0, 0], region, false);
    }
    this.k?.dispose();
    this.v?.dispose();
    this.k = k;
    this.v = v;
    this.capacity = cap;
  }

  /** Drops the last n entries (speculative or cancelled work). */
  truncate(length: number): void {
    if (length < 0 || length > this.length) throw new RrtError(`kv cache: cannot truncate to ${length} (holds ${this.length})`);
    this.length = length;
  }

  /** Bytes held on the backend. */
  get bytes(): number {
    return this.k ? 2 * this.k.size * 4 : 0;
  }

  dispose(): void {
    this.k?.dispose();
    this.v?.dispose();
    this.k = this.v = null;
    this.length = 0;
  }
}

/** How the checkpoint stores the q, k, v projections. */
export type QkvLayout = 'separate' | 'fused' | 'fused-per-head';

export class Attention extends Module {
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly layout: QkvLayout;
  /** Separate projections (llama, gemma) ... */
  q?: Linear;
  k?: Linear;
  v?: Linear;
  /** ... or one fused projection: [q | k | v] (gpt2 c_attn) or per head [h: q k v] (gpt_neox). */
  qkv?: Linear;
  o: Linear;
  rotary: Rotary | null;

  constructor(cfg: ModelConfig, opts: InitOptions = {}) {
    super();
    this.numHeads = cfg.numHeads;
    this.numKvHeads = cfg.numKvHeads;
    this.headDim = cfg.headDim;
    this.layout = cfg.family === 'gpt2' ? 'fused' : cfg.family === 'gpt_neox' ? 'fused-per-head' : 'separate';
    const d = cfg.hiddenSize, qOut = cfg.numHeads * cfg.headDim, kvOut = cfg.numKvHeads * cfg.headDim;
    if (this.layout === 'separate') {
      this.q = this.child('q', new Linear(d, qOut, { ...opts, bias: cfg.qkvBias }));
      this.k = this.child('k', new Linear(d, kvOut, { ...opts, bias: cfg.qkvBias }));
      this.v = this.child('v', new Linear(d, kvOut, { ...opts, bias: cfg.qkvBias }));
    } else {
      this.qkv = this.child('qkv', new Linear(d, qOut + 2 * kvOut, { ...opts, bias: cfg.qkvBias }));
    }
    this.o = this.child('o', new Linear(qOut, d, { ...opts, bias: cfg.attentionBias }));
    const rotaryDim = cfg.positions === 'rope' ? Math.floor(cfg.headDim * cfg.rotaryPct) : 0;
    this.rotary = rotaryDim > 0 ? new Rotary(cfg.headDim, rotaryDim, cfg.ropeTheta, cfg.maxPositions, opts.backend ?? getBackend(), parseRopeScaling(cfg.ropeScaling, cfg.maxPositions, 'rope_scaling')) : null;
  }

  /**
   * x [N, D] -> q [Nq, H, hd], k, v [N, Hkv, hd]: queries of the first Nq rows only (the rest
   * are cache writes), which the q projection sees with its own context qCtx.
   */
  private project(x: Tensor, ctx: ForwardContext, nq = x.shape[0], qCtx = ctx): [Tensor, Tensor, Tensor] {
    const n = x.shape[0], H = this.numHeads, KV = this.numKvHeads, hd = this.headDim;
    if (this.layout === 'separate') {
      return [
        reshape(this.q!.forward(nq === n ? x : narrow(x, 0, 0, nq), qCtx), [nq, H, hd]),
        reshape(this.k!.forward(x, ctx), [n, KV, hd]),
        reshape(this.v!.forward(x, ctx), [n, KV, hd]),
      ];
    }
    const fused = this.qkv!.forward(x, ctx);
    const queries = nq === n ? fused : narrow(fused, 0, 0, nq);
    if (this.layout === 'fused') {
      return [
        reshape(narrow(queries, 1, 0, H * hd), [nq, H, hd]),
        reshape(narrow(fused, 1, H * hd, KV * hd), [n, KV, hd]),
        reshape(narrow(fused, 1, (H + KV) * hd, KV * hd), [n, KV, hd]),
      ];
    }
    // GPT-NeoX: the output axis is laid out [heads, 3, hd].
    const head = (t: Tensor, rows: number, i: number): Tensor => reshape(narrow(reshape(t, [rows, H, 3, hd]), 2, i, 1), [rows, H, hd]);
    return [head(queries, nq, 0), head(fused, n, 1), head(fused, n, 2)];
  }

  /**
   * x: [B, T, D] -> [B, T, D]. Without caches: causal self-attention over the T tokens. With
   * caches (one per batch row), each row's new keys/values are appended to its cache and its
   * queries attend to everything cached (rows may have different cache lengths).
   */
  forward(x: Tensor, ctx: ForwardContext, caches?: LayerKVCache[], writes?: CacheWrites): Tensor {
    const [B, T, D] = x.shape;
    const H = this.numHeads, KV = this.numKvHeads, hd = this.headDim;
    const F = writes ? writes.x.shape[0] : 0;
    let q: Tensor, k: Tensor, v: Tensor;
    let kvPositions = ctx.positions;
    if (F === 0) {
      [q, k, v] = this.project(reshape(x, [B * T, D]), ctx);
    } else {
      if (!caches || T !== 1) throw new RrtError('attention: cache writes fold only into a one-token call with caches');
      checkCacheWrites(writes!, D);
      // One projection for the call's rows and the written rows, each at its own depth and position.
      kvPositions = joinInts(ctx.positions, writes!.positions);
      const joined: ForwardContext = { depth: joinDepths(ctx.depth, B, writes!.depth), positions: kvPositions, batch: B + F, seq: 1 };
      [q, k, v] = this.project(concat([reshape(x, [B, D]), writes!.x], 0), joined, B, ctx);
    }
    if (this.rotary) {
      q = this.rotary.apply(q, ctx.positions);
      k = this.rotary.apply(k, kvPositions);
    }
    if (F > 0) {
      // Written rows reach their caches before any query reads them.
      const k3 = reshape(k, [B + F, KV, hd]), v3 = reshape(v, [B + F, KV, hd]);
      appendRows(k3, v3, B, writes!.caches);
      // The call's own rows: rows 0..B-1 of k, v [B + F, KV, hd].
      k = narrow(k, 0, 0, B);
      v = narrow(v, 0, 0, B);
    }
    if (caches) {
      // Sequences continuing their caches: packed segments, or B rows of T tokens each.
      if (ctx.segments && T !== 1) throw new RrtError('attention: packed segments need one-token rows [B, 1, D]');
      return reshape(this.o.forward(this.attendSegments(q, k, v, caches, ctx.segments ?? new Int32Array(B).fill(T)), ctx), [B, T, D]);
    }
    if (ctx.segments) throw new RrtError('attention: packed segments need one cache per segment');
    const G = H / KV;
    // Query heads grouped by their KV head: [B, KV, G*T, hd] (query head h uses KV head h / G).
    const qg = reshape(permute(reshape(q, [B, T, KV, G, hd]), [0, 2, 3, 1, 4]), [B, KV, G * T, hd]);
    const kt = permute(reshape(k, [B, T, KV, hd]), [0, 2, 1, 3]);
    const vt = permute(reshape(v, [B, T, KV, hd]), [0, 2, 1, 3]);
    // Scale, causal mask and softmax in one op: query row g*T + t sees keys 0..t.
    const out = matmul(causalSoftmax(matmul(qg, kt, { transB: true }), { scale: 1 / Math.sqrt(hd), period: T }), vt);
    // [B, KV, G, T, hd] -> [B, T, KV*G*hd]
    const merged = reshape(permute(reshape(out, [B, KV, G, T, hd]), [0, 3, 1, 2, 4]), [B * T, H * hd]);
    return reshape(this.o.forward(merged, ctx), [B, T, D]);
  }

  /**
   * Sequences continuing their caches: q [S, H, hd], k, v [S, KV, hd] for S tokens in segments of
   * segments[i] tokens (packed prompts, decode rows of one token, or both), segment i continuing
   * caches[i]. Each segment's keys and values are appended to its cache and its queries attend
   * causally to it; returns [S, H * hd].
   */
  private attendSegments(q: Tensor, k: Tensor, v: Tensor, caches: LayerKVCache[], segments: Int32Array): Tensor {
    const H = this.numHeads, KV = this.numKvHeads, hd = this.headDim, G = H / KV;
    const S = q.shape[0];
    if (caches.length !== segments.length) throw new RrtError(`attention: ${caches.length} caches for ${segments.length} ${segments.length === 1 ? 'sequence' : 'sequences'}`);
    let total = 0;
    for (const len of segments) total += len;
    if (total !== S) throw new RrtError(`attention: packed segments hold ${total} tokens, the call has ${S}`);
    const scale = 1 / Math.sqrt(hd);
    const k3 = reshape(k, [S, KV, hd]), v3 = reshape(v, [S, KV, hd]);
    if (caches.every((c) => c.writesInPlace)) {
      // Every sequence's writes and attention in one op (two kernel calls on the cpu backend).
      const starts = caches.map((c, i) => c.claim(segments[i], q.backend).start);
      const claimed = caches.map((c, i) => c.segment(starts[i], segments[i]));
      return reshape(appendAttend(reshape(q, [S, H, hd]), k3, v3, claimed, { scale }), [S, H * hd]);
    }
    // Caches with their own storage: append() each segment and attend over the views it returns.
    const q4 = reshape(q, [S, KV, G, hd]);
    const parts: Tensor[] = [];
    let offset = 0;
    segments.forEach((len, i) => {
      const cache = caches[i];
      const before = cache.length;
      const part = (t: Tensor) => (len === S ? t : narrow(t, 0, offset, len));
      // [len, KV, hd] -> [KV, len, hd]; queries [len, KV, G, hd] -> [KV, G * len, hd].
      const [kAll, vAll] = cache.append(permute(part(k3), [1, 0, 2]), permute(part(v3), [1, 0, 2]));
      const qs = reshape(permute(part(q4), [1, 2, 0, 3]), [KV, G * len, hd]);
      const mask = groupedCausalMask(G, len, before + len, before, q.backend);
      const o = matmul(softmax(add(affine(matmul(qs, kAll, { transB: true }), scale, 0), mask)), vAll);
      // [KV, G, len, hd] -> [len, H * hd]
      parts.push(reshape(permute(reshape(o, [KV, G, len, hd]), [2, 0, 1, 3]), [len, H * hd]));
      offset += len;
    });
    return parts.length === 1 ? parts[0] : concat(parts, 0);
  }
}

/**
 * Appends row first + j of k, v ([N, Hkv, headDim]) to caches[j] as one entry, for every j. The
 * caches that write in place share one copyRuns call (the folded K/V fill of a serving step).
 */
export function appendRows(k: Tensor, v: Tensor, first: number, caches: readonly LayerKVCache[]): void {
  const KV = k.shape[1], hd = k.shape[2];
  // Claim every entry first: a cache listed twice may move its buffers on the second claim.
  const starts = caches.map((c, j) => {
    if (c.writesInPlace) return c.claim(1, k.backend).start;
    c.append(reshape(narrow(k, 0, first + j, 1), [KV, 1, hd]), reshape(narrow(v, 0, first + j, 1), [KV, 1, hd]));
    return -1;
  });
  // One run per entry and tensor: KV blocks of hd, contiguous in k (v), capacity * hd apart in the cache.
  const src: Tensor[] = [], dst: Tensor[] = [], from: number[] = [], to: number[] = [], strides: number[] = [];
  caches.forEach((c, j) => {
    if (starts[j] < 0) return;
    const seg = c.segment(starts[j], 1);
    const own = (first + j) * KV * hd, at = seg.start * hd, stride = seg.k.shape[1] * hd;
    src.push(k, v); dst.push(seg.k, seg.v); from.push(own, own); to.push(at, at); strides.push(stride, stride);
  });
  const n = src.length;
  copyRuns({
    src, srcOffsets: Int32Array.from(from), srcStrides: new Int32Array(n).fill(hd),
    dst, dstOffsets: Int32Array.from(to), dstStrides: Int32Array.from(strides), length: hd, blocks: KV,
  });
}

/**
 * Rows folded into a call of one-token rows (packed segments included) that only write caches:
 * the keys and values of x (block inputs after ln1 at this level; DecoderBlock takes them
 * before it) at each row's own depth and position are appended to caches[j] before the call's
 * rows attend, and the rows give no output. Serving folds the K/V fill of early-exited tokens
 * into the next call of the same block this way, so that fill and call share one projection.
 */
export interface CacheWrites {
  /** [F, D]. */
  x: Tensor;
  /** Depth position of each row (per-depth hooks read it), [F]. */
  depth: Int32Array;
  /** Position of each row's token (rotary), [F]. */
  positions: Int32Array;
  caches: LayerKVCache[];
}

function checkCacheWrites(w: CacheWrites, D: number): void {
  const F = w.x.shape[0];
  if (w.x.shape.length !== 2 || w.x.shape[1] !== D) throw new RrtError(`attention: cache writes must be [F, ${D}], got [${w.x.shape}]`);
  if (w.depth.length !== F || w.positions.length !== F || w.caches.length !== F) {
    throw new RrtError(`attention: ${F} cache-write rows need ${F} depths, positions and caches, got ${w.depth.length}, ${w.positions.length} and ${w.caches.length}`);
  }
}

function joinInts(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** ctx.depth of B rows (a number or one per row) followed by the written rows' depths. */
function joinDepths(depth: number | Int32Array, B: number, more: Int32Array): Int32Array {
  return joinInts(typeof depth === 'number' ? new Int32Array(B).fill(depth) : depth, more);
}

const maskCache = new Map<string, Tensor>();

/** Additive causal mask [G*T, S] (query row g*T + t sees keys up to offset + t). */
function groupedCausalMask(G: number, T: number, S: number, offset: number, backend: Backend): Tensor {
  const key = `${backend.name}:${G}:${T}:${S}:${offset}`;
  let m = maskCache.get(key);
  if (!m || m.isDisposed) {
    const vals = new Float32Array(G * T * S);
    for (let g = 0; g < G; g++) for (let t = 0; t < T; t++) for (let s = offset + t + 1; s < S; s++) vals[(g * T + t) * S + s] = -Infinity;
    m = fromValues(vals, [G * T, S], backend).keep();
    if (maskCache.size > 256) {
      for (const old of maskCache.values()) old.dispose();
      maskCache.clear();
    }
    maskCache.set(key, m);
  }
  return m;
}
