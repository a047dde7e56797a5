// The per-depth hook of a relaxed model: one hook per shared Linear holds that Linear's LoRA
// pairs (and bias deltas) by depth position and adds the pair of the depth it runs at, read from
// ctx.depth (a number, or one depth per batch row under continuous depth-wise batching):
//
//     h = W'_{s(l)} x + B_l A_l x.
//
// mergeDepths() is its serving form: one weight per depth position, computed through
// Linear.product; rows at several depths in one call run as one grouped product.

import {
  Generator, type PackedWeights, RrtError, type Tensor, add, concat, fmtShape, gather, groupedLinear, isGradEnabled, linear, noGrad, packWeights,
  reshape, tidy, zeros,
} from '@rrt/tensor';
import { type ForwardContext, type Linear, type LinearHook, rowsByDepth } from '@rrt/layers';
import type { LoraPair } from './adapter.js';
import type { LoraTarget } from './params.js';
import { type OutputPart, placeParts, placeRows } from './targets.js';

/** The LoRA of one target projection at one depth position. */
export class DepthLora {
  /** @internal Whether the delta currently sits in the shared weight. */
  merged = false;

  constructor(
    /** Depth position l (layer l of the unrolled model). */
    readonly depth: number,
    /** Shared block it adapts: model.schedule[depth]. */
    readonly block: number,
    readonly target: LoraTarget,
    /** Block-relative path of the Linear ('attn.q', 'attn.qkv', ...). */
    readonly linearPath: string,
    /** Output rows of the Linear it writes. */
    readonly part: OutputPart,
    readonly pair: LoraPair,
    /** alpha of scaling = alpha / rank. */
    readonly alpha: number,
  ) {}

  /** [rank, in]. */
  get A(): Tensor {
    return this.pair.A;
  }
  /** [out, rank] (out = the rows of its part). */
  get B(): Tensor {
    return this.pair.B;
  }
  get rank(): number {
    return this.pair.rank;
  }
  get scaling(): number {
    return this.pair.scaling;
  }
}

/**
 * A per-depth bias delta on one target projection (relax(..., { biases: true })): the Linear's
 * output rows of `part` get + bias at depth `depth` only.
 */
export class DepthBias {
  /** @internal Whether the delta currently sits in the shared bias. */
  merged = false;

  constructor(
    readonly depth: number,
    readonly block: number,
    readonly target: LoraTarget,
    readonly linearPath: string,
    readonly part: OutputPart,
    /** [rows of part], trainable. */
    readonly bias: Tensor,
  ) {}

  /** Number of scalar parameters (the rows of its part). */
  get numParameters(): number {
    return this.bias.size;
  }
}

/** Hook functions of depth-wise LoRA, to refuse relaxing a Linear twice. */
const depthHooks = new WeakSet<LinearHook>();

/** Whether a Linear already runs a depth-wise LoRA hook. */
export function hasDepthHook(lin: Linear): boolean {
  return lin.hooks.some((h) => depthHooks.has(h));
}

/** One hook per shared Linear, holding that Linear's modules (and bias deltas) by depth position. */
export class DepthHook {
  readonly byDepth = new Map<number, DepthLora[]>();
  readonly biasByDepth = new Map<number, DepthBias[]>();
  readonly fn: LinearHook;
  /** Whether the deltas are folded into the Linear's per-depth weights (mergeDepths). */
  depthMerged = false;
  /** What mergeDepths made: per-depth weights and the tensors to free. */
  private readonly weights = new Map<number, { weight: Tensor; bias: Tensor | null }>();
  private readonly owned: Tensor[] = [];
  /** The per-depth weights kept in the matmul kernel's packed form while merged. */
  private packed: PackedWeights | null = null;

  constructor(readonly linear: Linear, readonly where: string, readonly block: number, private readonly schedule: readonly number[], dropout: number, rng: Generator) {
    this.fn = (x, y, ctx) => {
      if (!ctx) throw new RrtError(`depth-wise LoRA on ${where}: the Linear ran without a ForwardContext; run it through the model so ctx.depth picks the adapter`);
      if (this.depthMerged) {
        // The per-depth weights are copies: gradients would never reach the adapters or the shared weights.
        if (linear.training && isGradEnabled()) {
          throw new RrtError(`depth-wise LoRA on ${where}: the deltas are merged into per-depth weights for inference (mergeDepths); call unmergeDepths() before training, or run inference under noGrad or after model.eval()`);
        }
        return y;
      }
      const x2 = x.rank === 2 ? x : reshape(x, [-1, linear.inFeatures]);
      const p = linear.training ? dropout : 0;
      const delta = this.delta(x2, ctx.depth, p, rng);
      if (!delta) return y;
      // A bias-only delta is [1, out]: it broadcasts over the rows of y.
      if (delta.shape[0] === 1 && x2.shape[0] !== 1) return add(y, y.rank === 2 ? delta : reshape(delta, [linear.outFeatures]));
      return add(y, y.rank === 2 ? delta : reshape(delta, y.shape.slice()));
    };
  }

  /** Appends the hook to its Linear's hooks. */
  attach(): void {
    depthHooks.add(this.fn);
    this.linear.hooks.push(this.fn);
  }

  /** Takes the hook off its Linear again. */
  detach(): void {
    const i = this.linear.hooks.indexOf(this.fn);
    if (i >= 0) this.linear.hooks.splice(i, 1);
  }

  private checkBlock(depth: number): void {
    if (this.schedule[depth] !== this.block) {
      // Rows routed through the wrong block would silently miss their own depth's adapters.
      throw new RrtError(`depth-wise LoRA on ${this.where}: called for depth ${depth}, which runs block ${this.schedule[depth] ?? 'none'}`);
    }
  }

  private live(depth: number): { mods: DepthLora[]; biases: DepthBias[] } | null {
    this.checkBlock(depth);
    const mods = (this.byDepth.get(depth) ?? []).filter((m) => !m.merged);
    const biases = (this.biasByDepth.get(depth) ?? []).filter((b) => !b.merged);
    return mods.length > 0 || biases.length > 0 ? { mods, biases } : null;
  }

  /** x: [N, in] all at `depth` -> [N, out], [1, out] (biases only) or null (nothing to add). */
  private deltaAt(x: Tensor, depth: number, p: number, rng: Generator): Tensor | null {
    const live = this.live(depth);
    if (!live) return null;
    const out = this.linear.outFeatures;
    let delta = live.mods.length > 0 ? placeParts(live.mods.map((m) => m.pair.forward(x, p, rng)), live.mods.map((m) => m.part), out) : null;
    if (live.biases.length > 0) {
      const bias = placeParts(live.biases.map((b) => reshape(b.bias, [1, b.bias.size])), live.biases.map((b) => b.part), out);
      delta = delta ? add(delta, bias) : bias;
    }
    return delta;
  }

  /** x: [N, in]; depth: one number, or one per batch row (rows of x split evenly among them). */
  private delta(x: Tensor, depth: number | Int32Array, p: number, rng: Generator): Tensor | null {
    if (typeof depth === 'number') return this.deltaAt(x, depth, p, rng);
    const { groups, position } = rowsByDepth(depth, x.shape[0], `depth-wise LoRA on ${this.where} (input ${fmtShape(x.shape)})`);
    if (groups.length === 1) return this.deltaAt(x, groups[0].depth, p, rng);
    for (const g of groups) this.checkBlock(g.depth);
    // Rows grouped by depth: one gather in, each group's own pair, one gather back to row order.
    const out = this.linear.outFeatures;
    let any = false;
    const pieces = groups.map(({ depth: d, rows }) => {
      let piece = this.live(d) ? this.deltaAt(gather(x, rows), d, p, rng) : null;
      if (piece) any = true;
      if (piece && piece.shape[0] !== rows.length) piece = add(zeros([rows.length, out], { backend: x.backend }), piece);
      return piece ?? zeros([rows.length, out], { backend: x.backend });
    });
    return any ? gather(concat(pieces, 0), position) : null;
  }

  /**
   * Serving form: the Linear's product runs on one weight (and bias) per depth position of its
   * block, that depth's live deltas folded in, and the hook stands by. Rebuilds them from the
   * current weights when called again. The merged weights are kept packed for the matmul kernel
   * too (packWeights), until unmergeDepths.
   */
  mergeDepths(): void {
    this.unmergeDepths();
    const lin = this.linear;
    noGrad(() => tidy(() => {
      for (let d = 0; d < this.schedule.length; d++) {
        if (this.schedule[d] !== this.block) continue;
        const live = this.live(d);
        let weight = lin.weight, bias = lin.bias;
        if (live && live.mods.length > 0) weight = this.own(live.mods.reduce((w, m) => add(w, placeRows(m.pair.deltaWeight(), m.part, lin.outFeatures)), lin.weight));
        if (live && live.biases.length > 0) {
          const delta = reshape(placeParts(live.biases.map((b) => reshape(b.bias, [1, b.bias.size])), live.biases.map((b) => b.part), lin.outFeatures), [lin.outFeatures]);
          bias = this.own(lin.bias ? add(lin.bias, delta) : delta);
        }
        this.weights.set(d, { weight, bias });
      }
    }));
    this.packed = packWeights(this.owned.filter((t) => t.rank === 2));
    lin.product = (x, ctx) => this.mergedProduct(x, ctx);
    this.depthMerged = true;
  }

  unmergeDepths(): void {
    if (!this.depthMerged) return;
    this.linear.product = null;
    this.packed?.release();
    this.packed = null;
    for (const t of this.owned) t.dispose();
    this.owned.length = 0;
    this.weights.clear();
    this.depthMerged = false;
  }

  private own(t: Tensor): Tensor {
    this.owned.push(t.keep());
    return t;
  }

  private weightsAt(depth: number): { weight: Tensor; bias: Tensor | null } {
    const w = this.weights.get(depth);
    if (!w) throw new RrtError(`depth-wise LoRA on ${this.where}: called for depth ${depth}, which runs block ${this.schedule[depth] ?? 'none'}`);
    return w;
  }

  /**
   * x W_d^T + b_d per row: a call whose rows sit at several depths is one grouped product (each
   * row costs a plain product with its own depth's weight). Rows that come in a few runs of one
   * depth (a serving call sorts its rows by depth) are read in place; interleaved ones are put in
   * depth order and back.
   */
  private mergedProduct(x: Tensor, ctx: ForwardContext | undefined): Tensor {
    if (!ctx) throw new RrtError(`depth-wise LoRA on ${this.where}: the Linear ran without a ForwardContext; run it through the model so ctx.depth picks the weights`);
    if (typeof ctx.depth === 'number') {
      const w = this.weightsAt(ctx.depth);
      return linear(x, w.weight, w.bias);
    }
    const lin = this.linear;
    const x2 = x.rank === 2 ? x : reshape(x, [-1, lin.inFeatures]);
    const { groups, position, runs } = rowsByDepth(ctx.depth, x2.shape[0], `depth-wise LoRA on ${this.where} (input ${fmtShape(x.shape)})`);
    let y: Tensor;
    if (runs.length <= 2 * groups.length) {
      y = groupedLinear(x2, runs.map((r) => ({ rows: r.rows, ...this.weightsAt(r.depth) })));
    } else {
      const order = new Int32Array(x2.shape[0]);
      let at = 0;
      for (const g of groups) {
        order.set(g.rows, at);
        at += g.rows.length;
      }
      y = gather(groupedLinear(gather(x2, order), groups.map((g) => ({ rows: g.rows.length, ...this.weightsAt(g.depth) }))), position);
    }
    return x.rank === 2 ? y : reshape(y, [...x.shape.slice(0, -1), lin.outFeatures]);
  }
}
