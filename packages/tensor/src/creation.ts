// Creation functions. Random ones take an optional Generator (default: the global one).

import { backendByName, getBackend, type Backend } from './backend.js';
import { RrtError, ShapeError, fmtShape } from './errors.js';
import { globalGenerator, type Generator } from './random.js';
import { Tensor, empty, fromValues, shapeSize } from './tensor.js';

export interface CreateOptions {
  backend?: Backend;
  /** Mark the result as a trainable leaf. */
  requiresGrad?: boolean;
}

export interface RandomOptions extends CreateOptions {
  rng?: Generator;
}

function finish(t: Tensor, opts: CreateOptions): Tensor {
  if (opts.requiresGrad) t.requiresGrad = true;
  return t;
}

function checkShape(op: string, shape: number[]): void {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) throw new ShapeError(`${op}: invalid shape ${JSON.stringify(shape)}`);
}

type Nested = number | Nested[];

function flatten(values: Nested, shape: number[], out: number[], depth: number): void {
  if (typeof values === 'number') {
    out.push(values);
    return;
  }
  if (shape.length <= depth) shape.push(values.length);
  else if (shape[depth] !== values.length) throw new ShapeError(`tensor: ragged nested array at depth ${depth} (${values.length} vs ${shape[depth]})`);
  for (const v of values) flatten(v, shape, out, depth + 1);
}

/** A tensor from a number, nested arrays, or flat values plus a shape. */
export function tensor(values: Nested | Float32Array | ArrayLike<number>, shape?: number[], opts: CreateOptions = {}): Tensor {
  let flat: Float32Array;
  let s: number[];
  if (values instanceof Float32Array || (typeof values === 'object' && !Array.isArray(values))) {
    flat = Float32Array.from(values as ArrayLike<number>);
    s = shape ?? [flat.length];
  } else {
    const out: number[] = [];
    const inferred: number[] = [];
    flatten(values as Nested, inferred, out, 0);
    flat = Float32Array.from(out);
    s = shape ?? inferred;
  }
  checkShape('tensor', s);
  if (shapeSize(s) !== flat.length) throw new ShapeError(`tensor: ${flat.length} values do not fill shape ${fmtShape(s)}`);
  return finish(fromValues(flat, s, opts.backend ?? getBackend()), opts);
}

/** A tensor filled with one value. */
export function full(shape: number[], value: number, opts: CreateOptions = {}): Tensor {
  checkShape('full', shape);
  const backend = opts.backend ?? getBackend();
  const t = empty(shape.slice(), backend);
  backend.kernels.fill(t.storage, value);
  return finish(t, opts);
}

export const zeros = (shape: number[], opts: CreateOptions = {}): Tensor => full(shape, 0, opts);
export const ones = (shape: number[], opts: CreateOptions = {}): Tensor => full(shape, 1, opts);
export const zerosLike = (t: Tensor): Tensor => full(t.shape.slice(), 0, { backend: t.backend });
export const onesLike = (t: Tensor): Tensor => full(t.shape.slice(), 1, { backend: t.backend });

/** [start, start + step, ...) up to end (exclusive), as a 1-D tensor. */
export function arange(start: number, end?: number, step = 1, opts: CreateOptions = {}): Tensor {
  if (end === undefined) [start, end] = [0, start];
  if (step === 0) throw new RrtError('arange: step must not be 0');
  const n = Math.max(0, Math.ceil((end - start) / step));
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = start + i * step;
  return finish(fromValues(v, [n], opts.backend ?? getBackend()), opts);
}

function random(shape: number[], opts: RandomOptions, draw: (rng: Generator) => number): Tensor {
  checkShape('random', shape);
  const rng = opts.rng ?? globalGenerator();
  const v = new Float32Array(shapeSize(shape));
  for (let i = 0; i < v.length; i++) v[i] = draw(rng);
  return finish(fromValues(v, shape.slice(), opts.backend ?? getBackend()), opts);
}

/** Normal(mean, std) values. */
export function randn(shape: number[], opts: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  const mean = opts.mean ?? 0, std = opts.std ?? 1;
  return random(shape, opts, (r) => mean + std * r.normal());
}

/** Uniform values in [low, high). */
export function rand(shape: number[], opts: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  const low = opts.low ?? 0, high = opts.high ?? 1;
  return random(shape, opts, (r) => low + (high - low) * r.next());
}

/** Uniform integers in [low, high), stored as float values. See randintArray for ids. */
export function randint(low: number, high: number, shape: number[], opts: RandomOptions = {}): Tensor {
  return random(shape, opts, (r) => r.int(low, high));
}

/** Uniform integers in [low, high) as an Int32Array (token ids). */
export function randintArray(low: number, high: number, n: number, rng: Generator = globalGenerator()): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(low, high);
  return out;
}

/** A copy of t on another backend. */
export function toBackend(t: Tensor, backend: Backend | string): Tensor {
  const b = typeof backend === 'string' ? backendByName(backend) : backend;
  if (b === t.backend) return t;
  const out = fromValues(t.dataSync(), t.shape.slice(), b);
  out.requiresGrad = t.requiresGrad && !t.gradNode;
  return out;
}
