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

import { RrtError, type Tensor, clone, indexSelect, narrow, reshape } from '@rrt/tensor';
import { type Attention, type CausalLM, type DecoderBlock, type ForwardContext, LayerKVCache } from '@rrt/layers';

export type KvFillMode = 'propagate' | 'reuse' | 'reuse-loop';

export const KV_FILL_MODES: readonly KvFillMode[] = ['propagate', 'reuse', 'reuse-loop'];

/** A layer cache that can keep a copy of the last single-token entry appended (for 'reuse'). */
export class CapturingLayerCache extends LayerKVCache {
  /** Record single-token appends (decode), so an exit can copy them deeper. */
  capture = false;
  lastK: Tensor | null = null;
  lastV: Tensor | null = null;

  override append(k: Tensor, v: Tensor): [Tensor, Tensor] {
    const out = super.append(k, v);
    if (this.capture && k.shape[1] === 1) {
      this.lastK?.dispose();
      this.lastV?.dispose();
      this.lastK = clone(k).keep();
      this.lastV = clone(v).keep();
    }
    return out;
  }

  override dispose(): void {
    super.dispose();
    this.lastK?.dispose();
    this.lastV?.dispose();
    this.lastK = this.lastV = null;
  }
}

/** The KV cache of one served sequence: one layer cache per depth position. */
export class ServingKVCache {
  readonly layers: CapturingLayerCache[];

  /** capacity: tokens to reserve up front (no regrowth copies when it covers the sequence). */
  constructor(model: CausalLM, capacity: number, capture = false) {
    const { numKvHeads, headDim } = model.cfg;
    this.layers = Array.from({ length: model.depth }, () => {
      const c = new CapturingLayerCache(numKvHeads, headDim, Math.max(1, capacity));
      c.capture = capture;
      return c;
    });
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
 * Fills the missing K/V of exited tokens. hidden: [E, D] (or [E, 1, D]), the hidden state of
 * each exited token after its last computed depth. Returns how many (token, depth) entries
 * were projected ('propagate') or copied ('reuse', 'reuse-loop').
 */
export function fillExitedKV(model: CausalLM, mode: KvFillMode, hidden: Tensor, tokens: readonly ExitedToken[]): number {
  if (tokens.length === 0) return 0;
  const L = model.depth;
  if (mode === 'propagate') return propagate(model, hidden, tokens);
  if (mode !== 'reuse' && mode !== 'reuse-loop') throw new RrtError(`unknown KV fill mode '${String(mode)}'; expected ${KV_FILL_MODES.join(', ')}`);
  let n = 0;
  for (const t of tokens) {
    for (let l = t.exitDepth; l < L; l++) {
      const src = mode === 'reuse' ? t.exitDepth - 1 : sameBlockSource(model.schedule, t.exitDepth, l);
      const from = t.cache.layers[src];
      if (!from.lastK || !from.lastV || from.length !== t.position + 1) {
        throw new RrtError(`KV fill '${mode}': depth ${src} holds no captured entry for position ${t.position}; create the cache with capture on`);
      }
      t.cache.layers[l].append(from.lastK, from.lastV);
      n++;
    }
  }
  return n;
}

/** The deepest computed depth (< exitDepth) that runs the same block as depth l, else exitDepth - 1. */
function sameBlockSource(schedule: readonly number[], exitDepth: number, l: number): number {
  for (let d = exitDepth - 1; d >= 0; d--) if (schedule[d] === schedule[l]) return d;
  return exitDepth - 1;
}

function propagate(model: CausalLM, hidden: Tensor, tokens: readonly ExitedToken[]): number {
  const L = model.depth;
  const D = model.cfg.hiddenSize;
  const flat = reshape(hidden, [-1, D]);
  // One projection call per block: rows are (token, missing depth) pairs whose depth runs it.
  const byBlock = new Map<number, { rows: number[]; depths: number[]; positions: number[]; targets: [ExitedToken, number][] }>();
  for (const t of tokens) {
    for (let l = t.exitDepth; l < L; l++) {
      const b = model.schedule[l];
      let g = byBlock.get(b);
      if (!g) byBlock.set(b, (g = { rows: [], depths: [], positions: [], targets: [] }));
      g.rows.push(t.row);
      g.depths.push(l);
      g.positions.push(t.position);
      g.targets.push([t, l]);
    }
  }
  let n = 0;
  for (const [b, g] of byBlock) {
    const N = g.rows.length;
    const x = indexSelect(flat, 0, g.rows);
    const ctx: ForwardContext = { depth: Int32Array.from(g.depths), positions: Int32Array.from(g.positions), batch: N, seq: 1 };
    const [k, v] = projectKV(model.blocks[b], x, ctx);
    const KV = model.cfg.numKvHeads, hd = model.cfg.headDim;
    for (let j = 0; j < N; j++) {
      const [t, l] = g.targets[j];
      // Row j is [KV, hd]; a one-token entry is [KV, 1, hd], the same layout.
      t.cache.layers[l].append(reshape(narrow(k, 0, j, 1), [KV, 1, hd]), reshape(narrow(v, 0, j, 1), [KV, 1, hd]));
      n++;
    }
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
