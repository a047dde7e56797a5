// A learned exit rule. For every exit but the last, a small MLP reads the token's hidden state
// after the final norm and scores whether that exit's top-1 prediction already equals the full
// depth's. It decides before the LM head runs: a token that continues costs D * H multiply-adds
// instead of the head's D * V, and the router sees more than the top probability does.

import {
  AdamW, type Backend, Generator, RrtError, type Tensor, abs, add, affine, argmax, exp, log, matmul, mul, noGrad, randn, relu, reshape, sigmoid, sub, sum,
  tensor, tidy, zeros,
} from '@rrt/tensor';
import { type CausalLM, Module } from '@rrt/layers';
import { type ExitHeadAdapters, exitLogits, resolveLayout } from './exits.js';
import type { LoopLayout, LoopLayoutOptions } from './loops.js';
import type { ExitPolicy } from './exit-policy.js';

/** The stored form of an ExitRouter (toJSON / ExitRouter.fromJSON). */
export interface ExitRouterJSON {
  format: 'rrt-exit-router';
  version: 1;
  dim: number;
  hidden: number;
  /** One per exit but the last: w1 [dim * hidden] row-major [dim, hidden], b1 [hidden], w2 [hidden], b2. */
  exits: { w1: number[]; b1: number[]; w2: number[]; b2: number }[];
}

export interface ExitRouterOptions {
  /** Width of the hidden layer (default 128). */
  hidden?: number;
  seed?: number;
  /** Where its weights live (default: the active backend); use the model's. */
  backend?: Backend;
}

/** Per exit b < loops - 1: score_b(x) = relu(x W1_b + b1_b) w2_b + b2_b, x = final-normed hidden [D]. */
export class ExitRouter extends Module {
  readonly dim: number;
  readonly hidden: number;
  /** Exits it scores (the model's loops - 1). */
  readonly exits: number;
  private readonly w1: Tensor[] = [];
  private readonly b1: Tensor[] = [];
  private readonly w2: Tensor[] = [];
  private readonly b2: Tensor[] = [];

  constructor(dim: number, exits: number, opts: ExitRouterOptions = {}) {
    super();
    this.dim = dim;
    this.exits = exits;
    this.hidden = opts.hidden ?? 128;
    if (!Number.isInteger(dim) || dim < 1) throw new RrtError(`ExitRouter: dim must be an integer >= 1, got ${dim}`);
    if (!Number.isInteger(exits) || exits < 1) throw new RrtError(`ExitRouter: a router needs at least one early exit (a model of 2 or more loops), got ${exits}`);
    if (!Number.isInteger(this.hidden) || this.hidden < 1) throw new RrtError(`ExitRouter: hidden must be an integer >= 1, got ${this.hidden}`);
    const rng = new Generator(opts.seed ?? 0);
    const backend = opts.backend;
    for (let b = 0; b < exits; b++) {
      this.w1.push(this.param(`w1.${b}`, randn([dim, this.hidden], { rng, std: 1 / Math.sqrt(dim), backend })));
      this.b1.push(this.param(`b1.${b}`, zeros([this.hidden], { backend })));
      this.w2.push(this.param(`w2.${b}`, randn([this.hidden, 1], { rng, std: 1 / Math.sqrt(this.hidden), backend })));
      this.b2.push(this.param(`b2.${b}`, zeros([1], { backend })));
    }
  }

  /** normed: [n, D] -> logits [n] of "exit `loop`'s top-1 equals the last exit's". */
  score(normed: Tensor, loop: number): Tensor {
    if (!Number.isInteger(loop) || loop < 0 || loop >= this.exits) throw new RrtError(`ExitRouter: exit ${loop} is out of range; this router scores exits 0..${this.exits - 1}`);
    const D = normed.shape[normed.rank - 1];
    if (D !== this.dim) throw new RrtError(`ExitRouter: hidden states have ${D} features, the router was built for ${this.dim}`);
    const x = reshape(normed, [-1, D]);
    const h = relu(add(matmul(x, this.w1[loop]), this.b1[loop]));
    return reshape(add(matmul(h, this.w2[loop]), this.b2[loop]), [x.shape[0]]);
  }

  /** normed: [n, D] -> the probability, per row, that stopping at exit `loop` keeps the top-1 token. */
  probabilities(normed: Tensor, loop: number): Float32Array {
    return noGrad(() => tidy(() => sigmoid(this.score(normed, loop)).dataSync()));
  }

  toJSON(): ExitRouterJSON {
    const arr = (t: Tensor): number[] => Array.from(t.dataSync());
    return {
      format: 'rrt-exit-router', version: 1, dim: this.dim, hidden: this.hidden,
      exits: this.w1.map((_, b) => ({ w1: arr(this.w1[b]), b1: arr(this.b1[b]), w2: arr(this.w2[b]), b2: this.b2[b].item() })),
    };
  }

  /** backend: where to put the weights (default: the active backend); use the model's. */
  static fromJSON(json: ExitRouterJSON, backend?: Backend): ExitRouter {
    if (json?.format !== 'rrt-exit-router' || json.version !== 1) throw new RrtError(`ExitRouter.fromJSON: not an rrt exit router (format ${JSON.stringify(json?.format)}, version ${JSON.stringify(json?.version)})`);
    const { dim, hidden, exits } = json;
    if (!Array.isArray(exits) || exits.length < 1) throw new RrtError('ExitRouter.fromJSON: no exits');
    const router = new ExitRouter(dim, exits.length, { hidden, backend });
    const set = (t: Tensor, values: unknown, what: string): void => {
      if (!Array.isArray(values) || values.length !== t.size || !values.every((v) => typeof v === 'number' && Number.isFinite(v))) {
        throw new RrtError(`ExitRouter.fromJSON: ${what} must be ${t.size} finite numbers`);
      }
      const src = t.backend.upload(Float32Array.from(values));
      t.backend.kernels.copy(src, t.storage);
      t.backend.free(src);
    };
    exits.forEach((e, b) => {
      set(router.w1[b], e.w1, `exits[${b}].w1`);
      set(router.b1[b], e.b1, `exits[${b}].b1`);
      set(router.w2[b], e.w2, `exits[${b}].w2`);
      set(router.b2[b], [e.b2], `exits[${b}].b2`);
    });
    return router;
  }
}

/**
 * Exit when the router's probability that this exit keeps the full depth's top-1 token reaches
 * `threshold` (in (0, 1)). Decides from the hidden state: the LM head runs only for tokens that
 * leave.
 */
export function routerExit(router: ExitRouter, threshold: number): ExitPolicy {
  if (!(threshold > 0 && threshold < 1)) throw new RrtError(`routerExit: threshold must be in (0, 1), got ${threshold}`);
  return {
    name: `router:${threshold}`,
    shouldExit: () => {
      throw new RrtError('routerExit decides from hidden states: call exitFromHidden(normed, loop, loops)');
    },
    exitFromHidden(normed, loop) {
      const p = router.probabilities(normed, loop);
      return Array.from(p, (v) => v >= threshold);
    },
  };
}

/**
 * How many sequences the CLI, the demo and the scripts fit the exit router and the state
 * predictor on (servedContinuations' default count). Fewer make an overconfident router: on the
 * demo's recursive model, fitted on 64 the tokens it gave p >= 0.95 (72% of them) kept the full
 * depth's token 88% of the time; fitted on 480, p >= 0.6 exited 80% and kept 89%.
 */
export const ROUTER_TRAINING_SEQUENCES = 480;

export interface TrainExitRouterOptions extends ExitRouterOptions {
  /** Optimizer steps (default 400), each on a random mini-batch of tokens. */
  steps?: number;
  /** Tokens per step (default 4096). */
  batch?: number;
  /** Default 3e-3. */
  lr?: number;
  layout?: LoopLayout | LoopLayoutOptions;
  adapters?: ExitHeadAdapters;
}

export interface ExitRouterTraining {
  router: ExitRouter;
  /** Token positions it learned from. */
  tokens: number;
  /** Per early exit: the share of tokens whose top-1 already equals the last exit's. */
  agreement: number[];
  /** Mean binary cross-entropy of the last step, per exit. */
  finalLoss: number[];
}

/**
 * Trains a router for `model` on teacher-forced text: every position of every sequence (token
 * ids, at least 2 each) is one example per early exit, labelled 1 when that exit's argmax equals
 * the last exit's. The model is only read (no gradients reach it).
 */
export function trainExitRouter(model: CausalLM, sequences: readonly ArrayLike<number>[], opts: TrainExitRouterOptions = {}): ExitRouterTraining {
  const layout = resolveLayout(model, opts.layout);
  const exits = layout.loops - 1;
  const D = model.cfg.hiddenSize;
  if (exits < 1) throw new RrtError(`trainExitRouter: the model has ${layout.loops} loop(s); a router needs an early exit`);
  if (sequences.length === 0) throw new RrtError('trainExitRouter: no sequences to learn from');
  // Per exit: the final-normed hidden state of every position ([T, D] per sequence) and its label.
  const feats: Float32Array[][] = Array.from({ length: exits }, () => []);
  const labels: number[][] = Array.from({ length: exits }, () => []);
  for (const seq of sequences) {
    if (seq.length < 1) throw new RrtError('trainExitRouter: a sequence is empty');
    noGrad(() => tidy(() => {
      const T = seq.length;
      const { hidden } = model.forward(seq, [1, T], { hidden: true });
      const lastTop = argmax(exitLogits(model, hidden![layout.ends[exits]], exits, { adapters: opts.adapters }), -1).dataSync();
      for (let b = 0; b < exits; b++) {
        const h = hidden![layout.ends[b]];
        const top = argmax(exitLogits(model, h, b, { adapters: opts.adapters }), -1).dataSync();
        feats[b].push(model.norm.forward(h).dataSync());
        for (let t = 0; t < T; t++) labels[b].push(top[t] === lastTop[t] ? 1 : 0);
      }
    }));
  }
  const backend = model.embed.weight.backend;
  const router = new ExitRouter(D, exits, { ...opts, backend });
  const N = labels[0].length;
  const steps = opts.steps ?? 400;
  const batch = Math.min(opts.batch ?? 4096, N);
  const rng = new Generator((opts.seed ?? 0) + 1);
  const optimizer = new AdamW(router.parameters(), { lr: opts.lr ?? 3e-3, weightDecay: 0 });
  const finalLoss = new Array<number>(exits).fill(NaN);
  const x = new Float32Array(batch * D), y = new Float32Array(batch);
  const rows = feats.map((parts) => {
    const all = new Float32Array(N * D);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return all;
  });
  for (let step = 0; step < steps; step++) {
    for (let b = 0; b < exits; b++) {
      const all = rows[b];
      for (let i = 0; i < batch; i++) {
        const j = Math.floor(rng.next() * N);
        x.set(all.subarray(j * D, (j + 1) * D), i * D);
        y[i] = labels[b][j];
      }
      finalLoss[b] = tidy(() => {
        const z = router.score(tensor(x, [batch, D], { backend }), b);
        // Binary cross-entropy on logits, stable form: max(z, 0) - y z + log(1 + exp(-|z|)).
        const perRow = add(sub(relu(z), mul(z, tensor(y, [batch], { backend }))), log(affine(exp(affine(abs(z), -1, 0)), 1, 1)));
        const loss = affine(sum(perRow), 1 / batch, 0);
        loss.backward(undefined, { freeIntermediates: true });
        return loss.item();
      });
    }
    noGrad(() => optimizer.step());
    optimizer.zeroGrad();
  }
  return { router, tokens: N, agreement: labels.map((l) => l.reduce((a, v) => a + v, 0) / l.length), finalLoss };
}
