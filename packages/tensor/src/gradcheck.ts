// Gradient checking against central finite differences computed in float64 (ref64 backend).

import { backendByName, type Backend, type HostStorage } from './backend.js';
import { RrtError } from './errors.js';
import { Tensor, fromValues, noGrad, tidy } from './tensor.js';
import { mul } from './ops/elementwise.js';
import { sum } from './ops/reduce.js';

export interface GradcheckResult {
  /** Largest |analytic - numeric| / max(1, |numeric|) over all checked entries. */
  maxError: number;
  /** Per input: analytic gradient (from the backend under test) and numeric one (float64). */
  inputs: { analytic: Float64Array; numeric: Float64Array }[];
}

/**
 * Compares the gradients of sum(fn(...inputs) * probe) computed by autograd on `backend` with
 * central differences of the same function evaluated in float64 on `ref64`. `probe` is a fixed
 * random weighting so every output element matters.
 */
export function gradcheck(
  fn: (...inputs: Tensor[]) => Tensor,
  inputs: { shape: number[]; values: Float64Array | number[] }[],
  opts: { backend?: Backend | string; eps?: number; seed?: number } = {},
): GradcheckResult {
  const backend = typeof opts.backend === 'string' ? backendByName(opts.backend) : (opts.backend ?? backendByName('ref'));
  const ref64 = backendByName('ref64');
  const eps = opts.eps ?? 1e-6;
  const weighted = (b: Backend, vals: (Float64Array | number[])[], requiresGrad: boolean): { loss: Tensor; ins: Tensor[] } => {
    const ins = inputs.map((inp, i) => {
      const t = fromValues(Float32Array.from(vals[i]), inp.shape.slice(), b);
      if (b === ref64) (t.storage as HostStorage).data.set(vals[i] as ArrayLike<number>);
      t.requiresGrad = requiresGrad;
      return t;
    });
    const out = fn(...ins);
    const probe = probeValues(out.size, opts.seed ?? 7);
    const p = fromValues(Float32Array.from(probe), out.shape.slice(), b);
    if (b === ref64) (p.storage as HostStorage).data.set(probe);
    return { loss: dot(out, p), ins };
  };
  const base = inputs.map((i) => Float64Array.from(i.values));
  const analytic = tidy(() => {
    const { loss, ins } = weighted(backend, base, true);
    loss.backward();
    return ins.map((t) => {
      if (!t.grad) throw new RrtError('gradcheck: an input got no gradient');
      const g = Float64Array.from(t.grad.dataSync());
      t.zeroGrad();
      return g;
    });
  });
  const evalAt = (vals: Float64Array[]): number =>
    noGrad(() => tidy(() => (weighted(ref64, vals, false).loss.storage as HostStorage).data[0]));
  let maxError = 0;
  const results = base.map((vals, i) => {
    const numeric = new Float64Array(vals.length);
    for (let j = 0; j < vals.length; j++) {
      const plus = base.map((v) => Float64Array.from(v));
      const minus = base.map((v) => Float64Array.from(v));
      plus[i][j] += eps;
      minus[i][j] -= eps;
      numeric[j] = (evalAt(plus) - evalAt(minus)) / (2 * eps);
      const err = Math.abs(analytic[i][j] - numeric[j]) / Math.max(1, Math.abs(numeric[j]));
      if (!(err <= maxError)) maxError = Number.isNaN(err) ? Infinity : Math.max(maxError, err);
    }
    return { analytic: analytic[i], numeric };
  });
  return { maxError, inputs: results };
}

function probeValues(n: number, seed: number): Float64Array {
  const out = new Float64Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = 0.5 + s / 4294967296;
  }
  return out;
}

const dot = (a: Tensor, b: Tensor): Tensor => sum(mul(a, b));
