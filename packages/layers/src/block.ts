// The MLP and the decoder block (sequential pre-norm or parallel residual).

import { Tensor, add, gelu, mul, relu, reshape, silu } from '@rrt/tensor';
import type { Activation, ModelConfig } from './config.js';
import { Attention, type CacheWrites, type LayerKVCache } from './attention.js';
import { Module, type ForwardContext } from './module.js';
import { Linear, Norm, type InitOptions } from './nn.js';

function activate(kind: Activation, x: Tensor): Tensor {
  switch (kind) {
    case 'gelu': return gelu(x);
    case 'gelu_tanh': return gelu(x, 'tanh');
    case 'silu': return silu(x);
    case 'relu': return relu(x);
  }
}

/** down(act(gate(x)) * up(x)) when gated (SwiGLU / GeGLU), else down(act(up(x))). */
export class Mlp extends Module {
  gate: Linear | null;
  up: Linear;
  down: Linear;

  constructor(readonly cfg: ModelConfig, opts: InitOptions = {}) {
    super();
    const d = cfg.hiddenSize, ff = cfg.intermediateSize;
    this.gate = cfg.gatedMlp ? this.child('gate', new Linear(d, ff, { ...opts, bias: cfg.mlpBias })) : null;
    this.up = this.child('up', new Linear(d, ff, { ...opts, bias: cfg.mlpBias }));
    this.down = this.child('down', new Linear(ff, d, { ...opts, bias: cfg.mlpBias }));
  }

  /** x: [N, D] -> [N, D]. */
  forward(x: Tensor, ctx?: ForwardContext): Tensor {
    const up = this.up.forward(x, ctx);
    const h = this.gate ? mul(activate(this.cfg.activation, this.gate.forward(x, ctx)), up) : activate(this.cfg.activation, up);
    return this.down.forward(h, ctx);
  }
}

export class DecoderBlock extends Module {
  ln1: Norm;
  attn: Attention;
  ln2: Norm;
  mlp: Mlp;

  constructor(readonly cfg: ModelConfig, opts: InitOptions = {}) {
    super();
    this.ln1 = this.child('ln1', new Norm(cfg.norm, cfg.hiddenSize, cfg.normEps, cfg.rmsNormAddOne, opts));
    this.attn = this.child('attn', new Attention(cfg, opts));
    this.ln2 = this.child('ln2', new Norm(cfg.norm, cfg.hiddenSize, cfg.normEps, cfg.rmsNormAddOne, opts));
    this.mlp = this.child('mlp', new Mlp(cfg, opts));
  }

  /**
   * x: [B, T, D] -> [B, T, D]; caches: one per batch row when decoding incrementally; writes:
   * rows of block inputs [F, D] whose keys and values are only appended to their caches, in
   * the same projection (one-token calls; see CacheWrites).
   */
  forward(x: Tensor, ctx: ForwardContext, caches?: LayerKVCache[], writes?: CacheWrites): Tensor {
    const [B, T, D] = x.shape;
    const attnOut = this.attn.forward(this.ln1.forward(x), ctx, caches, writes && { ...writes, x: this.ln1.forward(writes.x) });
    if (this.cfg.parallelResidual) {
      const m = reshape(this.mlp.forward(reshape(this.ln2.forward(x), [B * T, D]), ctx), [B, T, D]);
      return add(add(x, attnOut), m);
    }
    const h = add(x, attnOut);
    const m = reshape(this.mlp.forward(reshape(this.ln2.forward(h), [B * T, D]), ctx), [B, T, D]);
    return add(h, m);
  }
}
