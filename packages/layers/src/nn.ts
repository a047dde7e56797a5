// Basic layers: Linear (with output hooks), Embedding, LayerNorm, RMSNorm, rotary embeddings.

import {
  type Backend, type Generator, ShapeError, Tensor, add, concat, fromValues, gather, getBackend, layerNorm, linear, mul, narrow,
  neg, randn, reshape, rmsNorm, zeros, ones,
} from '@rrt/tensor';
import { Module, type ForwardContext, type LinearHook } from './module.js';
import { ropeFrequencies, type RopeFrequencies, type RopeScaling } from './rope.js';

export interface InitOptions {
  rng?: Generator;
  backend?: Backend;
  /**
   * Standard deviation of the normal init of weights (default 0.02). 0 zero-fills them without
   * drawing a value: the loaders, which overwrite every weight, pass it (a 1B-parameter model
   * would otherwise spend seconds drawing numbers it throws away).
   */
  std?: number;
}

/** A [rows, cols] weight: normal(0, std), or zeros when std is 0 (nothing drawn). */
function initWeight(rows: number, cols: number, opts: InitOptions, backend: Backend | undefined): Tensor {
  const std = opts.std ?? 0.02;
  return std === 0 ? zeros([rows, cols], { backend }) : randn([rows, cols], { rng: opts.rng, std, backend });
}

/** y = x W^T + b. weight: [out, in] (PyTorch layout), bias: [out]. */
export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  /** Applied to the output in order; LoRA adapters attach here. */
  readonly hooks: LinearHook[] = [];
  /**
   * Replaces the product x W^T + b when set; hooks still run after. Depth-wise LoRA merged for
   * serving (RelaxedLora.mergeDepths) sets one that computes each row with its own depth
   * position's weights, reading ctx.depth.
   */
  product: ((x: Tensor, ctx: ForwardContext | undefined) => Tensor) | null = null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: InitOptions & { bias?: boolean } = {}) {
    super();
    const backend = opts.backend ?? getBackend();
    this.weight = this.param('weight', initWeight(outFeatures, inFeatures, opts, backend));
    this.bias = opts.bias ? this.param('bias', zeros([outFeatures], { backend })) : null;
  }

  /** x: [..., in] -> [..., out]. */
  forward(x: Tensor, ctx?: ForwardContext): Tensor {
    // One output tensor: the bias is the matmul's starting value.
    let y = this.product ? this.product(x, ctx) : linear(x, this.weight, this.bias);
    for (const hook of this.hooks) y = hook(x, y, ctx);
    return y;
  }
}

/**
 * Rows of an [n, ...] input grouped by depth, for per-row ctx.depth (its entries split the n rows
 * evenly, e.g. batch rows of T tokens each). `rows` index the input; `position[i]` is where row i
 * lands when the groups' outputs are concatenated in order, so gather(concat(outs), position)
 * restores row order. `runs` are the maximal stretches of consecutive rows at one depth, in order
 * (one per depth when the rows come sorted by depth, as a serving call's do).
 */
export function rowsByDepth(depth: Int32Array, n: number, where: string): {
  groups: { depth: number; rows: Int32Array }[];
  position: Int32Array;
  runs: { depth: number; rows: number }[];
} {
  if (depth.length === 0 || n % depth.length !== 0) throw new ShapeError(`${where}: ${depth.length} per-row depths for an input of ${n} rows`);
  const per = n / depth.length;
  const byDepth = new Map<number, number[]>();
  for (let r = 0; r < depth.length; r++) {
    const g = byDepth.get(depth[r]);
    if (g) g.push(r);
    else byDepth.set(depth[r], [r]);
  }
  const position = new Int32Array(n);
  let filled = 0;
  const groups = [...byDepth].map(([d, batchRows]) => {
    const rows = new Int32Array(batchRows.length * per);
    batchRows.forEach((br, i) => {
      for (let t = 0; t < per; t++) rows[i * per + t] = br * per + t;
    });
    for (let i = 0; i < rows.length; i++) position[rows[i]] = filled + i;
    filled += rows.length;
    return { depth: d, rows };
  });
  const runs: { depth: number; rows: number }[] = [];
  for (let r = 0; r < depth.length; r++) {
    const last = runs[runs.length - 1];
    if (last && last.depth === depth[r]) last.rows += per;
    else runs.push({ depth: depth[r], rows: per });
  }
  return { groups, position, runs };
}

/** Token embedding table [num, dim]. */
export class Embedding extends Module {
  weight: Tensor;

  constructor(readonly num: number, readonly dim: number, opts: InitOptions = {}) {
    super();
    this.weight = this.param('weight', initWeight(num, dim, opts, opts.backend));
  }

  /** ids (Int32Array, values in [0, num)) with shape idShape -> [...idShape, dim]. */
  forward(ids: ArrayLike<number>, idShape: number[]): Tensor {
    return gather(this.weight, ids, idShape);
  }
}

/** LayerNorm or RMSNorm over the last axis, as a config chooses. */
export class Norm extends Module {
  weight: Tensor;
  bias: Tensor | null;

  constructor(
    readonly kind: 'layernorm' | 'rmsnorm',
    readonly dim: number,
    readonly eps: number,
    /** RMSNorm scales by (1 + w) (Gemma); the weight then starts at 0. */
    readonly addOne = false,
    opts: InitOptions = {},
  ) {
    super();
    const backend = opts.backend ?? getBackend();
    this.weight = this.param('weight', addOne ? zeros([dim], { backend }) : ones([dim], { backend }));
    this.bias = kind === 'layernorm' ? this.param('bias', zeros([dim], { backend })) : null;
  }

  /** x: [..., dim] -> same shape. */
  forward(x: Tensor): Tensor {
    return this.kind === 'layernorm' ? layerNorm(x, this.weight, this.bias, this.eps) : rmsNorm(x, this.weight, this.eps, this.addOne);
  }
}

/**
 * Rotary position embedding (rotate-half convention), applied to the first `rotaryDim` dims of
 * each head (all of them unless partial, as in GPT-NeoX). `scaling` is the checkpoint's
 * rope_scaling (see rope.ts): linear, llama3 and yarn change the frequencies (yarn also scales
 * cos and sin); dynamic (NTK) changes them only for a call whose largest position is at or past
 * maxPositions, recomputed for that call's length (transformers recomputes per forward too).
 */
export class Rotary {
  private readonly cos: Tensor;
  private readonly sin: Tensor;

  constructor(
    readonly headDim: number,
    readonly rotaryDim: number,
    readonly base: number,
    readonly maxPositions: number,
    backend: Backend = getBackend(),
    readonly scaling: RopeScaling | null = null,
  ) {
    const { cos, sin } = rotaryTables(rotaryDim, ropeFrequencies(rotaryDim, base, scaling, maxPositions), 0, maxPositions);
    this.cos = fromValues(cos, [maxPositions, rotaryDim], backend).keep();
    this.sin = fromValues(sin, [maxPositions, rotaryDim], backend).keep();
  }

  /** cos and sin rows [n, 1, rotaryDim] of `positions`. */
  private tables(positions: Int32Array, backend: Backend): [Tensor, Tensor] {
    const n = positions.length, rd = this.rotaryDim;
    let last = -1;
    for (let i = 0; i < n; i++) last = Math.max(last, positions[i]);
    if (this.scaling?.type === 'dynamic' && last + 1 > this.maxPositions) {
      // NTK: frequencies for a sequence of last + 1 tokens, computed for just these rows.
      const freqs = ropeFrequencies(rd, this.base, this.scaling, this.maxPositions, last + 1);
      const cos = new Float32Array(n * rd), sin = new Float32Array(n * rd);
      for (let r = 0; r < n; r++) {
        const row = rotaryTables(rd, freqs, positions[r], 1);
        cos.set(row.cos, r * rd);
        sin.set(row.sin, r * rd);
      }
      return [fromValues(cos, [n, 1, rd], backend), fromValues(sin, [n, 1, rd], backend)];
    }
    return [reshape(gather(this.cos, positions), [n, 1, rd]), reshape(gather(this.sin, positions), [n, 1, rd])];
  }

  /** x: [N, H, headDim] where row n is at positions[n] -> same shape, rotated. */
  apply(x: Tensor, positions: Int32Array): Tensor {
    const rd = this.rotaryDim;
    const [cos, sin] = this.tables(positions, x.backend);
    const rot = rd === this.headDim ? x : narrow(x, 2, 0, rd);
    const x1 = narrow(rot, 2, 0, rd / 2), x2 = narrow(rot, 2, rd / 2, rd / 2);
    const rotated = add(mul(rot, cos), mul(concat([neg(x2), x1], 2), sin));
    if (rd === this.headDim) return rotated;
    return concat([rotated, narrow(x, 2, rd, this.headDim - rd)], 2);
  }

  dispose(): void {
    this.cos.dispose();
    this.sin.dispose();
  }
}

/** cos/sin of positions start..start+count-1, [count, dim] each, both halves of a row equal. */
function rotaryTables(dim: number, freqs: RopeFrequencies, start: number, count: number): { cos: Float32Array; sin: Float32Array } {
  const half = dim / 2;
  const cos = new Float32Array(count * dim), sin = new Float32Array(count * dim);
  const scale = freqs.attentionScaling;
  for (let r = 0; r < count; r++) {
    const p = start + r;
    for (let i = 0; i < half; i++) {
      // Angles in float32, as the reference implementations compute them.
      const angle = Math.fround(p * freqs.invFreq[i]);
      cos[r * dim + i] = cos[r * dim + i + half] = Math.cos(angle) * scale;
      sin[r * dim + i] = sin[r * dim + i + half] = Math.sin(angle) * scale;
    }
  }
  return { cos, sin };
}
