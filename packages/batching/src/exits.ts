// Early exits: the shared final norm and LM head read a prediction off the hidden state at the
// end of any loop. Optional per-exit low-rank adapters on the head let each exit specialise.

import { Generator, RrtError, type Tensor, add, matmul, randn, reshape, zeros } from '@rrt/tensor';
import { type CausalLM, Module } from '@rrt/layers';
import { type LoopLayout, type LoopLayoutOptions, loopLayout } from './loops.js';

export interface ExitHeadAdapterOptions {
  /** Rank of each exit's delta on the head (default 8). */
  rank?: number;
  /** Seeds A (B starts at zero, so the adapters start as a no-op). */
  seed?: number;
  /**
   * Whether the last exit (the model's own output) gets an adapter too (default true). With
   * false only the early exits specialise: trained with the model frozen, the full-depth output
   * stays exactly what it was.
   */
  final?: boolean;
}

/**
 * One LoRA delta on the LM head per exit: logits_b = head(norm(h)) + B_b A_b norm(h), with
 * A_b: [r, D] and B_b: [V, r] (B_b = 0 at init, so every exit starts as the shared head).
 * Train them with exitTrainingLoss by passing `adapters` and adding their parameters() to the
 * Trainer's model.
 */
export class ExitHeadAdapters extends Module {
  /** Exits of the layout they were made for. */
  readonly loops: number;
  /** Exits that have an adapter: loops, or loops - 1 without the final one. */
  readonly adapted: number;
  readonly rank: number;
  readonly a: Tensor[] = [];
  readonly b: Tensor[] = [];

  constructor(model: CausalLM, layout: LoopLayout | LoopLayoutOptions = {}, opts: ExitHeadAdapterOptions = {}) {
    super();
    const lay = resolveLayout(model, layout);
    this.loops = lay.loops;
    this.adapted = opts.final === false ? lay.loops - 1 : lay.loops;
    this.rank = opts.rank ?? 8;
    if (!Number.isInteger(this.rank) || this.rank < 1) throw new RrtError(`ExitHeadAdapters: rank must be an integer >= 1, got ${this.rank}`);
    const D = model.cfg.hiddenSize, V = model.cfg.vocabSize;
    const backend = model.embed.weight.backend;
    const rng = new Generator(opts.seed ?? 0);
    for (let l = 0; l < this.adapted; l++) {
      this.a.push(this.param(`a.${l}`, randn([this.rank, D], { rng, std: 1 / Math.sqrt(D), backend })));
      this.b.push(this.param(`b.${l}`, zeros([V, this.rank], { backend })));
    }
  }

  /** x: [N, D] (normed hidden) -> the delta [N, V] of exit `loop`. */
  delta(x: Tensor, loop: number): Tensor {
    return matmul(matmul(x, this.a[loop], { transB: true }), this.b[loop], { transB: true });
  }
}

export interface ExitLogitsOptions {
  adapters?: ExitHeadAdapters;
}

/**
 * Logits of the exit after loop `loop` (0-based): the model's final norm and LM head (shared by
 * all exits) on the hidden state at the end of that loop, plus that exit's adapter if given.
 * hidden: [..., D] -> [..., V].
 */
export function exitLogits(model: CausalLM, hidden: Tensor, loop: number, opts: ExitLogitsOptions = {}): Tensor {
  if (!Number.isInteger(loop) || loop < 0) throw new RrtError(`exitLogits: loop must be an integer >= 0, got ${loop}`);
  const ad = opts.adapters;
  if (ad && loop >= ad.loops) throw new RrtError(`exitLogits: loop ${loop} is out of range for adapters of ${ad.loops} exits`);
  if (!ad || loop >= ad.adapted) return model.logitsFrom(hidden);
  const normed = model.norm.forward(hidden);
  const logits = model.headLogits(normed);
  return add(logits, reshape(ad.delta(reshape(normed, [-1, model.cfg.hiddenSize]), loop), logits.shape));
}

export interface AllExitsOptions extends ExitLogitsOptions {
  layout?: LoopLayout | LoopLayoutOptions;
}

/**
 * Logits of every exit for a batch (teacher-forced, no cache). ids: B*T token ids with shape
 * [B, T] -> one [B, T, V] tensor per loop (index b = exit after loop b; the last is the model's
 * normal output). Records autograd unless called under noGrad.
 */
export function allExitLogits(model: CausalLM, ids: ArrayLike<number>, shape: [number, number], opts: AllExitsOptions = {}): Tensor[] {
  const layout = resolveLayout(model, opts.layout);
  const { hidden } = model.forward(ids, shape, { hidden: true });
  // hidden[l + 1] is the state after depth position l, so loop b's output is hidden[ends[b]].
  return layout.ends.map((end, b) => exitLogits(model, hidden![end], b, opts));
}

/** A LoopLayout as given, or derived from the model and options. */
export function resolveLayout(model: CausalLM, layout: LoopLayout | LoopLayoutOptions | undefined): LoopLayout {
  if (layout && 'depth' in layout && typeof layout.depth === 'number' && Array.isArray(layout.ends)) {
    const l = layout as LoopLayout;
    if (l.depth !== model.depth) throw new RrtError(`loop layout covers ${l.depth} depth positions, the model has ${model.depth}`);
    return l;
  }
  return loopLayout(model, (layout ?? {}) as LoopLayoutOptions);
}
