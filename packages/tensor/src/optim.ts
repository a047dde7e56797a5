// Optimizers, gradient clipping and learning-rate schedules. Updates run in place on the
// parameters' storage, outside autograd, with fused kernels.

import { RrtError } from './errors.js';
import { Tensor, noGrad } from './tensor.js';
import { zerosLike } from './creation.js';
import { affine } from './ops/elementwise.js';

/** Global L2 norm of the gradients of params (those without a gradient are skipped). */
export function gradNorm(params: Iterable<Tensor>): number {
  let s = 0;
  for (const p of params) if (p.grad) s += p.backend.kernels.sumSquares(p.grad.storage);
  return Math.sqrt(s);
}

/**
 * Scales gradients so their global L2 norm is at most maxNorm. Returns the norm before clipping
 * (NaN or Infinity when a gradient is not finite: the caller decides whether to skip the step).
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number): number {
  const list = [...params];
  const norm = gradNorm(list);
  if (Number.isFinite(norm) && norm > maxNorm) {
    const scale = maxNorm / (norm + 1e-6);
    for (const p of list) if (p.grad) p.backend.kernels.affine(p.grad.storage, scale, 0, p.grad.storage);
  }
  return norm;
}

export interface Optimizer {
  /** Applies one update from the parameters' current gradients. */
  step(): void;
  /** Drops the parameters' gradients. */
  zeroGrad(): void;
  /** Learning rate used by the next step (schedules set it). */
  lr: number;
  /** Serialisable state (step count and per-parameter buffers, by parameter index). */
  stateDict(): OptimizerState;
  loadStateDict(state: OptimizerState): void;
  readonly params: readonly Tensor[];
}

export interface OptimizerState {
  kind: string;
  step: number;
  lr: number;
  /** buffers[name][i] holds the buffer of parameter i (null when not created yet). */
  buffers: Record<string, (Float32Array | null)[]>;
}

abstract class BaseOptimizer implements Optimizer {
  lr: number;
  protected t = 0;
  readonly params: readonly Tensor[];
  protected buffers: Record<string, (Tensor | null)[]> = {};

  constructor(params: Iterable<Tensor>, lr: number, bufferNames: string[]) {
    this.params = [...params];
    if (this.params.length === 0) throw new RrtError('optimizer: no parameters given');
    if (!(lr >= 0)) throw new RrtError(`optimizer: learning rate must be >= 0, got ${lr}`);
    this.lr = lr;
    for (const name of bufferNames) this.buffers[name] = this.params.map(() => null);
  }

  protected buffer(name: string, i: number): Tensor {
    let b = this.buffers[name][i];
    if (!b) {
      b = noGrad(() => zerosLike(this.params[i])).keep();
      this.buffers[name][i] = b;
    }
    return b;
  }

  abstract step(): void;

  zeroGrad(): void {
    for (const p of this.params) p.zeroGrad();
  }

  get stepCount(): number {
    return this.t;
  }

  stateDict(): OptimizerState {
    const buffers: OptimizerState['buffers'] = {};
    for (const [name, list] of Object.entries(this.buffers)) buffers[name] = list.map((b) => (b ? b.dataSync() : null));
    return { kind: this.constructor.name, step: this.t, lr: this.lr, buffers };
  }

  loadStateDict(state: OptimizerState): void {
    if (state.kind !== this.constructor.name) throw new RrtError(`optimizer: state is for ${state.kind}, this is ${this.constructor.name}`);
    this.t = state.step;
    this.lr = state.lr;
    for (const [name, list] of Object.entries(state.buffers)) {
      if (!this.buffers[name] || list.length !== this.params.length) throw new RrtError(`optimizer: state buffer "${name}" does not match ${this.params.length} parameters`);
      list.forEach((values, i) => {
        if (!values) return;
        if (values.length !== this.params[i].size) throw new RrtError(`optimizer: state "${name}" of parameter ${i} has ${values.length} values, parameter has ${this.params[i].size}`);
        const b = this.buffer(name, i);
        const src = b.backend.upload(values);
        b.backend.kernels.copy(src, b.storage);
        b.backend.free(src);
      });
    }
  }
}

export interface AdamWOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay (0.01 default; 0 gives Adam). */
  weightDecay?: number;
  /** Parameters that get no weight decay (norms, biases are a common choice). */
  noDecay?: Set<Tensor>;
}

/** AdamW: Adam with bias correction and decoupled weight decay (one fused kernel per parameter). */
export class AdamW extends BaseOptimizer {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  private noDecay: Set<Tensor>;

  constructor(params: Iterable<Tensor>, opts: AdamWOptions = {}) {
    super(params, opts.lr ?? 1e-3, ['m', 'v']);
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    this.noDecay = opts.noDecay ?? new Set();
  }

  step(gradScale = 1): void {
    this.t++;
    const bc1 = 1 - Math.pow(this.beta1, this.t), bc2 = 1 - Math.pow(this.beta2, this.t);
    this.params.forEach((p, i) => {
      if (!p.grad) return;
      p.backend.kernels.adamw(p.storage, p.grad.storage, this.buffer('m', i).storage, this.buffer('v', i).storage, {
        lr: this.lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps,
        weightDecay: this.noDecay.has(p) ? 0 : this.weightDecay,
        biasCorrection1: bc1, biasCorrection2: bc2, gradScale,
      });
    });
  }
}

export interface SgdOptions {
  lr?: number;
  momentum?: number;
  weightDecay?: number;
}

/** SGD with optional momentum (PyTorch's formulation: v = mu v + g; p -= lr v). */
export class SGD extends BaseOptimizer {
  momentum: number;
  weightDecay: number;

  constructor(params: Iterable<Tensor>, opts: SgdOptions = {}) {
    super(params, opts.lr ?? 1e-2, ['velocity']);
    this.momentum = opts.momentum ?? 0;
    this.weightDecay = opts.weightDecay ?? 0;
  }

  step(): void {
    this.t++;
    noGrad(() => {
      this.params.forEach((p, i) => {
        if (!p.grad) return;
        const k = p.backend.kernels;
        let g = p.grad;
        const tmp: Tensor[] = [];
        if (this.weightDecay) {
          const decayed = affine(p, this.weightDecay, 0);
          k.binary('add', decayed.storage, p.shape, g.storage, g.shape, decayed.storage, p.shape);
          g = decayed;
          tmp.push(decayed);
        }
        if (this.momentum) {
          const v = this.buffer('velocity', i);
          k.affine(v.storage, this.momentum, 0, v.storage);
          k.binary('add', v.storage, p.shape, g.storage, g.shape, v.storage, p.shape);
          g = v;
        }
        const step = affine(g, -this.lr, 0);
        k.binary('add', p.storage, p.shape, step.storage, p.shape, p.storage, p.shape);
        step.dispose();
        for (const t of tmp) t.dispose();
      });
    });
  }
}

/** A learning-rate schedule: the rate at a step (0-based). */
export type LrSchedule = (step: number) => number;

/** Always lr. */
export const constantLr = (lr: number): LrSchedule => () => lr;

/** Linear warmup from 0 to lr over warmup steps, then cosine decay to minLr at totalSteps. */
export function warmupCosine(lr: number, warmup: number, totalSteps: number, minLr = 0): LrSchedule {
  return (step) => {
    if (step < warmup) return (lr * (step + 1)) / warmup;
    const progress = Math.min(1, (step - warmup) / Math.max(1, totalSteps - warmup));
    return minLr + 0.5 * (lr - minLr) * (1 + Math.cos(Math.PI * progress));
  };
}

/**
 * Warmup-stable-decay: linear warmup, constant lr, then linear decay to minLr over the last
 * decayFraction of totalSteps.
 */
export function warmupStableDecay(lr: number, warmup: number, totalSteps: number, decayFraction = 0.2, minLr = 0): LrSchedule {
  const decayStart = Math.floor(totalSteps * (1 - decayFraction));
  return (step) => {
    if (step < warmup) return (lr * (step + 1)) / warmup;
    if (step < decayStart) return lr;
    const progress = Math.min(1, (step - decayStart) / Math.max(1, totalSteps - decayStart));
    return lr + (minLr - lr) * progress;
  };
}
