// Relaxed Recursive Transformer (PAPER.md section 2): each depth position l gets its own LoRA on
// every target projection of the shared block s(l) it runs,
//
//     h = W'_{s(l)} x + B_l A_l x,
//
// attached as one hook per shared Linear that picks the depth's pair from ctx.depth (a number,
// or one depth per batch row under continuous depth-wise batching).

import {
  Generator, RrtError, ShapeError, type Tensor, add, clone, concat, fmtShape, gather, noGrad, reshape, zeros,
} from '@rrt/tensor';
import { CausalLM, type Linear, type LinearHook, type Trainable } from '@rrt/layers';
import { withNumLayers } from '@rrt/recursive';
import { LoraPair, addToWeight, checkDropout } from './adapter.js';
import { countRelaxedParams, type LoraTarget, type RelaxedParamCount } from './params.js';
import { type SvdOptions, truncatedSvd } from './svd.js';
import { type OutputPart, type TargetSlot, linearAt, partRows, placeParts, targetSlots } from './targets.js';

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

/** Settings a RelaxedLora was made with (loaded ones: read from adapter_config.json). */
export interface RelaxedInfo {
  readonly init: 'svd' | 'zero' | 'loaded';
  readonly rank: number;
  readonly alpha?: number;
  readonly dropout: number;
  readonly targets: readonly LoraTarget[];
  readonly rankPattern?: { readonly attention?: number; readonly mlp?: number };
}

/** Hook functions of depth-wise LoRA, to refuse relaxing a Linear twice. */
const depthHooks = new WeakSet<LinearHook>();

/** One hook per shared Linear, holding that Linear's modules by depth position. */
class DepthHook {
  readonly byDepth = new Map<number, DepthLora[]>();
  readonly fn: LinearHook;

  constructor(readonly linear: Linear, readonly where: string, readonly block: number, private readonly schedule: readonly number[], dropout: number, rng: Generator) {
    this.fn = (x, y, ctx) => {
      if (!ctx) throw new RrtError(`depth-wise LoRA on ${where}: the Linear ran without a ForwardContext; run it through the model so ctx.depth picks the adapter`);
      const x2 = x.rank === 2 ? x : reshape(x, [-1, linear.inFeatures]);
      const p = linear.training ? dropout : 0;
      const delta = this.delta(x2, ctx.depth, p, rng);
      if (!delta) return y;
      return add(y, y.rank === 2 ? delta : reshape(delta, y.shape.slice()));
    };
  }

  private live(depth: number): DepthLora[] | null {
    if (this.schedule[depth] !== this.block) {
      // Rows routed through the wrong block would silently miss their own depth's adapters.
      throw new RrtError(`depth-wise LoRA on ${this.where}: called for depth ${depth}, which runs block ${this.schedule[depth] ?? 'none'}`);
    }
    const mods = this.byDepth.get(depth);
    if (!mods) return null;
    const live = mods.filter((m) => !m.merged);
    return live.length > 0 ? live : null;
  }

  /** x: [N, in] all at `depth` -> [N, out] or null (nothing to add). */
  private deltaAt(x: Tensor, depth: number, p: number, rng: Generator): Tensor | null {
    const mods = this.live(depth);
    if (!mods) return null;
    return placeParts(mods.map((m) => m.pair.forward(x, p, rng)), mods.map((m) => m.part), this.linear.outFeatures);
  }

  /** x: [N, in]; depth: one number, or one per batch row (rows of x split evenly among them). */
  private delta(x: Tensor, depth: number | Int32Array, p: number, rng: Generator): Tensor | null {
    if (typeof depth === 'number') return this.deltaAt(x, depth, p, rng);
    const n = x.shape[0];
    if (depth.length === 0 || n % depth.length !== 0) {
      throw new ShapeError(`depth-wise LoRA on ${this.where}: ${depth.length} per-row depths for an input of ${n} rows (${fmtShape(x.shape)})`);
    }
    const per = n / depth.length;
    const groups = new Map<number, number[]>();
    for (let r = 0; r < depth.length; r++) {
      const g = groups.get(depth[r]);
      if (g) g.push(r);
      else groups.set(depth[r], [r]);
    }
    if (groups.size === 1) return this.deltaAt(x, depth[0], p, rng);
    for (const d of groups.keys()) this.live(d);
    // Rows grouped by depth: one gather in, each group's own pair, one gather back to row order.
    const pieces: Tensor[] = [];
    const position = new Int32Array(n);
    let filled = 0, any = false;
    for (const [d, batchRows] of groups) {
      const idx = new Int32Array(batchRows.length * per);
      batchRows.forEach((br, i) => {
        for (let t = 0; t < per; t++) idx[i * per + t] = br * per + t;
      });
      for (let i = 0; i < idx.length; i++) position[idx[i]] = filled + i;
      filled += idx.length;
      const piece = this.live(d) ? this.deltaAt(gather(x, idx), d, p, rng) : null;
      if (piece) any = true;
      pieces.push(piece ?? zeros([idx.length, this.linear.outFeatures], { backend: x.backend }));
    }
    if (!any) return null;
    return gather(concat(pieces, 0), position);
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
  ) {
    const rng = new Generator(seed + 0x5eed);
    for (const m of modules) {
      if (model.schedule[m.depth] !== m.block) throw new RrtError(`RelaxedLora: module at depth ${m.depth} names block ${m.block}, the schedule runs block ${model.schedule[m.depth]}`);
      const key = `${m.block}:${m.linearPath}`;
      let hook = this.hooks.get(key);
      if (!hook) {
        const lin = linearAt(model.blocks[m.block], m.linearPath);
        const where = `blocks.${m.block}.${m.linearPath}`;
        if (lin.hooks.some((h) => depthHooks.has(h))) throw new RrtError(`RelaxedLora: ${where} already has depth-wise LoRA; remove() those adapters first`);
        hook = new DepthHook(lin, where, m.block, model.schedule, info.dropout, rng);
        this.hooks.set(key, hook);
      }
      const list = hook.byDepth.get(m.depth) ?? [];
      if (list.some((o) => o.target === m.target)) throw new RrtError(`RelaxedLora: two modules for ${m.target} at depth ${m.depth}`);
      list.push(m);
      hook.byDepth.set(m.depth, list);
    }
    for (const hook of this.hooks.values()) {
      depthHooks.add(hook.fn);
      hook.linear.hooks.push(hook.fn);
    }
  }

  /** Every A and B, for an optimizer. */
  parameters(): Tensor[] {
    return this.modules.flatMap((m) => [m.pair.A, m.pair.B]);
  }

  /**
   * The model's parameters plus the adapters', for the layers Trainer (the paper uptrains both);
   * with freezeBase only the adapters. Adapter names: lora.<depth>.<target>.lora_A / lora_B.
   */
  trainable(opts: { freezeBase?: boolean } = {}): Trainable {
    const model = this.model;
    const named = (): Map<string, Tensor> => {
      const out = opts.freezeBase ? new Map<string, Tensor>() : model.namedParameters();
      for (const m of this.modules) {
        out.set(`lora.${m.depth}.${m.target}.lora_A`, m.pair.A);
        out.set(`lora.${m.depth}.${m.target}.lora_B`, m.pair.B);
      }
      return out;
    };
    return {
      parameters: () => [...new Set(named().values())],
      namedParameters: named,
      train: (flag?: boolean) => model.train(flag),
    };
  }

  /** Scalar LoRA parameters: sum of rank * (in + out) over modules. */
  get numParameters(): number {
    return this.modules.reduce((s, m) => s + m.pair.numParameters, 0);
  }

  /** Modules, LoRA parameters in all and per depth position. */
  get counts(): { modules: number; lora: number; perDepth: number[] } {
    const perDepth = new Array<number>(this.model.depth).fill(0);
    for (const m of this.modules) perDepth[m.depth] += m.pair.numParameters;
    return { modules: this.modules.length, lora: this.numParameters, perDepth };
  }

  /**
   * The parameter accounting of the configuration (params.ts): recursive model plus LoRA as
   * configured by rank / rankPattern / targets. Equals numParameters for relax() handles.
   */
  paramCount(): RelaxedParamCount {
    const cfg = withNumLayers(this.model.cfg, this.model.depth);
    return countRelaxedParams(cfg, this.model.schedule, { rank: this.info.rank, targets: this.info.targets, rankPattern: this.info.rankPattern });
  }

  /** The module of a target at a depth position, if any. */
  module(depth: number, target: LoraTarget): DepthLora | undefined {
    return this.modules.find((m) => m.depth === depth && m.target === target);
  }

  /**
   * Folds into the weights every module whose shared block runs at one depth position only
   * (a non-recursive model, or MIDDLE schemes' unique first and last layers); modules of a
   * block shared by several depths cannot be merged and keep running as hooks. Logits do not
   * change either way. Returns the number of modules merged (see also mergeUnrolled()).
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
    return merged;
  }

  /** Takes merged deltas out of the weights again (up to float32 rounding). */
  unmerge(): void {
    for (const m of this.modules) {
      if (!m.merged) continue;
      addToWeight(linearAt(this.model.blocks[m.block], m.linearPath), m.part, m.pair.deltaWeight(), -1);
      m.merged = false;
    }
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
    });
    return out;
  }

  /** Unmerges, detaches every hook and frees A and B: the model is the plain recursive one again. */
  remove(): void {
    if (this.removed) return;
    this.unmerge();
    for (const hook of this.hooks.values()) {
      const i = hook.linear.hooks.indexOf(hook.fn);
      if (i >= 0) hook.linear.hooks.splice(i, 1);
    }
    this.hooks.clear();
    for (const m of this.modules) m.pair.dispose();
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
 * SVD init: R_l = residuals(l, path) [out, in]; U S V^T = truncatedSvd(R_l, r);
 * B_l = U diag(S) / scaling [out, r], A_l = V^T [r, in], so at init the model computes
 * W'_{s(l)} x + U_r S_r V_r^T x: at full rank exactly the original model.
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
  const rng = new Generator(seed);
  const backend = model.embed.weight.backend;
  const modules: DepthLora[] = [];
  for (let depth = 0; depth < model.depth; depth++) {
    const b = model.schedule[depth];
    const block = model.blocks[b];
    const residualCache = new Map<string, ResidualMatrix>();
    for (const slot of slots) {
      const requested = slot.group === 'attention' ? attnRank : mlpRank;
      const r = Math.min(requested, slot.dIn, slot.dOut);
      if (r === 0) continue;
      const alpha = opts.alpha ?? r;
      const scaling = alpha / r;
      let pair: LoraPair;
      if (opts.init === 'zero') {
        pair = new LoraPair(slot.dIn, slot.dOut, r, scaling, { backend, rng });
      } else {
        const lin = linearAt(block, slot.linearPath);
        let res = residualCache.get(slot.linearPath);
        if (!res) {
          res = checkResidual(opts.residuals!(depth, `${slot.linearPath}.weight`), depth, slot, lin);
          residualCache.set(slot.linearPath, res);
        }
        const data = slot.part.kind === 'full' ? res.data : takeRows(res.data, lin.inFeatures, partRows(slot.part, lin.outFeatures));
        const svd = truncatedSvd({ shape: [slot.dOut, slot.dIn], data }, r, { ...opts.svd, seed: seed + depth });
        pair = new LoraPair(slot.dIn, slot.dOut, r, scaling, { backend, A: svd.Vt, B: scaledU(svd.U, svd.S, slot.dOut, r, scaling) });
      }
      modules.push(new DepthLora(depth, b, slot.target, slot.linearPath, slot.part, pair, alpha));
    }
  }
  return attachOrDispose(model, modules, {
    init: opts.init, rank, alpha: opts.alpha, dropout, targets: slots.map((s) => s.target), rankPattern: opts.rankPattern,
  }, seed);
}

/** new RelaxedLora(...), freeing the modules' tensors if it refuses them. */
export function attachOrDispose(model: CausalLM, modules: DepthLora[], info: RelaxedInfo, seed: number): RelaxedLora {
  try {
    return new RelaxedLora(model, modules, info, seed);
  } catch (err) {
    for (const m of modules) m.pair.dispose();
    throw err;
  }
}

/** U diag(S) / scaling: [rows, k]. */
function scaledU(U: Float32Array, S: Float64Array, rows: number, k: number, scaling: number): Float32Array {
  const out = new Float32Array(rows * k);
  for (let i = 0; i < rows; i++) for (let j = 0; j < k; j++) out[i * k + j] = (U[i * k + j] * S[j]) / scaling;
  return out;
}

function checkResidual(res: ResidualMatrix, depth: number, slot: TargetSlot, lin: Linear): ResidualMatrix {
  const where = `residuals(${depth}, '${slot.linearPath}.weight')`;
  if (!res || !(res.data instanceof Float32Array) || !Array.isArray(res.shape)) throw new RrtError(`relax: ${where} must return { shape, data: Float32Array }`);
  if (res.shape.length !== 2 || res.shape[0] !== lin.outFeatures || res.shape[1] !== lin.inFeatures || res.data.length !== lin.outFeatures * lin.inFeatures) {
    throw new ShapeError(`relax: ${where} has shape ${fmtShape([...res.shape])} (${res.data.length} values), expected [${lin.outFeatures}, ${lin.inFeatures}]`);
  }
  return res;
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
