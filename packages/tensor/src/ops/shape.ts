// Shape ops: views (reshape), copies (permute, slice, concat, pad) and index ops (gather).
// Slice, pad, concat and split all run on one kernel: copyRegion.

import type { Backend } from '../backend.js';
import { RrtError, ShapeError, fmtShape } from '../errors.js';
import { Tensor, empty, fromValues, record, shapeSize } from '../tensor.js';
import { backendOf, checkIds, normAxis, sameShape } from './util.js';

/** Same values, new shape (one dimension may be -1). Shares storage; gradients flow. */
export function reshape(x: Tensor, shape: number[]): Tensor {
  const target = inferShape(x, shape);
  if (sameShape(target, x.shape) && !x.requiresGrad) return x.view(target);
  const out = x.view(target);
  return record(out, 'reshape', [x], (g) => [g.view(x.shape.slice())]);
}

function inferShape(x: Tensor, shape: number[]): number[] {
  const out = shape.slice();
  const unknown = out.indexOf(-1);
  if (unknown >= 0) {
    const known = out.reduce((a, d, i) => (i === unknown ? a : a * d), 1);
    if (known === 0 || x.size % known !== 0) throw new ShapeError(`reshape: cannot infer -1 in ${fmtShape(shape)} for ${x.size} elements (from ${fmtShape(x.shape)})`);
    out[unknown] = x.size / known;
  }
  if (out.some((d) => !Number.isInteger(d) || d < 0) || shapeSize(out) !== x.size) {
    throw new ShapeError(`reshape: cannot view ${fmtShape(x.shape)} (${x.size} elements) as ${fmtShape(shape)}`);
  }
  return out;
}

/** Inserts a dimension of size 1 at axis. */
export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = axis < 0 ? axis + x.rank + 1 : axis;
  const s = x.shape.slice();
  s.splice(a, 0, 1);
  return reshape(x, s);
}

/** Removes dimensions of size 1 (all, or the given axis). */
export function squeeze(x: Tensor, axis?: number): Tensor {
  if (axis === undefined) return reshape(x, x.shape.filter((d) => d !== 1));
  const a = normAxis('squeeze', axis, x.rank);
  if (x.shape[a] !== 1) throw new ShapeError(`squeeze: axis ${axis} of ${fmtShape(x.shape)} has size ${x.shape[a]}, not 1`);
  return reshape(x, x.shape.filter((_, i) => i !== a));
}

/** numpy transpose: out.shape[i] = x.shape[perm[i]]. */
export function permute(x: Tensor, perm: number[]): Tensor {
  if (perm.length !== x.rank || new Set(perm.map((p) => normAxis('permute', p, x.rank))).size !== x.rank) {
    throw new ShapeError(`permute: ${fmtShape(perm)} is not a permutation of the ${x.rank} axes of ${fmtShape(x.shape)}`);
  }
  const p = perm.map((a) => normAxis('permute', a, x.rank));
  if (p.every((a, i) => a === i)) return reshape(x, x.shape.slice());
  const out = empty(p.map((a) => x.shape[a]), x.backend);
  x.backend.kernels.permute(x.storage, x.shape, p, out.storage);
  const inverse = new Array<number>(p.length);
  p.forEach((a, i) => (inverse[a] = i));
  return record(out, 'permute', [x], (g) => [permute(g, inverse)]);
}

/** Swaps two axes (default: the last two). */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const perm = Array.from({ length: x.rank }, (_, i) => i);
  const i = normAxis('transpose', a, x.rank), j = normAxis('transpose', b, x.rank);
  [perm[i], perm[j]] = [perm[j], perm[i]];
  return permute(x, perm);
}

/**
 * A block of x: for each axis, [start, end) (end exclusive, negatives count from the end).
 * Missing trailing axes are taken whole.
 */
export function slice(x: Tensor, ranges: ([number, number] | null)[]): Tensor {
  if (ranges.length > x.rank) throw new ShapeError(`slice: ${ranges.length} ranges for a tensor of rank ${x.rank}`);
  const start: number[] = [], region: number[] = [];
  for (let d = 0; d < x.rank; d++) {
    const n = x.shape[d];
    const r = ranges[d] ?? [0, n];
    const s = r[0] < 0 ? r[0] + n : r[0];
    const e = r[1] < 0 ? r[1] + n : r[1];
    if (!(Number.isInteger(s) && Number.isInteger(e) && s >= 0 && e <= n && s <= e)) {
      throw new ShapeError(`slice: range [${r[0]}, ${r[1]}) is out of bounds for axis ${d} of ${fmtShape(x.shape)}`);
    }
    start.push(s);
    region.push(e - s);
  }
  const out = empty(region.slice(), x.backend);
  x.backend.kernels.copyRegion(x.storage, x.shape, start, out.storage, region, region.map(() => 0), region, false);
  return record(out, 'slice', [x], (g) => {
    const dx = empty(x.shape.slice(), x.backend);
    x.backend.kernels.fill(dx.storage, 0);
    x.backend.kernels.copyRegion(g.storage, region, region.map(() => 0), dx.storage, x.shape, start, region, false);
    return [dx];
  });
}

/** Slice along one axis: x[..., start:end, ...]. */
export function narrow(x: Tensor, axis: number, start: number, length: number): Tensor {
  const a = normAxis('narrow', axis, x.rank);
  const ranges: ([number, number] | null)[] = x.shape.map(() => null);
  ranges[a] = [start, start + length];
  return slice(x, ranges);
}

/** Joins tensors along an existing axis. */
export function concat(ts: Tensor[], axis = 0): Tensor {
  if (ts.length === 0) throw new RrtError('concat: no tensors given');
  const backend = backendOf('concat', ...ts);
  const a = normAxis('concat', axis, ts[0].rank);
  const ref = ts[0].shape;
  for (const t of ts) {
    if (t.rank !== ref.length || t.shape.some((d, i) => i !== a && d !== ref[i])) {
      throw new ShapeError(`concat: shapes ${ts.map((u) => fmtShape(u.shape)).join(', ')} differ outside axis ${axis}`);
    }
  }
  const outShape = ref.slice();
  outShape[a] = ts.reduce((s, t) => s + t.shape[a], 0);
  const out = empty(outShape, backend);
  const offsets: number[] = [];
  let off = 0;
  for (const t of ts) {
    const start = outShape.map(() => 0);
    start[a] = off;
    offsets.push(off);
    backend.kernels.copyRegion(t.storage, t.shape, t.shape.map(() => 0), out.storage, outShape, start, t.shape, false);
    off += t.shape[a];
  }
  return record(out, 'concat', ts, (g) => ts.map((t, i) => (t.requiresGrad ? narrow(g, a, offsets[i], t.shape[a]) : null)));
}

/** Joins tensors of equal shape along a new axis. */
export function stack(ts: Tensor[], axis = 0): Tensor {
  if (ts.length === 0) throw new RrtError('stack: no tensors given');
  const a = axis < 0 ? axis + ts[0].rank + 1 : axis;
  return concat(ts.map((t) => unsqueeze(t, a)), a);
}

/** Splits along an axis into pieces of the given sizes, or into n equal pieces. */
export function split(x: Tensor, sizes: number | number[], axis = 0): Tensor[] {
  const a = normAxis('split', axis, x.rank);
  const n = x.shape[a];
  let parts: number[];
  if (typeof sizes === 'number') {
    if (n % sizes !== 0) throw new ShapeError(`split: axis ${axis} of ${fmtShape(x.shape)} (size ${n}) does not split into ${sizes} equal parts`);
    parts = new Array(sizes).fill(n / sizes);
  } else parts = sizes;
  if (parts.reduce((s, p) => s + p, 0) !== n) throw new ShapeError(`split: sizes ${fmtShape(parts)} do not add up to ${n} (axis ${axis} of ${fmtShape(x.shape)})`);
  let off = 0;
  return parts.map((p) => {
    const piece = narrow(x, a, off, p);
    off += p;
    return piece;
  });
}

/** Pads with a constant: pads[d] = [before, after] for each axis (missing axes unpadded). */
export function pad(x: Tensor, pads: [number, number][], value = 0): Tensor {
  const full = x.shape.map((_, d) => pads[d] ?? [0, 0]);
  if (full.some(([b, e]) => !(Number.isInteger(b) && Number.isInteger(e) && b >= 0 && e >= 0))) {
    throw new ShapeError(`pad: paddings must be non-negative integers, got ${JSON.stringify(pads)}`);
  }
  const outShape = x.shape.map((d, i) => d + full[i][0] + full[i][1]);
  const start = full.map(([b]) => b);
  const out = empty(outShape, x.backend);
  x.backend.kernels.fill(out.storage, value);
  x.backend.kernels.copyRegion(x.storage, x.shape, x.shape.map(() => 0), out.storage, outShape, start, x.shape, false);
  return record(out, 'pad', [x], (g) => [slice(g, start.map((s, i) => [s, s + x.shape[i]]))]);
}

/** Repeats size-1 dimensions to reach `shape` (copies). */
export function broadcastTo(x: Tensor, shape: number[]): Tensor {
  if (sameShape(x.shape, shape)) return x;
  const zeros = empty(shape, x.backend);
  x.backend.kernels.fill(zeros.storage, 0);
  // add() does the broadcasting and its gradient (a sum back to x's shape).
  return addBroadcast(zeros, x);
}

let addBroadcast: (a: Tensor, b: Tensor) => Tensor = () => {
  throw new RrtError('broadcastTo: ops not initialised');
};
/** @internal */
export function setShapeHelpers(h: { add: (a: Tensor, b: Tensor) => Tensor }): void {
  addBroadcast = h.add;
}

/**
 * Rows of a table: out[..., :] = table[ids[...], :]. ids are integers given as an Int32Array
 * or number[] with shape idShape (default [ids.length]); out is [...idShape, cols].
 * The gradient scatters and adds into the table's rows.
 */
export function gather(table: Tensor, ids: ArrayLike<number>, idShape?: number[]): Tensor {
  if (table.rank !== 2) throw new ShapeError(`gather: table must be 2-D [rows, cols], got ${fmtShape(table.shape)}`);
  const [rows, cols] = table.shape;
  const idx = checkIds('gather', ids, rows);
  const shape = idShape ?? [idx.length];
  if (shapeSize(shape) !== idx.length) throw new ShapeError(`gather: idShape ${fmtShape(shape)} does not hold ${idx.length} ids`);
  const out = empty([...shape, cols], table.backend);
  table.backend.kernels.gather(table.storage, idx, cols, out.storage);
  return record(out, 'gather', [table], (g) => {
    const dt = empty([rows, cols], table.backend);
    table.backend.kernels.fill(dt.storage, 0);
    table.backend.kernels.scatterAdd(g.storage, idx, cols, dt.storage);
    return [dt];
  });
}

/**
 * x [rows, cols] with the rows of src [ids.length, cols] added into rows ids (repeated ids
 * accumulate): out[ids[i], :] += src[i, :]. The inverse of gather, for updating a few rows.
 */
export function indexAdd(x: Tensor, ids: ArrayLike<number>, src: Tensor): Tensor {
  if (x.rank !== 2) throw new ShapeError(`indexAdd: x must be 2-D [rows, cols], got ${fmtShape(x.shape)}`);
  const [rows, cols] = x.shape;
  const idx = checkIds('indexAdd', ids, rows);
  if (src.rank !== 2 || src.shape[0] !== idx.length || src.shape[1] !== cols) {
    throw new ShapeError(`indexAdd: src must be [${idx.length}, ${cols}] (one row per id), got ${fmtShape(src.shape)}`);
  }
  const backend = backendOf('indexAdd', x, src);
  const out = empty([rows, cols], backend);
  backend.kernels.copy(x.storage, out.storage);
  backend.kernels.scatterAdd(src.storage, idx, cols, out.storage);
  return record(out, 'indexAdd', [x, src], (g) => [g, gather(g, idx)]);
}

/** Embedding lookup: table [V, D], ids [...] -> [..., D]. */
export const embedding = gather;

/** Selects entries along an axis: out = x.take(ids, axis). */
export function indexSelect(x: Tensor, axis: number, ids: ArrayLike<number>): Tensor {
  const a = normAxis('indexSelect', axis, x.rank);
  const moved = a === 0 ? x : transpose(x, 0, a);
  const rest = moved.shape.slice(1);
  const flat = reshape(moved, [moved.shape[0], shapeSize(rest)]);
  const picked = reshape(gather(flat, ids), [ids.length, ...rest]);
  return a === 0 ? picked : transpose(picked, 0, a);
}

/** Causal mask [T, S] of 0 (visible) and -inf (hidden): query t sees keys up to offset + t. */
export function causalMask(t: number, s = t, offset = s - t, backend?: Backend): Tensor {
  const m = new Float32Array(t * s);
  for (let i = 0; i < t; i++) for (let j = 0; j < s; j++) m[i * s + j] = j <= i + offset ? 0 : -Infinity;
  return fromValues(m, [t, s], backend);
}

/** A copy that owns its storage. */
export function clone(x: Tensor): Tensor {
  const out = empty(x.shape.slice(), x.backend);
  x.backend.kernels.copy(x.storage, out.storage);
  return record(out, 'clone', [x], (g) => [g]);
}
