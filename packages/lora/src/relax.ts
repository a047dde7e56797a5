// Relaxed Recursive Transformer (PAPER.md section 2): each depth position l gets its own LoRA on
// every target projection of the shared block s(l) it runs,
//
//     h = W'_{s(l)} x + B_l A_l x,
//
// attached as one hook per shared Linear that picks the depth's pair from ctx.depth (a number,
// or one depth per batch row under continuous depth-wise batching).

import {
  Generator, RrtError, ShapeError, type Tensor, add, affine, clone, concat, fmtShape, fromValues, gather, indexAdd, isGradEnabled, linear, neg, noGrad, reshape, sub,
  tidy, zeros,
} from '@rrt/tensor';
import { CausalLM, type DecoderBlock, type ForwardContext, type Linear, type LinearHook, type Trainable, rowsByDepth } from '@rrt/layers';
import { withNumLayers } from '@rrt/recursive';
import { LoraPair, addToWeight, checkDropout } from './adapter.js';
import { countRelaxedParams, type LoraTarget, type RelaxedParamCount } from './params.js';
import { type SvdOptions, truncatedSvd } from './svd.js';
import { type OutputPart, type TargetSlot, linearAt, partRows, partRowsCount, placePart, placeParts, placeRows, targetSlots } from './targets.js';

/** A float32 matrix as the recursive package hands residuals out: shape [out, in], row-major. */
export interface ResidualMatrix {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/**
 * W_original(depth) - W_shared(schedule[depth]) for a block-relative weight path such as
 * 'attn.q.weight', 'attn.qkv.weight' or 'mlp.down.weight': [out, in].
 */
export type ResidualFn = (depth: number, path: string) => ResidualMatrix;

export interface RelaxOptions {
  /** LoRA rank r of every target unless rankPattern overrides it; capped at min(in, out) per matrix. 0: no LoRA. */
  readonly rank: number;
  /** 'svd': B A = best rank-r approximation of the residual; 'zero': B = 0 (A uniform random). */
  readonly init: 'svd' | 'zero';
  /** Projections to relax (default: q, k, v, o, gate, up, down, those the block has). */
  readonly targets?: readonly LoraTarget[];
  /** Separate ranks for attention (q, k, v, o) and MLP (gate, up, down) projections. */
  readonly rankPattern?: { readonly attention?: number; readonly mlp?: number };
  /** Residuals of the conversion, needed by 'svd' (toRecursive's `residuals`, or residualsFrom()). */
  readonly residuals?: ResidualFn;
  /**
   * scaling = alpha / r per module (default alpha = r, scaling 1). SVD init divides B by the
   * scaling, so the effective delta at init is exactly the truncated SVD whatever alpha is.
   */
  readonly alpha?: number;
  /** Dropout on each adapter's input while training (default 0). */
  readonly dropout?: number;
  /** Seed of zero-init A, of the SVD's random test matrices and of dropout (default 0). */
  readonly seed?: number;
  /** Truncated SVD settings (method, oversample, powerIterations, backend). */
  readonly svd?: Omit<SvdOptions, 'seed'>;
  /**
   * SVD init of a projection that reads a block norm (q, k, v read ln1; gate, up read ln2):
   * truncate R'_l = W_l diag(g_l / g_shared) - W_shared instead of W_l - W_shared (default true).
   * The shared block also shares its norm gains g (1 + w for Gemma), which no LoRA on the
   * projections can untie; folding depth l's gain ratio into its residual makes the full-rank
   * init reproduce the original depth exactly. Columns where g_shared is 0 keep ratio 1 (their
   * input is constant, so no weight there can restore the original's). false: the paper's
   * plain residual.
   */
  readonly foldNorms?: boolean;
  /**
   * Relax biases too (default false; the paper relaxes projections only): each depth position
   * gets its own bias vector c_l [rows of the target] on every target projection that has a bias
   * or reads a LayerNorm (gpt_neox, gpt2; none for llama and gemma). SVD init sets c_l so that
   * the input-independent part of the output is the original depth's at any rank
   * (c_l = b_l - b_shared + W_l beta_l - (W_shared + B_l A_l) beta_shared); zero init sets
   * c_l = 0. Counted in paramCount().depthBiases. PEFT adapter files have no place for them.
   */
  readonly biases?: boolean;
}

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

/** Settings a RelaxedLora was made with (loaded ones: read from adapter_config.json). */
export interface RelaxedInfo {
  readonly init: 'svd' | 'zero' | 'loaded';
  readonly rank: number;
  readonly alpha?: number;
  readonly dropout: number;
  readonly targets: readonly LoraTarget[];
  readonly rankPattern?: { readonly attention?: number; readonly mlp?: number };
  /** Whether SVD init folded norm gain ratios into the residuals (relax's foldNorms). */
  readonly foldNorms?: boolean;
  /** Whether each depth position has its own bias deltas (relax's biases). */
  readonly biases?: boolean;
}

/** Hook functions of depth-wise LoRA, to refuse relaxing a Linear twice. */
const depthHooks = new WeakSet<LinearHook>();

/** One hook per shared Linear, holding that Linear's modules (and bias deltas) by depth position. */
class DepthHook {
  readonly byDepth = new Map<number, DepthLora[]>();
  readonly biasByDepth = new Map<number, DepthBias[]>();
  readonly fn: LinearHook;
  /** Whether the deltas are folded into the Linear's per-depth weights (mergeDepths). */
  depthMerged = false;
  /** What mergeDepths made: per-depth weights, corrections between depths, the tensors to free. */
  private readonly weights = new Map<number, { weight: Tensor; bias: Tensor | null }>();
  private readonly corrections = new Map<string, ((x: Tensor) => Tensor) | null>();
  private readonly owned: Tensor[] = [];

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
   * current weights when called again.
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
    lin.product = (x, ctx) => this.mergedProduct(x, ctx);
    this.depthMerged = true;
  }

  unmergeDepths(): void {
    if (!this.depthMerged) return;
    this.linear.product = null;
    for (const t of this.owned) t.dispose();
    this.owned.length = 0;
    this.weights.clear();
    this.corrections.clear();
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
   * x W_d^T + b_d per row. A call whose rows sit at several depths runs all rows through the
   * weights of the depth with the most rows (one product at full efficiency), then adds to the
   * other rows the difference to their own depth: rank r_d + r_m, so a few rows cost little.
   */
  private mergedProduct(x: Tensor, ctx: ForwardContext | undefined): Tensor {
    if (!ctx) throw new RrtError(`depth-wise LoRA on ${this.where}: the Linear ran without a ForwardContext; run it through the model so ctx.depth picks the weights`);
    if (typeof ctx.depth === 'number') {
      const w = this.weightsAt(ctx.depth);
      return linear(x, w.weight, w.bias);
    }
    const lin = this.linear;
    const x2 = x.rank === 2 ? x : reshape(x, [-1, lin.inFeatures]);
    const { groups } = rowsByDepth(ctx.depth, x2.shape[0], `depth-wise LoRA on ${this.where} (input ${fmtShape(x.shape)})`);
    const major = groups.reduce((a, g) => (g.rows.length > a.rows.length ? g : a));
    const w = this.weightsAt(major.depth);
    let y = linear(x2, w.weight, w.bias);
    for (const g of groups) {
      const correct = g === major ? null : this.correction(g.depth, major.depth);
      if (correct) y = indexAdd(y, g.rows, correct(gather(x2, g.rows)));
    }
    return x.rank === 2 ? y : reshape(y, [...x.shape.slice(0, -1), lin.outFeatures]);
  }

  /**
   * x -> x (W_d - W_from)^T + (b_d - b_from), low-rank when that is cheaper, null when the two
   * depths compute the same; built once per pair.
   */
  private correction(d: number, from: number): ((x: Tensor) => Tensor) | null {
    const key = `${d}:${from}`;
    let f = this.corrections.get(key);
    if (f !== undefined) return f;
    const lin = this.linear;
    const [wd, wf] = [this.weightsAt(d), this.weightsAt(from)];
    const mods = [...(this.live(d)?.mods ?? []).map((m) => [m, 1] as const), ...(this.live(from)?.mods ?? []).map((m) => [m, -1] as const)];
    const rank = mods.reduce((s, [m]) => s + m.pair.rank, 0);
    f = noGrad(() => tidy(() => {
      const bias = wd.bias === wf.bias ? null : this.own(wd.bias && wf.bias ? sub(wd.bias, wf.bias) : wd.bias ?? neg(wf.bias!));
      if (mods.length === 0) {
        // Bias deltas only (rankPattern 0): the same weight at both depths.
        return bias ? (x: Tensor) => add(zeros([x.shape[0], lin.outFeatures], { backend: x.backend }), bias) : null;
      }
      if (rank * (lin.inFeatures + lin.outFeatures) >= lin.inFeatures * lin.outFeatures) {
        const diff = this.own(sub(wd.weight, wf.weight));
        return (x: Tensor) => linear(x, diff, bias);
      }
      // [sum r, in] and [out, sum r]: each module's A, and its B placed in its output rows, scaled and signed.
      const A = this.own(concat(mods.map(([m]) => m.pair.A), 0));
      const B = this.own(concat(mods.map(([m, sign]) => placeRows(affine(m.pair.B, sign * m.pair.scaling, 0), m.part, lin.outFeatures)), 1));
      return (x: Tensor) => linear(linear(x, A), B, bias);
    }));
    this.corrections.set(key, f);
    return f;
  }
}

/**
 * Depth-wise LoRA attached to a (recursive) model: the handle relax() and loadAdapters() return.
 * Train `parameters()` together with the model's own (the paper trains both).
 */
export class RelaxedLora {
  private readonly hooks = new Map<string, DepthHook>();
  private removed = false;

  constructor(
    readonly model: CausalLM,
    readonly modules: readonly DepthLora[],
    readonly info: RelaxedInfo,
    seed = 0,
    /** Per-depth bias deltas (relax(..., { biases: true })); empty otherwise. */
    readonly biases: readonly DepthBias[] = [],
  ) {
    const rng = new Generator(seed + 0x5eed);
    const hookFor = (depth: number, block: number, linearPath: string): DepthHook => {
      if (model.schedule[depth] !== block) throw new RrtError(`RelaxedLora: module at depth ${depth} names block ${block}, the schedule runs block ${model.schedule[depth]}`);
      const key = `${block}:${linearPath}`;
      let hook = this.hooks.get(key);
      if (!hook) {
        const lin = linearAt(model.blocks[block], linearPath);
        const where = `blocks.${block}.${linearPath}`;
        if (lin.hooks.some((h) => depthHooks.has(h))) throw new RrtError(`RelaxedLora: ${where} already has depth-wise LoRA; remove() those adapters first`);
        hook = new DepthHook(lin, where, block, model.schedule, info.dropout, rng);
        this.hooks.set(key, hook);
      }
      return hook;
    };
    for (const m of modules) {
      const hook = hookFor(m.depth, m.block, m.linearPath);
      const list = hook.byDepth.get(m.depth) ?? [];
      if (list.some((o) => o.target === m.target)) throw new RrtError(`RelaxedLora: two modules for ${m.target} at depth ${m.depth}`);
      list.push(m);
      hook.byDepth.set(m.depth, list);
    }
    for (const b of biases) {
      const hook = hookFor(b.depth, b.block, b.linearPath);
      const list = hook.biasByDepth.get(b.depth) ?? [];
      if (list.some((o) => o.target === b.target)) throw new RrtError(`RelaxedLora: two bias deltas for ${b.target} at depth ${b.depth}`);
      const rows = partRowsCount(b.part, hook.linear.outFeatures);
      if (b.bias.shape.length !== 1 || b.bias.size !== rows) throw new ShapeError(`RelaxedLora: the bias delta of ${b.target} at depth ${b.depth} is ${fmtShape(b.bias.shape)}, expected [${rows}]`);
      list.push(b);
      hook.biasByDepth.set(b.depth, list);
    }
    for (const hook of this.hooks.values()) {
      depthHooks.add(hook.fn);
      hook.linear.hooks.push(hook.fn);
    }
  }

  /** Every A and B (and per-depth bias delta), for an optimizer. */
  parameters(): Tensor[] {
    return [...this.modules.flatMap((m) => [m.pair.A, m.pair.B]), ...this.biases.map((b) => b.bias)];
  }

  /**
   * The model's parameters plus the adapters', for the layers Trainer (the paper uptrains both);
   * with freezeBase only the adapters. Adapter names: lora.<depth>.<target>.lora_A / lora_B
   * (and lora.<depth>.<target>.bias for per-depth bias deltas).
   */
  trainable(opts: { freezeBase?: boolean } = {}): Trainable {
    const model = this.model;
    const named = (): Map<string, Tensor> => {
      const out = opts.freezeBase ? new Map<string, Tensor>() : model.namedParameters();
      for (const m of this.modules) {
        out.set(`lora.${m.depth}.${m.target}.lora_A`, m.pair.A);
        out.set(`lora.${m.depth}.${m.target}.lora_B`, m.pair.B);
      }
      for (const b of this.biases) out.set(`lora.${b.depth}.${b.target}.bias`, b.bias);
      return out;
    };
    return {
      parameters: () => [...new Set(named().values())],
      namedParameters: named,
      train: (flag?: boolean) => model.train(flag),
    };
  }

  /** Scalar LoRA parameters: sum of rank * (in + out) over modules (bias deltas not included). */
  get numParameters(): number {
    return this.modules.reduce((s, m) => s + m.pair.numParameters, 0);
  }

  /** Scalar parameters of the per-depth bias deltas (0 unless relaxed with biases). */
  get biasParameters(): number {
    return this.biases.reduce((s, b) => s + b.numParameters, 0);
  }

  /** Modules, LoRA parameters in all and per depth position (bias deltas included per depth). */
  get counts(): { modules: number; lora: number; depthBiases: number; perDepth: number[] } {
    const perDepth = new Array<number>(this.model.depth).fill(0);
    for (const m of this.modules) perDepth[m.depth] += m.pair.numParameters;
    for (const b of this.biases) perDepth[b.depth] += b.numParameters;
    return { modules: this.modules.length, lora: this.numParameters, depthBiases: this.biasParameters, perDepth };
  }

  /**
   * The parameter accounting of the configuration (params.ts): recursive model plus LoRA as
   * configured by rank / rankPattern / targets. Equals numParameters for relax() handles.
   */
  paramCount(): RelaxedParamCount {
    const cfg = withNumLayers(this.model.cfg, this.model.depth);
    return countRelaxedParams(cfg, this.model.schedule, { rank: this.info.rank, targets: this.info.targets, rankPattern: this.info.rankPattern, biases: this.info.biases });
  }

  /** The module of a target at a depth position, if any. */
  module(depth: number, target: LoraTarget): DepthLora | undefined {
    return this.modules.find((m) => m.depth === depth && m.target === target);
  }

  /**
   * Folds into the weights every module whose shared block runs at one depth position only
   * (a non-recursive model, or MIDDLE schemes' unique first and last layers), and bias deltas
   * into the biases likewise; those of a block shared by several depths cannot be merged and
   * keep running as hooks. Logits do not change either way. Returns the number of LoRA modules
   * merged (see also mergeUnrolled()).
   */
  merge(): number {
    this.checkLive();
    // Count depth positions per weight tensor: partially tied models share tensors across blocks.
    const uses = new Map<Tensor, number>();
    const paths = new Set(this.modules.map((m) => m.linearPath));
    for (let d = 0; d < this.model.depth; d++) {
      for (const p of paths) {
        const w = linearAt(this.model.blockAt(d), p).weight;
        uses.set(w, (uses.get(w) ?? 0) + 1);
      }
    }
    let merged = 0;
    for (const m of this.modules) {
      const lin = linearAt(this.model.blocks[m.block], m.linearPath);
      if (m.merged || uses.get(lin.weight) !== 1) continue;
      addToWeight(lin, m.part, m.pair.deltaWeight(), 1);
      m.merged = true;
      merged++;
    }
    for (const b of this.biases) {
      const lin = linearAt(this.model.blocks[b.block], b.linearPath);
      if (b.merged || !lin.bias || !this.biasUsedOnce(lin.bias)) continue;
      addToBias(lin, b.part, b.bias, 1);
      b.merged = true;
    }
    this.refreshDepths();
    return merged;
  }

  /** Rebuilds the per-depth weights after the shared weights changed, if mergeDepths() is on. */
  private refreshDepths(): void {
    if (this.depthsMerged) this.mergeDepths();
  }

  /** Whether a bias tensor runs at one depth position only (partial ties may share it). */
  private biasUsedOnce(bias: Tensor): boolean {
    let n = 0;
    const paths = new Set(this.biases.map((b) => b.linearPath));
    for (let d = 0; d < this.model.depth; d++) for (const p of paths) if (linearAt(this.model.blockAt(d), p).bias === bias) n++;
    return n === 1;
  }

  /**
   * The serving form of the relaxed model: every shared Linear gets one weight (and bias) per
   * depth position, W_shared + that depth's deltas, computed through Linear.product, and the hooks
   * stand by. Rows at different depths still share one call of their block (continuous depth-wise
   * batching): all rows run through the majority depth's weights, and the other rows get the
   * rank-2r difference to their own depth (dense where that is not cheaper). The price is memory: a copy of each relaxed weight per depth position,
   * what mergeUnrolled()'s plain model holds. Same logits as the hooks up to float32 rounding.
   * Inference only: a forward in training mode with gradients on throws (gradients would not reach
   * the adapters). The copies are taken now, so call it again after the weights change, and
   * unmergeDepths() to go back to the hooks.
   */
  mergeDepths(): void {
    this.checkLive();
    for (const hook of this.hooks.values()) hook.mergeDepths();
  }

  /** Whether the model runs on per-depth merged weights (mergeDepths). */
  get depthsMerged(): boolean {
    return [...this.hooks.values()].some((h) => h.depthMerged);
  }

  /** Drops the per-depth weights of mergeDepths(): the hooks apply the deltas again. */
  unmergeDepths(): void {
    for (const hook of this.hooks.values()) hook.unmergeDepths();
  }

  /** Takes merged deltas out of the weights again (up to float32 rounding). */
  unmerge(): void {
    for (const m of this.modules) {
      if (!m.merged) continue;
      addToWeight(linearAt(this.model.blocks[m.block], m.linearPath), m.part, m.pair.deltaWeight(), -1);
      m.merged = false;
    }
    for (const b of this.biases) {
      if (!b.merged) continue;
      addToBias(linearAt(this.model.blocks[b.block], b.linearPath), b.part, b.bias, -1);
      b.merged = false;
    }
    this.refreshDepths();
  }

  /**
   * A plain model with one block per depth position (L blocks, identity schedule): block l is a
   * copy of shared block s(l) with depth l's deltas merged into its weights. Same logits as the
   * relaxed model; save it with savePretrained to serve without LoRA.
   */
  mergeUnrolled(): CausalLM {
    this.checkLive();
    const src = this.model;
    const out = new CausalLM(withNumLayers(src.cfg, src.depth), { backend: src.embed.weight.backend, std: 0 });
    const params = src.namedParameters();
    noGrad(() => {
      for (const [path, t] of out.namedParameters()) {
        const m = /^blocks\.(\d+)\.(.+)$/.exec(path);
        const from = m ? `blocks.${src.schedule[Number(m[1])]}.${m[2]}` : path;
        const s = params.get(from);
        if (!s) throw new RrtError(`mergeUnrolled: the model has no parameter "${from}" for "${path}"`);
        const [owner, local] = out.resolveParam(path);
        t.dispose();
        owner.setParam(local, clone(s));
      }
      // Merged modules are already inside the copied shared weight.
      for (const m of this.modules) if (!m.merged) addToWeight(linearAt(out.blocks[m.depth], m.linearPath), m.part, m.pair.deltaWeight(), 1);
      for (const b of this.biases) {
        if (b.merged) continue;
        const lin = linearAt(out.blocks[b.depth], b.linearPath);
        if (!lin.bias) {
          out.dispose();
          throw new RrtError(`mergeUnrolled: depth ${b.depth} has a bias delta on ${b.linearPath}, but the ${src.cfg.family} config gives that Linear no bias; keep the relaxed model (hooks) instead`);
        }
        addToBias(lin, b.part, b.bias, 1);
      }
    });
    return out;
  }

  /** Unmerges, detaches every hook and frees A and B: the model is the plain recursive one again. */
  remove(): void {
    if (this.removed) return;
    this.unmergeDepths();
    this.unmerge();
    for (const hook of this.hooks.values()) {
      const i = hook.linear.hooks.indexOf(hook.fn);
      if (i >= 0) hook.linear.hooks.splice(i, 1);
    }
    this.hooks.clear();
    for (const m of this.modules) m.pair.dispose();
    for (const b of this.biases) b.bias.dispose();
    this.removed = true;
  }

  private checkLive(): void {
    if (this.removed) throw new RrtError('RelaxedLora: the adapters were removed');
  }
}

function checkRankValue(what: string, r: unknown): number {
  if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 0) throw new RrtError(`relax: ${what} must be a non-negative integer, got ${JSON.stringify(r) ?? String(r)}`);
  return r;
}

/** Rows `rows` of a [out, in] matrix -> [rows.length, in]. */
function takeRows(data: Float32Array, inFeatures: number, rows: Int32Array): Float32Array {
  const out = new Float32Array(rows.length * inFeatures);
  for (let i = 0; i < rows.length; i++) out.set(data.subarray(rows[i] * inFeatures, (rows[i] + 1) * inFeatures), i * inFeatures);
  return out;
}

/**
 * Relaxes a recursive model: one LoRA per depth position on each target projection of the
 * shared block used there (PAPER.md section 2). A fused qkv (gpt_neox, gpt2) gets rank r for
 * each of q, k and v. Ranks are capped at min(in, out) per matrix; rank 0 adds nothing.
 *
 * SVD init: R_l = residuals(l, path) [out, in] (for q, k, v, gate and up with depth l's norm
 * gain ratio folded in, see foldNorms); U S V^T = truncatedSvd(R_l, r); B_l = U diag(S) /
 * scaling [out, r], A_l = V^T [r, in], so at init the model computes W'_{s(l)} x + U_r S_r V_r^T x:
 * at full rank exactly the original model (for families with biases, with biases: true).
 */
export function relax(model: CausalLM, opts: RelaxOptions): RelaxedLora {
  const rank = checkRankValue('rank', opts.rank);
  const attnRank = opts.rankPattern?.attention === undefined ? rank : checkRankValue('rankPattern.attention', opts.rankPattern.attention);
  const mlpRank = opts.rankPattern?.mlp === undefined ? rank : checkRankValue('rankPattern.mlp', opts.rankPattern.mlp);
  if (opts.init !== 'svd' && opts.init !== 'zero') throw new RrtError(`relax: init must be 'svd' or 'zero', got ${JSON.stringify(opts.init)}`);
  if (opts.alpha !== undefined && !(Number.isFinite(opts.alpha) && opts.alpha > 0)) throw new RrtError(`relax: alpha must be a positive number, got ${opts.alpha}`);
  const dropout = checkDropout(opts.dropout ?? 0);
  if (opts.init === 'svd' && typeof opts.residuals !== 'function') {
    throw new RrtError("relax: init 'svd' needs residuals(depth, path) = W_original - W_shared; pass toRecursive(...).residuals, or residualsFrom(original, model)");
  }
  const slots = targetSlots(model, opts.targets);
  for (const [b, block] of model.blocks.entries()) {
    for (const slot of slots) {
      if (linearAt(block, slot.linearPath).hooks.some((h) => depthHooks.has(h))) {
        throw new RrtError(`relax: blocks.${b}.${slot.linearPath} already has depth-wise LoRA; remove() those adapters first`);
      }
    }
  }
  const seed = opts.seed ?? 0;
  const foldNorms = opts.foldNorms ?? true;
  const withBiases = opts.biases ?? false;
  const rng = new Generator(seed);
  const backend = model.embed.weight.backend;
  const modules: DepthLora[] = [];
  const biases: DepthBias[] = [];
  try {
    for (let depth = 0; depth < model.depth; depth++) {
      const b = model.schedule[depth];
      const block = model.blocks[b];
      const original = opts.init === 'svd' ? new OriginalDepth(model, depth, opts.residuals!) : null;
      for (const slot of slots) {
        const requested = slot.group === 'attention' ? attnRank : mlpRank;
        const r = Math.min(requested, slot.dIn, slot.dOut);
        const lin = linearAt(block, slot.linearPath);
        let pair: LoraPair | null = null;
        if (r > 0) {
          const alpha = opts.alpha ?? r;
          const scaling = alpha / r;
          if (opts.init === 'zero') {
            pair = new LoraPair(slot.dIn, slot.dOut, r, scaling, { backend, rng });
          } else {
            const res = original!.residual(slot, lin, foldNorms);
            const svd = truncatedSvd({ shape: [slot.dOut, slot.dIn], data: res }, r, { ...opts.svd, seed: seed + depth });
            pair = new LoraPair(slot.dIn, slot.dOut, r, scaling, { backend, A: svd.Vt, B: scaledU(svd.U, svd.S, slot.dOut, r, scaling) });
          }
          modules.push(new DepthLora(depth, b, slot.target, slot.linearPath, slot.part, pair, alpha));
        }
        if (withBiases && needsBias(block, slot)) {
          const c = original ? original.biasDelta(slot, lin, pair) : new Float32Array(slot.dOut);
          const bias = fromValues(c, [slot.dOut], backend).requireGrad().keep();
          bias.name = 'lora_bias';
          biases.push(new DepthBias(depth, b, slot.target, slot.linearPath, slot.part, bias));
        }
      }
    }
  } catch (err) {
    for (const m of modules) m.pair.dispose();
    for (const x of biases) x.bias.dispose();
    throw err;
  }
  return attachOrDispose(model, modules, {
    init: opts.init, rank, alpha: opts.alpha, dropout, targets: slots.map((s) => s.target), rankPattern: opts.rankPattern,
    ...(opts.init === 'svd' ? { foldNorms } : {}), biases: withBiases,
  }, seed, biases);
}

/** The block norm whose output a target's Linear reads: ln1 for q, k, v; ln2 for gate, up; none for o, down. */
function normOf(target: LoraTarget): 'ln1' | 'ln2' | null {
  if (target === 'q' || target === 'k' || target === 'v') return 'ln1';
  if (target === 'gate' || target === 'up') return 'ln2';
  return null;
}

/** Whether a per-depth bias can matter for a slot: its Linear has a bias, or it reads a LayerNorm (bias beta). */
function needsBias(block: DecoderBlock, slot: TargetSlot): boolean {
  const norm = normOf(slot.target);
  return linearAt(block, slot.linearPath).bias !== null || (norm !== null && block[norm].bias !== null);
}

/**
 * What the original (untied) model runs at one depth position, reconstructed from the shared
 * block and the conversion residuals (W_original = W_shared + residual), for the SVD init.
 */
class OriginalDepth {
  private readonly block: DecoderBlock;
  private readonly cache = new Map<string, ResidualMatrix>();
  private readonly ratios = new Map<string, Float64Array>();

  constructor(private readonly model: CausalLM, private readonly depth: number, private readonly residuals: ResidualFn) {
    this.block = model.blocks[model.schedule[depth]];
  }

  /** residuals(depth, path), checked against the shared parameter's shape. */
  private res(path: string, shape: readonly number[]): ResidualMatrix {
    let r = this.cache.get(path);
    if (!r) {
      try {
        r = this.residuals(this.depth, path);
      } catch (err) {
        if (/\.weight$/.test(path) && /^(attn|mlp)\./.test(path)) throw err;
        // Norm and bias residuals are only needed by foldNorms and biases.
        throw new RrtError(`relax: residuals(${this.depth}, '${path}') failed (${(err as Error).message}); norm folding and bias deltas need the residuals of norm weights and biases too: pass toRecursive(...).residuals or residualsFrom(original, model), or set foldNorms: false (and biases: false)`);
      }
      const where = `residuals(${this.depth}, '${path}')`;
      if (!r || !(r.data instanceof Float32Array) || !Array.isArray(r.shape)) throw new RrtError(`relax: ${where} must return { shape, data: Float32Array }`);
      const size = shape.reduce((a, b) => a * b, 1);
      if (r.shape.length !== shape.length || r.shape.some((v, i) => v !== shape[i]) || r.data.length !== size) {
        throw new ShapeError(`relax: ${where} has shape ${fmtShape([...r.shape])} (${r.data.length} values), expected ${fmtShape([...shape])}`);
      }
      this.cache.set(path, r);
    }
    return r;
  }

  /** Per-column ratio g_original / g_shared of a norm's effective gain (1 + w for Gemma); 1 where g_shared is 0. */
  ratio(norm: 'ln1' | 'ln2'): Float64Array {
    let rho = this.ratios.get(norm);
    if (!rho) {
      const w = this.block[norm].weight;
      const shared = w.dataSync(), res = this.res(`${norm}.weight`, w.shape).data;
      const one = this.block[norm].addOne ? 1 : 0;
      rho = new Float64Array(shared.length);
      for (let j = 0; j < shared.length; j++) {
        const gs = one + shared[j], go = one + shared[j] + res[j];
        rho[j] = gs !== 0 ? go / gs : 1;
      }
      this.ratios.set(norm, rho);
    }
    return rho;
  }

  /** The slot's rows of the SVD target: W_l - W_s, or W_l diag(rho) - W_s when folding a norm: [dOut, dIn]. */
  residual(slot: TargetSlot, lin: Linear, fold: boolean): Float32Array {
    const res = this.res(`${slot.linearPath}.weight`, lin.weight.shape).data;
    const rows = slot.part.kind === 'full' ? null : partRows(slot.part, lin.outFeatures);
    const data = rows ? takeRows(res, lin.inFeatures, rows) : Float32Array.from(res);
    const norm = normOf(slot.target);
    if (!fold || !norm) return data;
    const rho = this.ratio(norm);
    if (rho.every((v) => v === 1)) return data;
    const ws = lin.weight.dataSync();
    const shared = rows ? takeRows(ws, lin.inFeatures, rows) : ws;
    const n = lin.inFeatures;
    for (let i = 0; i < slot.dOut; i++) {
      for (let j = 0; j < n; j++) {
        const k = i * n + j;
        // (W_s + R) rho - W_s, in float64.
        data[k] = (shared[k] + data[k]) * rho[j] - shared[k];
      }
    }
    return data;
  }

  /**
   * The slot's bias delta c [dOut] making the input-independent part of the output the
   * original's: c = b_l - b_s + W_l beta_l - (W_s + delta) beta_s, where beta is the LayerNorm
   * bias read (none: 0) and delta = the pair's B A (scaled).
   */
  biasDelta(slot: TargetSlot, lin: Linear, pair: LoraPair | null): Float32Array {
    const rows = partRows(slot.part, lin.outFeatures);
    const c = new Float64Array(slot.dOut);
    if (lin.bias) {
      const db = this.res(`${slot.linearPath}.bias`, lin.bias.shape).data;
      for (let i = 0; i < rows.length; i++) c[i] = db[rows[i]];
    }
    const norm = normOf(slot.target);
    const beta = norm ? this.block[norm].bias : null;
    if (norm && beta) {
      const bs = beta.dataSync(), dbeta = this.res(`${norm}.bias`, beta.shape).data;
      const ws = lin.weight.dataSync(), dw = this.res(`${slot.linearPath}.weight`, lin.weight.shape).data;
      const delta = pair ? noGrad(() => tidy(() => pair.deltaWeight().dataSync())) : null;
      const n = lin.inFeatures;
      for (let i = 0; i < rows.length; i++) {
        const o = rows[i] * n;
        let acc = 0;
        for (let j = 0; j < n; j++) {
          const wl = ws[o + j] + dw[o + j];
          acc += wl * (bs[j] + dbeta[j]) - (ws[o + j] + (delta ? delta[i * n + j] : 0)) * bs[j];
        }
        c[i] += acc;
      }
    }
    return Float32Array.from(c);
  }
}

/** new RelaxedLora(...), freeing the modules' tensors if it refuses them. */
export function attachOrDispose(model: CausalLM, modules: DepthLora[], info: RelaxedInfo, seed: number, biases: DepthBias[] = []): RelaxedLora {
  try {
    return new RelaxedLora(model, modules, info, seed, biases);
  } catch (err) {
    for (const m of modules) m.pair.dispose();
    for (const b of biases) b.bias.dispose();
    throw err;
  }
}

/** Adds sign * delta [rows of part] into the part's rows of linear.bias [out], in place. */
function addToBias(linear: Linear, part: OutputPart, delta: Tensor, sign: 1 | -1): void {
  noGrad(() => tidy(() => {
    const bias = linear.bias!;
    const full = reshape(placePart(reshape(delta, [1, delta.size]), part, linear.outFeatures), [linear.outFeatures]);
    bias.backend.kernels.binary(sign > 0 ? 'add' : 'sub', bias.storage, bias.shape, full.storage, full.shape, bias.storage, bias.shape);
  }));
}

/** U diag(S) / scaling: [rows, k]. */
function scaledU(U: Float32Array, S: Float64Array, rows: number, k: number, scaling: number): Float32Array {
  const out = new Float32Array(rows * k);
  for (let i = 0; i < rows; i++) for (let j = 0; j < k; j++) out[i * k + j] = (U[i * k + j] * S[j]) / scaling;
  return out;
}

/**
 * Residuals of a conversion computed from the two models: the original (untied, one block per
 * depth position) and the recursive one. residuals(l, path) = original blocks.l.path -
 * recursive blocks.schedule[l].path, each [out, in].
 */
export function residualsFrom(original: CausalLM, recursive: CausalLM): ResidualFn {
  if (original.depth !== recursive.depth) {
    throw new RrtError(`residualsFrom: the original runs ${original.depth} depth positions, the recursive model ${recursive.depth}`);
  }
  const orig = original.namedParameters(), rec = recursive.namedParameters();
  return (depth, path) => {
    const a = orig.get(`blocks.${original.schedule[depth]}.${path}`);
    const b = rec.get(`blocks.${recursive.schedule[depth]}.${path}`);
    if (!a || !b) throw new RrtError(`residualsFrom: no parameter "${path}" at depth ${depth}`);
    if (a.shape.join() !== b.shape.join()) throw new ShapeError(`residualsFrom: "${path}" at depth ${depth} is ${fmtShape(a.shape)} in the original, ${fmtShape(b.shape)} in the recursive model`);
    const x = a.dataSync(), y = b.dataSync();
    const data = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) data[i] = x[i] - y[i];
    return { shape: a.shape.slice(), data };
  };
}
