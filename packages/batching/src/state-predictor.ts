// A learned K/V fill for exited tokens. 'propagate' projects a deeper depth's keys and values
// from the exited hidden state itself, as if every skipped block had added nothing to the
// residual stream. A StatePredictor instead estimates the input of each skipped depth with a
// linear map fitted by ridge regression on teacher-forced text,
//   x_l ~ h + h W_(e,l) + b_(e,l)      (h: the hidden state after depth e - 1, the exit)
// and the fill projects K/V from that estimate. Depth e itself needs no map: its input is h.
// It costs one D x D product per skipped depth beyond the first, next to the fill's own K/V
// projections.

import { type Backend, RrtError, type Tensor, add, matmul, noGrad, reshape, sub, sum, tensor, tidy } from '@rrt/tensor';
import type { CausalLM } from '@rrt/layers';
import { resolveLayout } from './exits.js';
import type { LoopLayout, LoopLayoutOptions } from './loops.js';

/** The stored form of a StatePredictor (toJSON / StatePredictor.fromJSON). */
export interface StatePredictorJSON {
  format: 'rrt-state-predictor';
  version: 1;
  dim: number;
  /** One per (exit depth e, skipped depth l > e): w [dim * dim] row-major [dim, dim], b [dim]. */
  maps: { exitDepth: number; depth: number; w: number[]; b: number[] }[];
}

/** One fitted map, host arrays: w [dim * dim] row-major [dim, dim], b [dim]. */
export interface StateMap {
  exitDepth: number;
  depth: number;
  w: Float32Array;
  b: Float32Array;
}

/** Per (exit depth, skipped depth): x_l = h + h W + b. Build with fitStatePredictor or fromJSON. */
export class StatePredictor {
  readonly dim: number;
  private readonly maps = new Map<string, { w: Tensor; b: Tensor }>();

  /** backend: where to put the weights (default: the active backend); use the model's. */
  constructor(dim: number, maps: readonly StateMap[], backend?: Backend) {
    this.dim = dim;
    for (const m of maps) this.maps.set(`${m.exitDepth}:${m.depth}`, { w: tensor(m.w, [dim, dim], { backend }).keep(), b: tensor(m.b, [dim], { backend }).keep() });
  }

  /** The (exit depth, skipped depth) pairs it has maps for. */
  get pairs(): [number, number][] {
    return [...this.maps.keys()].map((k) => k.split(':').map(Number) as [number, number]);
  }

  /**
   * h: [n, D] hidden states of tokens that ran depths 0..exitDepth-1 -> the estimated input of
   * depth `depth` ([n, D]); h itself for depth == exitDepth.
   */
  predict(h: Tensor, exitDepth: number, depth: number): Tensor {
    if (depth === exitDepth) return h;
    const m = this.maps.get(`${exitDepth}:${depth}`);
    if (!m) {
      throw new RrtError(`StatePredictor: no map from exit depth ${exitDepth} to depth ${depth}; it was fitted for ${this.pairs.map(([e, l]) => `${e}->${l}`).join(', ')} (fit it on this model and loop layout)`);
    }
    return add(h, add(matmul(h, m.w), m.b));
  }

  toJSON(): StatePredictorJSON {
    return {
      format: 'rrt-state-predictor', version: 1, dim: this.dim,
      maps: [...this.maps].map(([key, m]) => {
        const [exitDepth, depth] = key.split(':').map(Number);
        return { exitDepth, depth, w: Array.from(m.w.dataSync()), b: Array.from(m.b.dataSync()) };
      }),
    };
  }

  /** backend: where to put the weights (default: the active backend); use the model's. */
  static fromJSON(json: StatePredictorJSON, backend?: Backend): StatePredictor {
    if (json?.format !== 'rrt-state-predictor' || json.version !== 1) {
      throw new RrtError(`StatePredictor.fromJSON: not an rrt state predictor (format ${JSON.stringify(json?.format)}, version ${JSON.stringify(json?.version)})`);
    }
    const D = json.dim;
    if (!Number.isInteger(D) || D < 1) throw new RrtError(`StatePredictor.fromJSON: dim must be an integer >= 1, got ${JSON.stringify(D)}`);
    if (!Array.isArray(json.maps)) throw new RrtError('StatePredictor.fromJSON: maps must be an array');
    const maps = json.maps.map((m, i): StateMap => {
      const ok = (v: unknown, n: number): v is number[] => Array.isArray(v) && v.length === n && v.every((x) => typeof x === 'number' && Number.isFinite(x));
      if (!Number.isInteger(m.exitDepth) || !Number.isInteger(m.depth) || m.exitDepth < 1 || m.depth <= m.exitDepth) {
        throw new RrtError(`StatePredictor.fromJSON: maps[${i}] needs integer depths with 1 <= exitDepth < depth, got ${m.exitDepth} and ${m.depth}`);
      }
      if (!ok(m.w, D * D) || !ok(m.b, D)) throw new RrtError(`StatePredictor.fromJSON: maps[${i}] needs w of ${D * D} and b of ${D} finite numbers`);
      return { exitDepth: m.exitDepth, depth: m.depth, w: Float32Array.from(m.w), b: Float32Array.from(m.b) };
    });
    return new StatePredictor(D, maps, backend);
  }

  /** Frees the maps' storage. */
  dispose(): void {
    for (const m of this.maps.values()) {
      m.w.dispose();
      m.b.dispose();
    }
    this.maps.clear();
  }
}

export interface FitStatePredictorOptions {
  layout?: LoopLayout | LoopLayoutOptions;
  /**
   * Ridge strength, relative to the mean variance of the hidden features (default 1e-3): the
   * fit solves (C_hh + ridge * mean(diag C_hh) I) W = C_h(x - h) on centred statistics.
   */
  ridge?: number;
}

/**
 * Fits the maps of every early exit of `model` (loop ends but the last) to every depth it
 * skips beyond the first, on teacher-forced `sequences` (token ids, every position one
 * example). The model is only read.
 */
export function fitStatePredictor(model: CausalLM, sequences: readonly ArrayLike<number>[], opts: FitStatePredictorOptions = {}): StatePredictor {
  const layout = resolveLayout(model, opts.layout);
  const D = model.cfg.hiddenSize, L = layout.depth;
  const ridge = opts.ridge ?? 1e-3;
  if (!(ridge >= 0)) throw new RrtError(`fitStatePredictor: ridge must be >= 0, got ${ridge}`);
  // Exits that skip a single depth need no map (its input is the exit state): such a model gets
  // an empty predictor, which fills exactly like 'propagate'.
  const exits = layout.ends.slice(0, -1).filter((e) => e < L - 1);
  if (sequences.length === 0) throw new RrtError('fitStatePredictor: no sequences to fit on');
  if (exits.length === 0) return new StatePredictor(D, []);
  // Sums over all positions, per exit depth e: n, sum h, sum h h^T; per skipped depth l: sum (x_l - h), sum h (x_l - h)^T.
  const stats = exits.map((e) => ({
    e, n: 0, sh: new Float64Array(D), shh: new Float64Array(D * D),
    targets: Array.from({ length: L - e - 1 }, (_, i) => ({ l: e + 1 + i, sy: new Float64Array(D), shy: new Float64Array(D * D) })),
  }));
  const accumulate = (into: Float64Array, t: Tensor): void => {
    const v = t.dataSync();
    for (let i = 0; i < v.length; i++) into[i] += v[i];
  };
  for (const seq of sequences) {
    if (seq.length < 1) throw new RrtError('fitStatePredictor: a sequence is empty');
    noGrad(() => tidy(() => {
      const T = seq.length;
      const { hidden } = model.forward(seq, [1, T], { hidden: true });
      for (const s of stats) {
        // hidden[d] is the input of depth d: the exit state is hidden[e], depth l's input hidden[l].
        const h = reshape(hidden![s.e], [T, D]);
        s.n += T;
        accumulate(s.sh, sum(h, 0));
        accumulate(s.shh, matmul(h, h, { transA: true }));
        for (const t of s.targets) {
          const y = sub(reshape(hidden![t.l], [T, D]), h);
          accumulate(t.sy, sum(y, 0));
          accumulate(t.shy, matmul(h, y, { transA: true }));
        }
      }
    }));
  }
  const maps: StateMap[] = [];
  for (const s of stats) {
    const mh = s.sh.map((v) => v / s.n);
    const C = new Float64Array(D * D);
    let trace = 0;
    for (let i = 0; i < D; i++) {
      for (let j = 0; j < D; j++) C[i * D + j] = s.shh[i * D + j] / s.n - mh[i] * mh[j];
      trace += C[i * D + i];
    }
    const lambda = Math.max(ridge * (trace / D), 1e-12);
    for (let i = 0; i < D; i++) C[i * D + i] += lambda;
    const chol = cholesky(C, D);
    for (const t of s.targets) {
      const my = t.sy.map((v) => v / s.n);
      const Chy = new Float64Array(D * D);
      for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) Chy[i * D + j] = t.shy[i * D + j] / s.n - mh[i] * my[j];
      const W = cholSolve(chol, Chy, D, D);
      // b = mean(y) - mean(h) W
      const b = new Float32Array(D);
      for (let j = 0; j < D; j++) {
        let acc = my[j];
        for (let i = 0; i < D; i++) acc -= mh[i] * W[i * D + j];
        b[j] = acc;
      }
      maps.push({ exitDepth: s.e, depth: t.l, w: Float32Array.from(W), b });
    }
  }
  return new StatePredictor(D, maps, model.embed.weight.backend);
}

/** Lower-triangular L with L L^T = A (A: n x n symmetric positive definite, row-major). */
function cholesky(A: Float64Array, n: number): Float64Array {
  const Lm = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * n + j];
      for (let k = 0; k < j; k++) s -= Lm[i * n + k] * Lm[j * n + k];
      if (i === j) {
        if (!(s > 0)) throw new RrtError('fitStatePredictor: the hidden states are degenerate (raise ridge)');
        Lm[i * n + i] = Math.sqrt(s);
      } else {
        Lm[i * n + j] = s / Lm[j * n + j];
      }
    }
  }
  return Lm;
}

/** X with (L L^T) X = B; B: n x m row-major. */
function cholSolve(Lm: Float64Array, B: Float64Array, n: number, m: number): Float64Array {
  const X = Float64Array.from(B);
  for (let c = 0; c < m; c++) {
    for (let i = 0; i < n; i++) {
      let s = X[i * m + c];
      for (let k = 0; k < i; k++) s -= Lm[i * n + k] * X[k * m + c];
      X[i * m + c] = s / Lm[i * n + i];
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = X[i * m + c];
      for (let k = i + 1; k < n; k++) s -= Lm[k * n + i] * X[k * m + c];
      X[i * m + c] = s / Lm[i * n + i];
    }
  }
  return X;
}
