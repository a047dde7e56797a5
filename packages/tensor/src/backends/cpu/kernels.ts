// The cpu backend's kernel table: wasm for the hot ops, the plain-JS kernels (over views of the
// same memory) for the rest (where, reduce max/argmax, general broadcasts, pow).

import type { AdamWStep, BinaryOp, HostStorage, Kernels, MatmulSpec, Storage, UnaryOp } from '../../backend.js';
import { RrtError } from '../../errors.js';
import { jsKernels } from '../js/kernels.js';
import type { WasmHeap } from './heap.js';
import type { AttendRunner } from './attend.js';
import type { MatmulRunner, PackedB } from './matmul.js';
import type { WeightPacks } from './packs.js';
import type { KernelExports } from './wasm.js';

/** What the kernels need from the backend. */
export interface KernelContext {
  ex: KernelExports;
  heap: WasmHeap;
  /** A scratch block of at least `bytes` (reused between calls; valid until the next call). */
  scratch(bytes: number): number;
  matmul: MatmulRunner;
  attend: AttendRunner;
  /** Packed weights (kernels that write a storage drop its packed form). */
  packs: WeightPacks;
}

/** Exports the worker threads may run, by index (see pool.ts). */
export const POOL_FUNCTIONS = ['matmulWork', 'attendWork'];

const UNARY_CODES: Record<UnaryOp, number> = {
  neg: 0, exp: 1, log: 2, sqrt: 3, rsqrt: 4, abs: 5, tanh: 6, sigmoid: 7, relu: 8,
  gelu: 9, gelu_tanh: 10, silu: 11, square: 12, sign: 13, recip: 14,
};
const BINARY_CODES: Record<BinaryOp, number> = {
  add: 0, sub: 1, mul: 2, div: 3, maximum: 4, minimum: 5, eq: 6, gt: 7, pow: -1,
};

const ptr = (s: Storage): number => (s as HostStorage).ptr;
const optPtr = (s: Storage | null): number => (s ? (s as HostStorage).ptr : 0);

// Operand layout over an output viewed as [rows, cols]: how binary() reads an operand.
const FULL = 0, SCALAR = 1, ROW = 2, COL = 3;

/**
 * Classifies a broadcast operand: ROW when it is all 1s up to its last broadcast axis (it
 * repeats over leading axes: cols = its size), COL when it is all 1s from its first broadcast
 * axis on (each value repeats along trailing axes: cols = n / its size). Returns the mode, or
 * -1 (a broadcast in the middle). `split` receives the cols it implies.
 */
function operandMode(shape: number[], size: number, outShape: number[], n: number, split: { cols: number }): number {
  if (size === n) return FULL;
  if (size === 1) return SCALAR;
  const rank = outShape.length;
  let first = -1, last = -1;
  for (let i = 0; i < rank; i++) {
    if (shape[i] !== outShape[i]) {
      if (first < 0) first = i;
      last = i;
    }
  }
  let row = true, col = true;
  for (let i = 0; i <= last; i++) if (shape[i] !== 1) { row = false; break; }
  if (row) { split.cols = size; return ROW; }
  for (let i = first; i < rank; i++) if (shape[i] !== 1) { col = false; break; }
  if (col) { split.cols = n / size; return COL; }
  return -1;
}

export function createWasmKernels(ctx: KernelContext): Kernels {
  const { ex, heap, packs } = ctx;
  const js = jsKernels;
  const splitA = { cols: 0 }, splitB = { cols: 0 };

  /**
   * A broadcast in the middle (RoPE's [n, H, d] x [n, 1, d]): over the leading axes both
   * operands share with the output, one wasm call per outer index on the trailing block, when
   * that block is a row/column broadcast. Returns false when it is not.
   */
  function binaryPerOuter(code: number, a: Storage, aShape: number[], b: Storage, bShape: number[], out: Storage, outShape: number[]): boolean {
    let p = 0;
    while (p < outShape.length - 1 && aShape[p] === outShape[p] && bShape[p] === outShape[p]) p++;
    if (p === 0) return false;
    const inner = outShape.slice(p), aIn = aShape.slice(p), bIn = bShape.slice(p);
    const nIn = inner.reduce((x, y) => x * y, 1), aSize = aIn.reduce((x, y) => x * y, 1), bSize = bIn.reduce((x, y) => x * y, 1);
    splitA.cols = 0; splitB.cols = 0;
    const am = operandMode(aIn, aSize, inner, nIn, splitA);
    const bm = am < 0 ? -1 : operandMode(bIn, bSize, inner, nIn, splitB);
    if (am < 0 || bm < 0 || (splitA.cols && splitB.cols && splitA.cols !== splitB.cols)) return false;
    const cols = splitA.cols || splitB.cols || nIn;
    const outer = out.size / nIn;
    for (let o = 0; o < outer; o++) ex.binary(code, ptr(a) + 4 * o * aSize, am, ptr(b) + 4 * o * bSize, bm, ptr(out) + 4 * o * nIn, nIn / cols, cols);
    return true;
  }

  /** Copies host integers into scratch (validated against [0, limit) unless equal to `skip`). */
  function uploadTargets(ids: Int32Array, rows: number, limit: number, skip: number, what: string): number {
    if (ids.length < rows) throw new RrtError(`${what}: ${rows} rows but ${ids.length} targets`);
    for (let r = 0; r < rows; r++) {
      const t = ids[r];
      if (t !== skip && !(t >= 0 && t < limit)) throw new RrtError(`${what}: index ${t} at row ${r} is outside [0, ${limit})`);
    }
    const p = ctx.scratch(rows * 4);
    heap.i32.set(rows === ids.length ? ids : ids.subarray(0, rows), p >>> 2);
    return p;
  }

  const permDims: number[] = [], permStrides: number[] = [];
  /** permute via the wasm odometer, after merging output dims that stay contiguous in x. */
  function permute(x: Storage, shape: number[], perm: number[], out: Storage): void {
    const rank = shape.length;
    if (out.size === 0) return;
    const inStrides = new Array<number>(rank);
    let st = 1;
    for (let d = rank - 1; d >= 0; d--) { inStrides[d] = st; st *= shape[d]; }
    permDims.length = 0; permStrides.length = 0;
    for (let i = 0; i < rank; i++) {
      const size = shape[perm[i]], stride = inStrides[perm[i]];
      if (size === 1) continue;
      const r = permDims.length;
      if (r > 0 && permStrides[r - 1] === stride * size) {
        permDims[r - 1] *= size;
        permStrides[r - 1] = stride;
      } else {
        permDims.push(size);
        permStrides.push(stride);
      }
    }
    const r = permDims.length;
    if (r === 0 || (r === 1 && permStrides[0] === 1)) return ex.copy(ptr(x), ptr(out), out.size);
    const p = ctx.scratch(r * 12);
    const i32 = heap.i32, i = p >>> 2;
    for (let d = 0; d < r; d++) { i32[i + d] = permDims[d]; i32[i + r + d] = permStrides[d]; }
    ex.permute(ptr(x), ptr(out), r, p, p + r * 4, p + r * 8);
  }

  // copyRegion's dims, innermost first: size and element strides in source and destination.
  const regionDims: number[] = [], srcSteps: number[] = [], dstSteps: number[] = [];
  /**
   * copyRegion in wasm (memory.copy per contiguous run), after dropping unit dims and merging
   * dims that are contiguous in both tensors: serving copies hundreds of thousands of small
   * regions (cache entries, rotary halves), where a JS loop over the shared heap was the cost.
   */
  function copyRegion(src: Storage, srcShape: number[], srcStart: number[], dst: Storage, dstShape: number[], dstStart: number[], region: number[], accumulate: boolean): void {
    packs.written(dst);
    const rank = region.length;
    let n = 1;
    for (let d = 0; d < rank; d++) n *= region[d];
    if (n === 0) return;
    regionDims.length = 0; srcSteps.length = 0; dstSteps.length = 0;
    let so = 0, doff = 0, sStride = 1, dStride = 1;
    for (let d = rank - 1; d >= 0; d--) {
      so += srcStart[d] * sStride;
      doff += dstStart[d] * dStride;
      const size = region[d], r = regionDims.length;
      if (r === 0) {
        // The innermost run, contiguous in both (size 1 included, so a run always exists).
        regionDims.push(size); srcSteps.push(1); dstSteps.push(1);
      } else if (size !== 1) {
        if (srcSteps[r - 1] * regionDims[r - 1] === sStride && dstSteps[r - 1] * regionDims[r - 1] === dStride) {
          regionDims[r - 1] *= size;
        } else {
          regionDims.push(size); srcSteps.push(sStride); dstSteps.push(dStride);
        }
      }
      sStride *= srcShape[d];
      dStride *= dstShape[d];
    }
    if (regionDims.length === 0) { regionDims.push(1); srcSteps.push(1); dstSteps.push(1); } // a scalar
    const r = regionDims.length;
    const p = ctx.scratch(r * 16);
    const i32 = heap.i32, i = p >>> 2;
    // Outermost first for the wasm odometer.
    for (let d = 0; d < r; d++) {
      const k = r - 1 - d;
      i32[i + d] = regionDims[k]; i32[i + r + d] = srcSteps[k]; i32[i + 2 * r + d] = dstSteps[k];
    }
    ex.copyRegion(ptr(src) + so * 4, ptr(dst) + doff * 4, r, p, p + r * 4, p + r * 8, p + r * 12, accumulate ? 1 : 0);
  }

  /** One wasm call for all runs: a table of [src, dst] byte pointers and byte strides, one memory.copy per block. */
  function copyRuns(
    src: Storage[], srcOffsets: Int32Array, srcStrides: Int32Array, dst: Storage[], dstOffsets: Int32Array, dstStrides: Int32Array,
    length: number, blocks: number,
  ): void {
    const n = src.length;
    if (packs.count !== 0) for (const d of dst) packs.written(d);
    if (length === 0 || n === 0 || blocks === 0) return;
    const p = ctx.scratch(n * 16);
    const i32 = heap.i32;
    // Pointers above 2 GiB wrap to negative int32s; the kernel reads them back as u32.
    for (let j = 0, r = p >>> 2; j < n; j++, r += 4) {
      i32[r] = ptr(src[j]) + srcOffsets[j] * 4;
      i32[r + 1] = ptr(dst[j]) + dstOffsets[j] * 4;
      i32[r + 2] = srcStrides[j] * 4;
      i32[r + 3] = dstStrides[j] * 4;
    }
    ex.copyRuns(p, n, length * 4, blocks);
  }

  const packed: PackedB = { ptr: 0, offsets: new Int32Array(1) };
  function matmul(a: Storage, b: Storage, out: Storage, spec: MatmulSpec): void {
    packs.written(out);
    packed.ptr = spec.transB && spec.batch === 1 && spec.bBatchOffsets[0] === 0 ? packs.address(b, spec.n, spec.k) : 0;
    ctx.matmul.run(ptr(a), ptr(b), ptr(out), spec, undefined, packed.ptr ? packed : undefined);
  }

  /** One matmul job for every group: each reads its own weight (offsets from the lowest weight's address). */
  function linearGroups(x: Storage, weights: Storage[], rows: Int32Array, k: number, n: number, out: Storage): void {
    let G = 0, base = Infinity, m = 0;
    for (let g = 0; g < weights.length; g++) {
      if (rows[g] === 0) continue;
      G++;
      base = Math.min(base, ptr(weights[g]));
      m = Math.max(m, rows[g]);
    }
    packs.written(out);
    if (G === 0 || n === 0) return;
    const aOffs = new Int32Array(G), bOffs = new Int32Array(G), groupRows = new Int32Array(G), cOffs = new Int32Array(G);
    // Packed forms, when every group's weight has one (offsets from the lowest).
    const packAt = new Float64Array(G);
    let packBase = Infinity, allPacked = true;
    let r0 = 0;
    for (let g = 0, j = 0; g < weights.length; g++) {
      if (rows[g] > 0) {
        aOffs[j] = r0 * k;
        bOffs[j] = (ptr(weights[g]) - base) / 4;
        groupRows[j] = rows[g];
        packAt[j] = packs.address(weights[g], n, k);
        if (packAt[j] === 0) allPacked = false;
        packBase = Math.min(packBase, packAt[j]);
        cOffs[j++] = r0 * n;
      }
      r0 += rows[g];
    }
    let packedGroups: PackedB | undefined;
    if (allPacked) {
      const offsets = new Int32Array(G);
      for (let j = 0; j < G; j++) offsets[j] = (packAt[j] - packBase) / 4;
      packedGroups = { ptr: packBase, offsets };
    }
    const spec = { batch: G, m, k, n, transA: false, transB: true, aBatchOffsets: aOffs, bBatchOffsets: bOffs, accumulate: false };
    ctx.matmul.run(ptr(x), base, ptr(out), spec, { rows: groupRows, cOffsets: cOffs }, packedGroups);
  }

  return {
    ...js,

    fill(out, value) {
      packs.written(out);
      ex.fill(ptr(out), value, out.size);
    },
    copy(src, out) {
      packs.written(out);
      ex.copy(ptr(src), ptr(out), out.size);
    },
    copyRegion,
    copyRuns,
    attendCaches: ctx.attend.run.bind(ctx.attend),
    linearGroups,

    unary(op, x, out) {
      ex.unary(UNARY_CODES[op], ptr(x), ptr(out), out.size);
    },
    unaryGrad(op, x, y, dy, dx) {
      ex.unaryGrad(UNARY_CODES[op], ptr(x), ptr(y), ptr(dy), ptr(dx), dx.size);
    },

    binary(op, a, aShape, b, bShape, out, outShape) {
      const code = BINARY_CODES[op];
      const n = out.size;
      if (code >= 0 && n > 0) {
        const as = a.size, bs = b.size;
        if (as === n && bs === n) return ex.binary(code, ptr(a), FULL, ptr(b), FULL, ptr(out), 1, n);
        if (as === n && bs === 1) return ex.binary(code, ptr(a), FULL, ptr(b), SCALAR, ptr(out), 1, n);
        if (as === 1 && bs === n) return ex.binary(code, ptr(a), SCALAR, ptr(b), FULL, ptr(out), 1, n);
        splitA.cols = 0; splitB.cols = 0;
        const am = operandMode(aShape, as, outShape, n, splitA);
        const bm = am < 0 ? -1 : operandMode(bShape, bs, outShape, n, splitB);
        if (am >= 0 && bm >= 0) {
          const cols = splitA.cols || splitB.cols || n;
          if (!(splitA.cols && splitB.cols && splitA.cols !== splitB.cols)) {
            return ex.binary(code, ptr(a), am, ptr(b), bm, ptr(out), n / cols, cols);
          }
        }
        if (binaryPerOuter(code, a, aShape, b, bShape, out, outShape)) return;
      }
      js.binary(op, a, aShape, b, bShape, out, outShape);
    },
    affine(x, scale, shift, out) {
      ex.affine(ptr(x), scale, shift, ptr(out), out.size);
    },
    powScalar(x, p, out) {
      if (p === 1) ex.copy(ptr(x), ptr(out), out.size);
      else if (p === 2) ex.unary(UNARY_CODES.square, ptr(x), ptr(out), out.size);
      else if (p === -1) ex.unary(UNARY_CODES.recip, ptr(x), ptr(out), out.size);
      else js.powScalar(x, p, out);
    },
    clamp(x, lo, hi, out) {
      ex.clamp(ptr(x), lo, hi, ptr(out), out.size);
    },

    matmul,

    reduce(op, x, outer, r, inner, out) {
      if (op !== 'sum') return js.reduce(op, x, outer, r, inner, out);
      const acc = inner > 1 ? ctx.scratch(inner * 8) : 0;
      ex.reduceSum(ptr(x), outer, r, inner, ptr(out), acc);
    },

    softmax(x, rows, cols, log, out) {
      ex.softmax(ptr(x), rows, cols, log ? 1 : 0, ptr(out));
    },
    causalSoftmax(x, rows, cols, scale, period, offset, out) {
      ex.causalSoftmax(ptr(x), rows, cols, scale, period, offset, ptr(out));
    },
    softmaxGrad(y, dy, rows, cols, log, dx) {
      ex.softmaxGrad(ptr(y), ptr(dy), rows, cols, log ? 1 : 0, ptr(dx));
    },
    layerNorm(x, w, b, rows, cols, eps, out, mean, rstd) {
      ex.layerNorm(ptr(x), optPtr(w), optPtr(b), rows, cols, eps, ptr(out), ptr(mean), ptr(rstd));
    },
    layerNormGrad(x, w, mean, rstd, dy, rows, cols, dx, dw, db) {
      ex.layerNormGrad(ptr(x), optPtr(w), ptr(mean), ptr(rstd), ptr(dy), rows, cols, ptr(dx), optPtr(dw), optPtr(db));
    },
    rmsNorm(x, w, rows, cols, eps, addOne, out, rstd) {
      ex.rmsNorm(ptr(x), optPtr(w), rows, cols, eps, addOne ? 1 : 0, ptr(out), ptr(rstd));
    },
    rmsNormGrad(x, w, rstd, dy, rows, cols, addOne, dx, dw) {
      ex.rmsNormGrad(ptr(x), optPtr(w), ptr(rstd), ptr(dy), rows, cols, addOne ? 1 : 0, ptr(dx), optPtr(dw));
    },
    crossEntropy(logits, targets, rows, vocab, ignoreIndex, loss, lse) {
      const t = uploadTargets(targets, rows, vocab, ignoreIndex, 'crossEntropy');
      ex.crossEntropy(ptr(logits), t, rows, vocab, ignoreIndex, ptr(loss), ptr(lse));
    },
    crossEntropyGrad(logits, targets, lse, dloss, rows, vocab, ignoreIndex, dlogits) {
      const t = uploadTargets(targets, rows, vocab, ignoreIndex, 'crossEntropyGrad');
      ex.crossEntropyGrad(ptr(logits), t, ptr(lse), ptr(dloss), rows, vocab, ignoreIndex, ptr(dlogits));
    },

    permute,
    gather(table, ids, cols, out) {
      if (ids.length === 0 || cols === 0) return;
      const p = uploadTargets(ids, ids.length, table.size / cols, NaN, 'gather');
      ex.gatherRows(ptr(table), p, ids.length, cols, ptr(out));
    },
    scatterAdd(dy, ids, cols, dtable) {
      packs.written(dtable);
      if (ids.length === 0 || cols === 0) return;
      const p = uploadTargets(ids, ids.length, dtable.size / cols, NaN, 'scatterAdd');
      ex.scatterAddRows(ptr(dy), p, ids.length, cols, ptr(dtable));
    },

    adamw(p, g, m, v, o: AdamWStep) {
      packs.written(p);
      ex.adamw(ptr(p), ptr(g), ptr(m), ptr(v), p.size, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, o.biasCorrection1, o.biasCorrection2, o.gradScale);
    },
    sumSquares(x) {
      return ex.sumSquares(ptr(x), x.size);
    },
  };
}
