// LoRA on a Linear: y = W x + b + scaling * B A dropout(x), with A [r, in], B [out, r] and
// scaling = alpha / r (Hu et al. 2021). Attached through the Linear's output hooks, so the base
// layer is untouched until merge() folds scaling * B A into its weight.

import {
  type Backend, Generator, RrtError, ShapeError, type Tensor, add, affine, dropout as dropoutOp, fmtShape, fromValues, matmul, noGrad, reshape,
  tidy, zeros,
} from '@rrt/tensor';
import type { CausalLM, Linear, LinearHook, Trainable } from '@rrt/layers';
import type { LoraTarget } from './params.js';
import { type OutputPart, linearAt, partRowsCount, placePart, placeRows, targetSlots } from './targets.js';

/** Initial values of a pair; omitted ones get the usual init (A uniform, B zero). */
export interface LoraPairInit {
  /** [rank, in] row-major. */
  readonly A?: Float32Array;
  /** [out, rank] row-major. */
  readonly B?: Float32Array;
}

/**
 * One low-rank pair and its scaling: delta(x) = scaling * (x A^T) B^T. The default init is
 * PEFT's: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform with a = sqrt(5)), B = 0, so the
 * delta starts at zero while A's gradient is not.
 */
export class LoraPair {
  /** [rank, inFeatures], trainable. */
  readonly A: Tensor;
  /** [outFeatures, rank], trainable. */
  readonly B: Tensor;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly rank: number,
    readonly scaling: number,
    opts: LoraPairInit & { backend: Backend; rng?: Generator },
  ) {
    if (!Number.isSafeInteger(rank) || rank < 1) throw new RrtError(`LoRA: rank must be a positive integer, got ${rank}`);
    if (!Number.isFinite(scaling)) throw new RrtError(`LoRA: scaling must be finite, got ${scaling}`);
    const aSize = rank * inFeatures, bSize = outFeatures * rank;
    let a = opts.A;
    if (a && a.length !== aSize) throw new ShapeError(`LoRA: A needs ${aSize} values for [${rank}, ${inFeatures}], got ${a.length}`);
    if (opts.B && opts.B.length !== bSize) throw new ShapeError(`LoRA: B needs ${bSize} values for [${outFeatures}, ${rank}], got ${opts.B.length}`);
    if (!a) {
      const rng = opts.rng ?? new Generator(0);
      const bound = 1 / Math.sqrt(inFeatures);
      a = new Float32Array(aSize);
      for (let i = 0; i < aSize; i++) a[i] = (2 * rng.next() - 1) * bound;
    }
    this.A = fromValues(a, [rank, inFeatures], opts.backend).requireGrad().keep();
    this.B = (opts.B ? fromValues(opts.B, [outFeatures, rank], opts.backend) : zeros([outFeatures, rank], { backend: opts.backend })).requireGrad().keep();
    this.A.name = 'lora_A';
    this.B.name = 'lora_B';
  }

  /** x: [N, in] -> [N, out] = scaling * (dropout(x) A^T) B^T. */
  forward(x: Tensor, dropout = 0, rng?: Generator): Tensor {
    const xin = dropout > 0 ? dropoutOp(x, dropout, rng) : x;
    const d = matmul(matmul(xin, this.A, { transB: true }), this.B, { transB: true });
    return this.scaling === 1 ? d : affine(d, this.scaling, 0);
  }

  /** scaling * B A: [out, in], outside autograd. */
  deltaWeight(): Tensor {
    return noGrad(() => {
      const d = matmul(this.B, this.A);
      return this.scaling === 1 ? d : affine(d, this.scaling, 0);
    });
  }

  /** Number of scalar parameters: rank * (in + out). */
  get numParameters(): number {
    return this.A.size + this.B.size;
  }

  dispose(): void {
    this.A.dispose();
    this.B.dispose();
  }
}

/**
 * Adds sign * delta [partRows, in] into the rows of linear.weight [out, in] that `part` covers,
 * in place (the parameter keeps its identity, so optimizers holding it are unaffected).
 */
export function addToWeight(linear: Linear, part: OutputPart, delta: Tensor, sign: 1 | -1): void {
  noGrad(() => tidy(() => {
    const w = linear.weight;
    const rows = partRowsCount(part, linear.outFeatures);
    if (delta.shape[0] !== rows || delta.shape[1] !== linear.inFeatures) {
      throw new ShapeError(`LoRA merge: delta ${fmtShape(delta.shape)} does not fit ${rows} rows of a weight ${fmtShape(w.shape)}`);
    }
    const full = placeRows(delta, part, linear.outFeatures);
    w.backend.kernels.binary(sign > 0 ? 'add' : 'sub', w.storage, w.shape, full.storage, full.shape, w.storage, w.shape);
  }));
}

/** Adds sign * delta [rows of part] into the part's rows of linear.bias [out], in place. */
export function addToBias(linear: Linear, part: OutputPart, delta: Tensor, sign: 1 | -1): void {
  noGrad(() => tidy(() => {
    const bias = linear.bias!;
    const full = reshape(placePart(reshape(delta, [1, delta.size]), part, linear.outFeatures), [linear.outFeatures]);
    bias.backend.kernels.binary(sign > 0 ? 'add' : 'sub', bias.storage, bias.shape, full.storage, full.shape, bias.storage, bias.shape);
  }));
}

export interface LoraAdapterOptions extends LoraPairInit {
  /** Rank r (at most min(in, out) of the rows it writes). */
  readonly rank: number;
  /** scaling = alpha / rank (default alpha = rank: scaling 1). */
  readonly alpha?: number;
  /** Dropout on the adapter's input while the Linear is training (default 0). */
  readonly dropout?: number;
  /** Output rows it writes (default: all; a third of a fused qkv for q, k or v). */
  readonly part?: OutputPart;
  /** Init and dropout randomness (default: a generator seeded 0). */
  readonly rng?: Generator;
}

/**
 * A LoRA adapter on one Linear, attached on construction as one of its hooks. The same delta
 * applies wherever and at whatever depth the Linear runs (for per-depth adapters see relax()).
 */
export class LoraAdapter {
  readonly pair: LoraPair;
  readonly part: OutputPart;
  readonly alpha: number;
  readonly dropout: number;
  private readonly rng: Generator;
  private readonly hook: LinearHook;
  private isMerged = false;
  private isAttached = false;

  constructor(readonly linear: Linear, opts: LoraAdapterOptions) {
    this.part = opts.part ?? { kind: 'full' };
    const rows = partRowsCount(this.part, linear.outFeatures);
    const maxRank = Math.min(rows, linear.inFeatures);
    if (!Number.isSafeInteger(opts.rank) || opts.rank < 1 || opts.rank > maxRank) {
      throw new RrtError(`LoraAdapter: rank must be an integer in [1, ${maxRank}] for a [${rows}, ${linear.inFeatures}] weight, got ${opts.rank}`);
    }
    this.alpha = opts.alpha ?? opts.rank;
    this.dropout = checkDropout(opts.dropout ?? 0);
    this.rng = opts.rng ?? new Generator(0);
    this.pair = new LoraPair(linear.inFeatures, rows, opts.rank, this.alpha / opts.rank, {
      backend: linear.weight.backend, rng: this.rng, A: opts.A, B: opts.B,
    });
    this.hook = (x: Tensor, y: Tensor) => {
      if (this.isMerged) return y;
      const x2 = x.rank === 2 ? x : reshape(x, [-1, linear.inFeatures]);
      const d = placePart(this.pair.forward(x2, this.linear.training ? this.dropout : 0, this.rng), this.part, linear.outFeatures);
      return add(y, y.rank === 2 ? d : reshape(d, y.shape.slice()));
    };
    this.attach();
  }

  /** A: [rank, in]. */
  get A(): Tensor {
    return this.pair.A;
  }
  /** B: [partRows, rank]. */
  get B(): Tensor {
    return this.pair.B;
  }
  get rank(): number {
    return this.pair.rank;
  }
  get scaling(): number {
    return this.pair.scaling;
  }
  get merged(): boolean {
    return this.isMerged;
  }
  get attached(): boolean {
    return this.isAttached;
  }

  /** Re-attaches a removed adapter (a no-op when attached). */
  attach(): void {
    if (this.isAttached) return;
    this.linear.hooks.push(this.hook);
    this.isAttached = true;
  }

  /** Folds scaling * B A into the Linear's weight; the hook then passes outputs through. */
  merge(): void {
    if (this.isMerged) return;
    addToWeight(this.linear, this.part, this.pair.deltaWeight(), 1);
    this.isMerged = true;
  }

  /** Subtracts the merged delta again (up to float32 rounding). */
  unmerge(): void {
    if (!this.isMerged) return;
    addToWeight(this.linear, this.part, this.pair.deltaWeight(), -1);
    this.isMerged = false;
  }

  /**
   * Detaches the hook. A merged adapter stays merged in the weight unless `unmerge` is true
   * (default), so remove() restores the base layer.
   */
  remove(opts: { unmerge?: boolean } = {}): void {
    if (opts.unmerge ?? true) this.unmerge();
    const i = this.linear.hooks.indexOf(this.hook);
    if (i >= 0) this.linear.hooks.splice(i, 1);
    this.isAttached = false;
  }

  /** [A, B] for an optimizer. */
  parameters(): Tensor[] {
    return [this.pair.A, this.pair.B];
  }
}

/** Returns p when it is a dropout probability in [0, 1); throws otherwise. */
export function checkDropout(p: number): number {
  if (!(typeof p === 'number' && p >= 0 && p < 1)) throw new RrtError(`LoRA: dropout must be in [0, 1), got ${p}`);
  return p;
}

export interface AddLoraOptions {
  /** Rank r of every adapter, capped at min(in, out) per matrix. */
  readonly rank: number;
  /** scaling = alpha / r (default alpha = r). */
  readonly alpha?: number;
  /** Projections to adapt (default: all of q, k, v, o, gate, up, down the blocks have). */
  readonly targets?: readonly LoraTarget[];
  readonly dropout?: number;
  /** Seed of A's init and of dropout (default 0). */
  readonly seed?: number;
}

/** One adapter of a LoraSet. */
export interface BlockAdapter {
  /** Index into model.blocks. */
  readonly block: number;
  readonly target: LoraTarget;
  /** Block-relative path of the Linear ('attn.q', 'attn.qkv', 'mlp.down'). */
  readonly linearPath: string;
  readonly adapter: LoraAdapter;
}

/** The adapters addLora attached to a model. */
export class LoraSet {
  constructor(
    readonly model: CausalLM,
    readonly adapters: readonly BlockAdapter[],
    readonly options: { readonly rank: number; readonly alpha?: number; readonly dropout: number; readonly targets: readonly LoraTarget[] },
  ) {}

  /** Every A and B, for an optimizer. */
  parameters(): Tensor[] {
    return this.adapters.flatMap((a) => a.adapter.parameters());
  }
  /**
   * The adapters (and, with freezeBase: false, the model's own parameters) for the layers
   * Trainer. Ordinary LoRA fine-tuning freezes the base, so that is the default here.
   * Adapter names: lora.blocks.<b>.<target>.lora_A / lora_B.
   */
  trainable(opts: { freezeBase?: boolean } = {}): Trainable {
    const model = this.model;
    const named = (): Map<string, Tensor> => {
      const out = (opts.freezeBase ?? true) ? new Map<string, Tensor>() : model.namedParameters();
      for (const a of this.adapters) {
        out.set(`lora.blocks.${a.block}.${a.target}.lora_A`, a.adapter.A);
        out.set(`lora.blocks.${a.block}.${a.target}.lora_B`, a.adapter.B);
      }
      return out;
    };
    return { parameters: () => [...new Set(named().values())], namedParameters: named, train: (flag?: boolean) => model.train(flag) };
  }

  /** Scalar parameters of all adapters. */
  get numParameters(): number {
    return this.adapters.reduce((s, a) => s + a.adapter.pair.numParameters, 0);
  }
  merge(): void {
    for (const a of this.adapters) a.adapter.merge();
  }
  unmerge(): void {
    for (const a of this.adapters) a.adapter.unmerge();
  }
  /** Detaches (and unmerges) every adapter and frees A and B. */
  remove(): void {
    for (const a of this.adapters) {
      a.adapter.remove();
      a.adapter.pair.dispose();
    }
  }
}

/**
 * Ordinary LoRA fine-tuning: one adapter on each target projection of each block of `model`
 * (a block shared by several depth positions gets one adapter, used at all of them). A fused
 * qkv gets separate q, k and v adapters of rank r each. Train with `set.parameters()` (and the
 * model's own parameters frozen or not, as wanted).
 */
export function addLora(model: CausalLM, opts: AddLoraOptions): LoraSet {
  if (!Number.isSafeInteger(opts.rank) || opts.rank < 1) throw new RrtError(`addLora: rank must be a positive integer, got ${opts.rank}`);
  if (opts.alpha !== undefined && !(Number.isFinite(opts.alpha) && opts.alpha > 0)) throw new RrtError(`addLora: alpha must be a positive number, got ${opts.alpha}`);
  const dropout = checkDropout(opts.dropout ?? 0);
  const slots = targetSlots(model, opts.targets);
  const rng = new Generator(opts.seed ?? 0);
  const adapters: BlockAdapter[] = [];
  model.blocks.forEach((block, b) => {
    for (const slot of slots) {
      const rank = Math.min(opts.rank, slot.dIn, slot.dOut);
      const adapter = new LoraAdapter(linearAt(block, slot.linearPath), { rank, alpha: opts.alpha, dropout, part: slot.part, rng });
      adapters.push({ block: b, target: slot.target, linearPath: slot.linearPath, adapter });
    }
  });
  return new LoraSet(model, adapters, { rank: opts.rank, alpha: opts.alpha, dropout, targets: slots.map((s) => s.target) });
}
