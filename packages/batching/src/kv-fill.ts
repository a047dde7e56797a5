// KV cache of exited tokens. A token that exits after depth position e-1 never computed keys and
// values at depths e..L-1, but later tokens attend to them there. Three ways to fill them:
//   'propagate'  k, v = proj_l(ln1_l(h_exit)) at every missing depth l: only the norm and the K/V
//                projections of those depths run (no attention, no MLP), batched across exited
//                tokens by block; about 2*D*kvDim of a block's ~12*D^2 multiply-adds per depth.
//   'reuse'      copy the K/V of the last computed depth (e-1) into every missing depth: no
//                compute, but keys made by another layer's projection.
//   'reuse-loop' copy, into missing depth l, the K/V of the deepest computed depth that runs the
//                same block (loop b's keys of block k for every later loop of block k); falls
//                back to depth e-1 where no computed depth shares the block (plain models).
// A StatePredictor given as the fill works like 'propagate' from its estimate of each skipped
// depth's input instead of h_exit itself (state-predictor.ts).

import { RrtError, type Tensor, concat, copyRuns, indexSelect, narrow, reshape } from '@rrt/tensor';
import { StatePredictor } from './state-predictor.js';
import { type Attention, type CausalLM, type DecoderBlock, type ForwardContext, LayerKVCache, appendRows } from '@rrt/layers';

export type KvFillMode = 'propagate' | 'reuse' | 'reuse-loop';

export const KV_FILL_MODES: readonly KvFillMode[] = ['propagate', 'reuse', 'reuse-loop'];

/** How exited tokens' K/V are filled: a mode, or a fitted StatePredictor (reported as 'predict'). */
export type KvFill = KvFillMode | StatePredictor;

/** The name reports use for a fill. */
export function kvFillName(fill: KvFill): string {
  return fill instanceof StatePredictor ? 'predict' : fill;
}

/** Throws unless `fill` is a known mode or a predictor of the model's width. */
export function checkKvFill(model: CausalLM, fill: KvFill, who: string): void {
  if (fill instanceof StatePredictor) {
    if (fill.dim !== model.cfg.hiddenSize) throw new RrtError(`${who}: the state predictor was fitted for ${fill.dim} features, the model has ${model.cfg.hiddenSize}`);
  } else if (!KV_FILL_MODES.includes(fill)) {
    throw new RrtError(`${who}: unknown kvFill '${String(fill)}'; expected ${KV_FILL_MODES.join(', ')} or a StatePredictor`);
  }
}

/**
 * A layer cache for serving: LayerKVCache (so attention appends in place and reads it with
 * appendAttend) plus the single-entry writes of the K/V fill, which build no views: filling an
 * exited token's entries costs a few small copies per depth, not a copy of the whole cache.
 */
export class ServingLayerCache extends LayerKVCache {
  constructor(kvHeads: number, headDim: number, capacity = 16) {
    super(kvHeads, headDim, Math.max(1, capacity));
  }

  /** Appends row `row` of k, v: [N, Hkv, headDim] as one entry. */
  appendRow(k: Tensor, v: Tensor, row: number): void {
    appendRows(k, v, row, [this]);
  }

  /** Appends a copy of another cache's entry at `position` (same heads and head size). */
  appendCopyOf(from: ServingLayerCache, position: number): void {
    appendCopies([{ from, position, to: this }]);
  }

  /** Keys and values of one entry, host copies [Hkv * headDim] each (tests, debugging). */
  entry(position: number): [Float32Array, Float32Array] {
    if (!this.k || !this.v || position >= this.length) throw new RrtError(`kv cache: no entry at position ${position} (holds ${this.length})`);
    const out = (buf: Tensor): Float32Array => {
      const all = buf.dataSync();
      const e = new Float32Array(this.kvHeads * this.headDim);
      for (let h = 0; h < this.kvHeads; h++) e.set(all.subarray((h * this.capacity + position) * this.headDim, (h * this.capacity + position + 1) * this.headDim), h * this.headDim);
      return e;
    };
    return [out(this.k), out(this.v)];
  }
}

/** One entry copy of the reuse fills: `from`'s entry at `position` is appended to `to`. */
export interface EntryCopy {
  from: ServingLayerCache;
  position: number;
  to: ServingLayerCache;
}

/** Appends every copy (same heads and head size throughout) in one copyRuns call. */
export function appendCopies(copies: readonly EntryCopy[]): void {
  if (copies.length === 0) return;
  for (const c of copies) {
    if (!(c.position >= 0 && c.position < c.from.length)) throw new RrtError(`kv cache: no entry at position ${c.position} to copy (the source holds ${c.from.length})`);
  }
  const backend = copies[0].from.segment(copies[0].position, 1).k.backend;
  // Claim every destination first: a cache claimed twice may move its buffers.
  const starts = copies.map((c) => c.to.claim(1, backend).start);
  // One run per entry and tensor: KV blocks of hd, each cache's capacity * hd apart.
  const { kvHeads: KV, headDim: hd } = copies[0].to;
  const n = 2 * copies.length;
  const src: Tensor[] = new Array(n), dst: Tensor[] = new Array(n);
  const from = new Int32Array(n), to = new Int32Array(n), fromStrides = new Int32Array(n), toStrides = new Int32Array(n);
  copies.forEach((c, j) => {
    const a = c.from.segment(c.position, 1), b = c.to.segment(starts[j], 1);
    for (let side = 0; side < 2; side++) {
      const r = 2 * j + side;
      src[r] = side === 0 ? a.k : a.v; dst[r] = side === 0 ? b.k : b.v;
      from[r] = c.position * hd; to[r] = b.start * hd;
      fromStrides[r] = a.k.shape[1] * hd; toStrides[r] = b.k.shape[1] * hd;
    }
  });
  copyRuns({ src, srcOffsets: from, srcStrides: fromStrides, dst, dstOffsets: to, dstStrides: toStrides, length: hd, blocks: KV });
}

/** The KV cache of one served sequence: one layer cache per depth position. */
export class ServingKVCache {
  readonly layers: ServingLayerCache[];

  /** capacity: tokens to reserve up front (no regrowth copies when it covers the sequence). */
  constructor(model: CausalLM, capacity: number) {
    const { numKvHeads, headDim } = model.cfg;
    this.layers = Array.from({ length: model.depth }, () => new ServingLayerCache(numKvHeads, headDim, Math.max(1, capacity)));
  }

  /** Bytes held by all depth positions. */
  get bytes(): number {
    let s = 0;
    for (const l of this.layers) s += l.bytes;
    return s;
  }

  dispose(): void {
    for (const l of this.layers) l.dispose();
  }
}

/** One exited token whose deeper K/V are missing. */
export interface ExitedToken {
  cache: ServingKVCache;
  /** First depth position not computed (the token ran depths 0..exitDepth-1). */
  exitDepth: number;
  /** The token's position in its sequence. */
  position: number;
  /** Its row in the `hidden` tensor given to fillExitedKV. */
  row: number;
}

/**
 * Fills the missing K/V of exited tokens. hidden: [N, D] (or [N, 1, D]) hidden states, where
 * row `token.row` is each exited token's state after its last computed depth (other rows are
 * ignored). Returns how many (token, depth) entries
 * were projected ('propagate') or copied ('reuse', 'reuse-loop').
 */
export function fillExitedKV(model: CausalLM, mode: KvFill, hidden: Tensor, tokens: readonly ExitedToken[]): number {
  if (tokens.length === 0) return 0;
  const L = model.depth;
  if (mode instanceof StatePredictor) return propagate(model, hidden, tokens, mode);
  if (mode === 'propagate') return propagate(model, hidden, tokens);
  if (mode !== 'reuse' && mode !== 'reuse-loop') throw new RrtError(`unknown KV fill mode '${String(mode)}'; expected ${KV_FILL_MODES.join(', ')}`);
  const copies: EntryCopy[] = [];
  for (const t of tokens) {
    for (let l = t.exitDepth; l < L; l++) {
      const src = mode === 'reuse' ? t.exitDepth - 1 : sameBlockSource(model.schedule, t.exitDepth, l);
      copies.push({ from: t.cache.layers[src], position: t.position, to: t.cache.layers[l] });
    }
  }
  appendCopies(copies);
  return copies.length;
}

/** The deepest computed depth (< exitDepth) that runs the same block as depth l, else exitDepth - 1. */
function sameBlockSource(schedule: readonly number[], exitDepth: number, l: number): number {
  for (let d = exitDepth - 1; d >= 0; d--) if (schedule[d] === schedule[l]) return d;
  return exitDepth - 1;
}

function propagate(model: CausalLM, hidden: Tensor, tokens: readonly ExitedToken[], predictor?: StatePredictor): number {
  const L = model.depth;
  const D = model.cfg.hiddenSize;
  const flat = reshape(hidden, [-1, D]);
  // The projections' inputs: the exit states, then (with a predictor) the estimated inputs of each
  // skipped depth after the first, one block of rows per (exit depth, skipped depth) pair, in the
  // order of the tokens sharing that exit depth; rowOf maps a token and depth to its row.
  let source = flat;
  let rowOf = (t: ExitedToken, _l: number): number => t.row;
  if (predictor) {
    const byExit = new Map<number, ExitedToken[]>();
    for (const t of tokens) {
      const list = byExit.get(t.exitDepth);
      if (list) list.push(t);
      else byExit.set(t.exitDepth, [t]);
    }
    const parts: Tensor[] = [flat];
    const start = new Map<string, number>();
    const index = new Map<ExitedToken, number>();
    let at = flat.shape[0];
    for (const [e, list] of byExit) {
      list.forEach((t, i) => index.set(t, i));
      const h = indexSelect(flat, 0, list.map((t) => t.row));
      for (let l = e + 1; l < L; l++) {
        parts.push(predictor.predict(h, e, l));
        start.set(`${e}:${l}`, at);
        at += list.length;
      }
    }
    if (parts.length > 1) source = concat(parts, 0);
    rowOf = (t, l) => (l === t.exitDepth ? t.row : start.get(`${t.exitDepth}:${l}`)! + index.get(t)!);
  }
  // One projection call per block: rows are (token, missing depth) pairs whose depth runs it.
  const byBlock = new Map<number, { rows: number[]; depths: number[]; positions: number[]; targets: [ExitedToken, number][] }>();
  for (const t of tokens) {
    for (let l = t.exitDepth; l < L; l++) {
      const b = model.schedule[l];
      let g = byBlock.get(b);
      if (!g) byBlock.set(b, (g = { rows: [], depths: [], positions: [], targets: [] }));
      g.rows.push(rowOf(t, l));
      g.depths.push(l);
      g.positions.push(t.position);
      g.targets.push([t, l]);
    }
  }
  let n = 0;
  for (const [b, g] of byBlock) {
    const N = g.rows.length;
    const x = indexSelect(source, 0, g.rows);
    const ctx: ForwardContext = { depth: Int32Array.from(g.depths), positions: Int32Array.from(g.positions), batch: N, seq: 1 };
    const [k, v] = projectKV(model.blocks[b], x, ctx);
    appendRows(k, v, 0, g.targets.map(([t, l]) => t.cache.layers[l]));
    n += N;
  }
  return n;
}

/**
 * Keys (rotated) and values a block's attention would cache for inputs x, without running the
 * attention itself. x: [N, D] block inputs (before ln1); ctx.depth and ctx.positions per row
 * (batch N, seq 1) -> k, v: [N, Hkv, headDim]. Mirrors Attention's three projection layouts.
 */
export function projectKV(block: DecoderBlock, x: Tensor, ctx: ForwardContext): [Tensor, Tensor] {
  const attn: Attention = block.attn;
  const n = x.shape[0], H = attn.numHeads, KV = attn.numKvHeads, hd = attn.headDim;
  const xn = block.ln1.forward(x);
  let k: Tensor, v: Tensor;
  if (attn.layout === 'separate') {
    k = reshape(attn.k!.forward(xn, ctx), [n, KV, hd]);
    v = reshape(attn.v!.forward(xn, ctx), [n, KV, hd]);
  } else if (attn.layout === 'fused') {
    const fused = attn.qkv!.forward(xn, ctx);
    k = reshape(narrow(fused, 1, H * hd, KV * hd), [n, KV, hd]);
    v = reshape(narrow(fused, 1, (H + KV) * hd, KV * hd), [n, KV, hd]);
  } else {
    const perHead = reshape(attn.qkv!.forward(xn, ctx), [n, H, 3, hd]);
    k = reshape(narrow(perHead, 2, 1, 1), [n, H, hd]);
    v = reshape(narrow(perHead, 2, 2, 1), [n, H, hd]);
  }
  if (attn.rotary) k = attn.rotary.apply(k, ctx.positions);
  return [k, v];
}
