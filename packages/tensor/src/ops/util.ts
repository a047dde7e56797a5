// Shape helpers shared by the op modules.

import type { Backend } from '../backend.js';
import { RrtError, ShapeError, fmtShape } from '../errors.js';
import type { Tensor } from '../tensor.js';

/** The backend all inputs live on; mixing backends is an error. */
export function backendOf(op: string, ...ts: Tensor[]): Backend {
  const b = ts[0].backend;
  for (let i = 1; i < ts.length; i++) {
    if (ts[i].backend !== b) throw new RrtError(`${op}: inputs are on different backends (${b.name} and ${ts[i].backend.name}); move them with toBackend()`);
  }
  return b;
}

/** numpy broadcasting of two shapes. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new ShapeError(`${op}: shapes ${fmtShape(a)} and ${fmtShape(b)} cannot be broadcast (dimension ${i} of the result: ${da} vs ${db})`);
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Left-pads a shape with ones to `rank`. */
export function padShape(shape: readonly number[], rank: number): number[] {
  const out = new Array<number>(rank - shape.length).fill(1);
  return out.concat(shape);
}

/** Normalises an axis (negative counts from the end) and checks its range. */
export function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new ShapeError(`${op}: axis ${axis} is out of range for a tensor of rank ${rank}`);
  return a;
}

/** Normalised, sorted, de-duplicated axes; undefined means all axes. */
export function normAxes(op: string, axes: number | number[] | undefined, rank: number): number[] {
  if (axes === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = typeof axes === 'number' ? [axes] : axes;
  const set = new Set(list.map((a) => normAxis(op, a, rank)));
  return [...set].sort((x, y) => x - y);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Checks an integer id array against [0, limit). */
export function checkIds(op: string, ids: ArrayLike<number>, limit: number): Int32Array {
  const out = ids instanceof Int32Array ? ids : Int32Array.from(ids);
  for (let i = 0; i < out.length; i++) {
    const v = out[i];
    if (!(v >= 0 && v < limit)) throw new RrtError(`${op}: index ${v} at position ${i} is out of range [0, ${limit})`);
  }
  return out;
}
