// Elementwise ops with numpy broadcasting, and their gradients.

import type { BinaryOp, UnaryOp } from '../backend.js';
import { ShapeError, fmtShape } from '../errors.js';
import { Tensor, empty, record } from '../tensor.js';
import { reshape } from './shape.js';
import { sum } from './reduce.js';
import { backendOf, broadcastShapes, padShape, sameShape } from './util.js';

/** Sums a broadcast gradient back to `shape` (the shape of the input it flows to). */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const padded = padShape(shape, g.rank);
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) if (padded[i] === 1 && g.shape[i] !== 1) axes.push(i);
  const s = axes.length ? sum(g, axes, true) : g;
  return reshape(s, shape.slice());
}

function binary(op: BinaryOp, a: Tensor, b: Tensor, backward: ((g: Tensor, a: Tensor, b: Tensor, out: Tensor) => (Tensor | null)[]) | null): Tensor {
  const backend = backendOf(op, a, b);
  const outShape = broadcastShapes(op, a.shape, b.shape);
  const out = empty(outShape, backend);
  backend.kernels.binary(op, a.storage, padShape(a.shape, outShape.length), b.storage, padShape(b.shape, outShape.length), out.storage, outShape);
  if (!backward) return out;
  return record(out, op, [a, b], (g) => backward(g, a, b, out));
}

/** Elementwise out = x * scale + shift (autograd-aware). */
export function affine(x: Tensor, scale: number, shift: number): Tensor {
  const out = empty(x.shape.slice(), x.backend);
  x.backend.kernels.affine(x.storage, scale, shift, out.storage);
  return record(out, 'affine', [x], (g) => [scale === 1 ? g : affine(g, scale, 0)]);
}

/** a + b (tensor or scalar on either side), broadcasting. */
export function add(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === 'number') return add(b, a);
  if (typeof b === 'number') return affine(a, 1, b);
  return binary('add', a, b, (g) => [sumToShape(g, a.shape), sumToShape(g, b.shape)]);
}

/** a - b, broadcasting. */
export function sub(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof b === 'number') return affine(a as Tensor, 1, -b);
  if (typeof a === 'number') return affine(b, -1, a);
  return binary('sub', a, b, (g) => [sumToShape(g, a.shape), sumToShape(neg(g), b.shape)]);
}

/** a * b, broadcasting. */
export function mul(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === 'number') return mul(b, a);
  if (typeof b === 'number') return affine(a, b, 0);
  return binary('mul', a, b, (g) => [
    a.requiresGrad ? sumToShape(mul(g, b), a.shape) : null,
    b.requiresGrad ? sumToShape(mul(g, a), b.shape) : null,
  ]);
}

/** a / b, broadcasting. */
export function div(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof b === 'number') return affine(a as Tensor, 1 / b, 0);
  if (typeof a === 'number') return mul(unary('recip', b), a);
  return binary('div', a, b, (g, _a, _b, out) => [
    a.requiresGrad ? sumToShape(div(g, b), a.shape) : null,
    b.requiresGrad ? sumToShape(neg(div(mul(g, out), b)), b.shape) : null,
  ]);
}

/** Elementwise maximum; ties send the gradient to a. */
export function maximum(a: Tensor, b: Tensor | number): Tensor {
  const bt = typeof b === 'number' ? scalarLike(a, b) : b;
  return binary('maximum', a, bt, (g) => {
    const takeB = binary('gt', bt, a, null);
    const takeA = affine(takeB, -1, 1);
    return [a.requiresGrad ? sumToShape(mul(g, takeA), a.shape) : null, bt.requiresGrad ? sumToShape(mul(g, takeB), bt.shape) : null];
  });
}

/** Elementwise minimum; ties send the gradient to a. */
export function minimum(a: Tensor, b: Tensor | number): Tensor {
  return neg(maximum(neg(a), typeof b === 'number' ? -b : neg(b)));
}

/** 1 where a == b else 0 (no gradient). */
export function equal(a: Tensor, b: Tensor | number): Tensor {
  return binary('eq', a, typeof b === 'number' ? scalarLike(a, b) : b, null);
}

/** 1 where a > b else 0 (no gradient). */
export function greater(a: Tensor, b: Tensor | number): Tensor {
  return binary('gt', a, typeof b === 'number' ? scalarLike(a, b) : b, null);
}

function scalarLike(t: Tensor, value: number): Tensor {
  const s = empty([1], t.backend);
  t.backend.kernels.fill(s.storage, value);
  return s;
}

/** x ** p for a scalar exponent p. */
export function pow(x: Tensor, p: number): Tensor {
  const out = empty(x.shape.slice(), x.backend);
  x.backend.kernels.powScalar(x.storage, p, out.storage);
  return record(out, 'pow', [x], (g) => {
    if (p === 0) return [affine(g, 0, 0)];
    const d = empty(x.shape.slice(), x.backend);
    x.backend.kernels.powScalar(x.storage, p - 1, d.storage);
    return [mul(g, affine(d, p, 0))];
  });
}

/** min(max(x, lo), hi); the gradient flows where x was not clamped. */
export function clamp(x: Tensor, lo: number, hi: number): Tensor {
  if (lo > hi) throw new ShapeError(`clamp: lo (${lo}) is greater than hi (${hi})`);
  const out = empty(x.shape.slice(), x.backend);
  x.backend.kernels.clamp(x.storage, lo, hi, out.storage);
  return record(out, 'clamp', [x], (g) => [mul(g, binary('eq', out, x, null))]);
}

/** Picks a where mask != 0, else b, broadcasting all three. The mask gets no gradient. */
export function where(mask: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  const at = typeof a === 'number' ? scalarLike(mask, a) : a;
  const bt = typeof b === 'number' ? scalarLike(mask, b) : b;
  const backend = backendOf('where', mask, at, bt);
  const outShape = broadcastShapes('where', broadcastShapes('where', mask.shape, at.shape), bt.shape);
  const r = outShape.length;
  const out = empty(outShape, backend);
  backend.kernels.where(mask.storage, padShape(mask.shape, r), at.storage, padShape(at.shape, r), bt.storage, padShape(bt.shape, r), out.storage, outShape);
  return record(out, 'where', [at, bt], (g) => [
    at.requiresGrad ? sumToShape(where(mask, g, 0), at.shape) : null,
    bt.requiresGrad ? sumToShape(where(mask, 0, g), bt.shape) : null,
  ]);
}

/** Applies a unary kernel with its derivative kernel. */
export function unary(op: UnaryOp, x: Tensor): Tensor {
  const out = empty(x.shape.slice(), x.backend);
  x.backend.kernels.unary(op, x.storage, out.storage);
  return record(out, op, [x], (g) => {
    if (!sameShape(g.shape, x.shape)) throw new ShapeError(`${op} backward: gradient ${fmtShape(g.shape)} vs input ${fmtShape(x.shape)}`);
    const dx = empty(x.shape.slice(), x.backend);
    x.backend.kernels.unaryGrad(op, x.storage, out.storage, g.storage, dx.storage);
    return [dx];
  });
}

export const neg = (x: Tensor): Tensor => affine(x, -1, 0);
export const exp = (x: Tensor): Tensor => unary('exp', x);
export const log = (x: Tensor): Tensor => unary('log', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
export const rsqrt = (x: Tensor): Tensor => unary('rsqrt', x);
export const abs = (x: Tensor): Tensor => unary('abs', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
export const sigmoid = (x: Tensor): Tensor => unary('sigmoid', x);
export const relu = (x: Tensor): Tensor => unary('relu', x);
export const silu = (x: Tensor): Tensor => unary('silu', x);
export const square = (x: Tensor): Tensor => unary('square', x);
/** GELU: exact (erf) by default, or the tanh approximation. */
export const gelu = (x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor => unary(approximate === 'tanh' ? 'gelu_tanh' : 'gelu', x);
