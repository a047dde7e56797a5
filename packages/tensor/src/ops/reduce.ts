// Reductions over any axes, with keepdims. Non-contiguous axes are moved to the end first.

import { ShapeError, fmtShape } from '../errors.js';
import { Tensor, empty, fromValues, record, shapeSize } from '../tensor.js';
import { affine, add, equal, exp, log, mul, sub } from './elementwise.js';
import { broadcastTo, permute, reshape } from './shape.js';
import { normAxes } from './util.js';

interface Plan {
  /** x, possibly permuted so the reduced axes are contiguous. */
  src: Tensor;
  outer: number;
  r: number;
  inner: number;
  keptShape: number[];
  outShape: number[];
}

function plan(x: Tensor, axes: number[], keepdims: boolean): Plan {
  const keptShape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const outShape = keepdims ? keptShape : x.shape.filter((_, i) => !axes.includes(i));
  const contiguous = axes.every((a, i) => i === 0 || a === axes[i - 1] + 1);
  let src = x;
  let first = axes[0] ?? 0;
  let last = axes[axes.length - 1] ?? -1;
  if (!contiguous) {
    const rest = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
    src = permute(x, [...rest, ...axes]);
    first = rest.length;
    last = x.rank - 1;
  }
  const outer = shapeSize(src.shape.slice(0, first));
  const r = shapeSize(src.shape.slice(first, last + 1));
  const inner = shapeSize(src.shape.slice(last + 1));
  return { src, outer, r, inner, keptShape, outShape };
}

function run(op: 'sum' | 'max' | 'argmax', p: Plan): Tensor {
  const out = empty(p.outShape, p.src.backend);
  p.src.backend.kernels.reduce(op, p.src.storage, p.outer, p.r, p.inner, out.storage);
  return out;
}

/** Sum over axes (all by default). */
export function sum(x: Tensor, axes?: number | number[], keepdims = false): Tensor {
  const ax = normAxes('sum', axes, x.rank);
  const p = plan(x, ax, keepdims);
  const out = run('sum', p);
  return record(out, 'sum', [x], (g) => [broadcastTo(reshape(g, p.keptShape), x.shape.slice())]);
}

/** Mean over axes (all by default). */
export function mean(x: Tensor, axes?: number | number[], keepdims = false): Tensor {
  const ax = normAxes('mean', axes, x.rank);
  const n = ax.reduce((s, a) => s * x.shape[a], 1);
  return affine(sum(x, ax, keepdims), 1 / n, 0);
}

/** Maximum over axes; the gradient goes to the (first) arg max. */
export function max(x: Tensor, axes?: number | number[], keepdims = false): Tensor {
  const ax = normAxes('max', axes, x.rank);
  if (ax.some((a) => x.shape[a] === 0)) throw new ShapeError(`max: cannot reduce an empty axis of ${fmtShape(x.shape)}`);
  const p = plan(x, ax, keepdims);
  const out = run('max', p);
  return record(out, 'max', [x], (g) => {
    // One-hot of the arg max along the (flattened) reduced axes, in the permuted layout.
    const arg = reshape(run('argmax', { ...p, outShape: [p.outer, 1, p.inner] }), [p.outer, 1, p.inner]);
    const positions = fromValues(Float32Array.from({ length: p.r }, (_, i) => i), [1, p.r, 1], x.backend);
    const onehot = equal(positions, arg);
    const gl = mul(onehot, reshape(g, [p.outer, 1, p.inner]));
    const inPermuted = reshape(gl, p.src.shape.slice());
    if (p.src === x) return [inPermuted];
    const rest = x.shape.map((_, i) => i).filter((i) => !ax.includes(i));
    const perm = [...rest, ...ax];
    const inverse = new Array<number>(perm.length);
    perm.forEach((a, i) => (inverse[a] = i));
    return [permute(inPermuted, inverse)];
  });
}

/** Index of the maximum along one axis, as float values (no gradient). */
export function argmax(x: Tensor, axis = -1, keepdims = false): Tensor {
  const ax = normAxes('argmax', axis, x.rank);
  return run('argmax', plan(x, ax, keepdims));
}

/** Minimum over axes. */
export function min(x: Tensor, axes?: number | number[], keepdims = false): Tensor {
  return affine(max(affine(x, -1, 0), axes, keepdims), -1, 0);
}

/** log(sum(exp(x))) over axes, computed stably. */
export function logsumexp(x: Tensor, axes?: number | number[], keepdims = false): Tensor {
  const ax = normAxes('logsumexp', axes, x.rank);
  const m = max(x.detach(), ax, true);
  const s = log(sum(exp(sub(x, m)), ax, true));
  const out = add(s, m);
  return keepdims ? out : reshape(out, x.shape.filter((_, i) => !ax.includes(i)));
}

/** Variance over axes; correction 0 is the population variance (numpy's default), 1 unbiased. */
export function variance(x: Tensor, axes?: number | number[], keepdims = false, correction = 0): Tensor {
  const ax = normAxes('var', axes, x.rank);
  const n = ax.reduce((s, a) => s * x.shape[a], 1);
  const centered = sub(x, mean(x, ax, true));
  return affine(sum(mul(centered, centered), ax, keepdims), 1 / Math.max(n - correction, 1), 0);
}
