// Module: a tree of named parameters and sub-modules, with train/eval state.

import { RrtError, type Tensor } from '@rrt/tensor';

/** What flows alongside activations through a model's forward pass. */
export interface ForwardContext {
  /**
   * Depth position of the block being run (0-based, < numLayers of the unrolled model). Per-depth
   * hooks (depth-wise LoRA, exit heads) read it. A number, or one depth per row of the batch when
   * rows at different depths share one call (continuous depth-wise batching).
   */
  depth: number | Int32Array;
  /** Absolute position of each token, [B*T] row-major (RoPE and learned positions read it). */
  positions: Int32Array;
  batch: number;
  seq: number;
  /**
   * Packed sequences: a call of B one-token rows [B, 1, D] that holds segments.length sequences
   * of segments[i] consecutive tokens each (summing to B), one KV cache per sequence. Attention
   * lets each token see its own sequence's cache and the tokens before it in its segment; every
   * other layer works per token. Serving prefills prompts of different lengths in one call so,
   * and lets decode tokens (one-token segments) share it.
   */
  segments?: Int32Array;
}

/** Changes a Linear's output: y' = hook(x, y, ctx). LoRA adapters are hooks. */
export type LinearHook = (x: Tensor, y: Tensor, ctx: ForwardContext | undefined) => Tensor;

export abstract class Module {
  training = true;
  private readonly ownParams = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();

  /** Registers (or replaces) a trainable parameter under a local name. */
  protected param(name: string, t: Tensor): Tensor {
    t.requiresGrad = true;
    t.keep();
    t.name = name;
    this.ownParams.set(name, t);
    return t;
  }

  /** Registers a child module under a local name. */
  protected child<M extends Module>(name: string, m: M): M {
    this.children.set(name, m);
    return m;
  }

  /** Replaces the tensor of an existing parameter (loading weights, tying). */
  setParam(name: string, t: Tensor): void {
    if (!this.ownParams.has(name)) throw new RrtError(`${this.constructor.name}: no parameter "${name}"`);
    this.param(name, t);
    (this as unknown as Record<string, Tensor>)[name] = t;
  }

  /** The module owning a dotted parameter path and the parameter's local name. */
  resolveParam(path: string): [Module, string] {
    const parts = path.split('.');
    let m: Module = this;
    let i = 0;
    while (i < parts.length - 1) {
      // Child names may contain dots ("blocks.3"): take the longest prefix that names a child.
      let found = false;
      for (let j = parts.length - 1; j > i; j--) {
        const c = m.children.get(parts.slice(i, j).join('.'));
        if (c) {
          m = c;
          i = j;
          found = true;
          break;
        }
      }
      if (!found) break;
    }
    const name = parts.slice(i).join('.');
    if (!m.ownParams.has(name)) throw new RrtError(`${this.constructor.name}: no parameter "${path}"`);
    return [m, name];
  }

  /** Every parameter with its dotted path ("layers.0.attn.q.weight"), tied ones once per path. */
  namedParameters(prefix = ''): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [n, t] of this.ownParams) out.set(prefix + n, t);
    for (const [n, m] of this.children) for (const [k, t] of m.namedParameters(`${prefix}${n}.`)) out.set(k, t);
    return out;
  }

  /** Distinct parameter tensors (a tied parameter appears once). */
  parameters(): Tensor[] {
    return [...new Set(this.namedParameters().values())];
  }

  /** Direct children by name. */
  namedChildren(): Map<string, Module> {
    return new Map(this.children);
  }

  /** Sets training mode on this module and every descendant. */
  train(flag = true): this {
    this.training = flag;
    for (const m of this.children.values()) m.train(flag);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Number of scalar parameters (tied ones counted once). */
  numParameters(): number {
    return this.parameters().reduce((s, p) => s + p.size, 0);
  }

  /** Frees every parameter (and its gradient). */
  dispose(): void {
    for (const p of this.parameters()) p.dispose();
  }
}

/**
 * Freezes `params` (requiresGrad = false): backward computes no gradient for them and an
 * optimizer over the rest leaves them as they are, e.g. a model's trunk while only its exit
 * heads train. Returns a function that restores each tensor's previous flag.
 */
export function freezeParameters(params: Iterable<Tensor>): () => void {
  const was = [...new Set(params)].map((t) => [t, t.requiresGrad] as const);
  for (const [t] of was) t.requiresGrad = false;
  return () => {
    for (const [t, flag] of was) t.requiresGrad = flag;
  };
}
