// Batched matrix multiply with broadcast batch dimensions and transposed operands
// (transposes are read in place by the kernel, never copied).

import type { Storage } from '../backend.js';
import { RrtError, ShapeError, fmtShape } from '../errors.js';
import { Tensor, empty, isGradEnabled, record, shapeSize } from '../tensor.js';
import { add, sumToShape } from './elementwise.js';
import { concat, gather, narrow, reshape } from './shape.js';
import { backendOf, broadcastShapes, sameShape } from './util.js';

export interface MatmulOptions {
  /** Use a's last two axes transposed. */
  transA?: boolean;
  /** Use b's last two axes transposed. */
  transB?: boolean;
}

/** The offsets of an unbatched product: one matrix at element 0 (read-only, shared by all calls). */
const SINGLE = new Int32Array(1);

/** Element offsets of each broadcast batch into a tensor with batch shape `batch`. */
function batchOffsets(batch: number[], outBatch: number[], matSize: number): Int32Array {
  if (outBatch.length === 0) return SINGLE;
  const n = shapeSize(outBatch);
  const offs = new Int32Array(n);
  const rank = outBatch.length;
  const padded = new Array<number>(rank - batch.length).fill(1).concat(batch);
  const strides = new Array<number>(rank).fill(0);
  let s = matSize;
  for (let i = rank - 1; i >= 0; i--) {
    strides[i] = padded[i] === 1 ? 0 : s;
    s *= padded[i];
  }
  const idx = new Array<number>(rank).fill(0);
  for (let t = 0; t < n; t++) {
    let o = 0;
    for (let d = 0; d < rank; d++) o += idx[d] * strides[d];
    offs[t] = o;
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d] < outBatch[d]) break;
      idx[d] = 0;
    }
  }
  return offs;
}

/**
 * a: [..., m, k] (or [..., k, m] with transA), b: [..., k, n] (or [..., n, k] with transB)
 * -> [...broadcast batch, m, n]. Both inputs need rank >= 2.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false, transB = opts.transB ?? false;
  const backend = backendOf('matmul', a, b);
  if (a.rank < 2 || b.rank < 2) throw new ShapeError(`matmul: inputs need rank >= 2, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`);
  const [ar, ac] = a.shape.slice(-2), [br, bc] = b.shape.slice(-2);
  const m = transA ? ac : ar, k = transA ? ar : ac;
  const kb = transB ? bc : br, n = transB ? br : bc;
  if (k !== kb) {
    throw new ShapeError(`matmul: inner dimensions differ: ${fmtShape(a.shape)}${transA ? 'ᵀ' : ''} x ${fmtShape(b.shape)}${transB ? 'ᵀ' : ''} (${k} vs ${kb})`);
  }
  const aBatch = a.shape.slice(0, -2), bBatch = b.shape.slice(0, -2);
  const outBatch = broadcastShapes('matmul', aBatch, bBatch);
  const batch = shapeSize(outBatch);
  const out = empty([...outBatch, m, n], backend);
  backend.kernels.matmul(a.storage, b.storage, out.storage, {
    batch, m, k, n, transA, transB,
    aBatchOffsets: batchOffsets(aBatch, outBatch, m * k),
    bBatchOffsets: batchOffsets(bBatch, outBatch, k * n),
    accumulate: false,
  });
  return record(out, 'matmul', [a, b], (g) => {
    let da: Tensor | null = null, db: Tensor | null = null;
    if (a.requiresGrad) {
      da = transA ? matmul(b, g, { transA: transB, transB: true }) : matmul(g, b, { transB: !transB });
      da = reduceBatch(da, a.shape);
    }
    if (b.requiresGrad) {
      db = transB ? matmul(g, a, { transA: true, transB: transA }) : matmul(a, g, { transA: !transA });
      db = reduceBatch(db, b.shape);
    }
    return [da, db];
  });
}

function reduceBatch(g: Tensor, shape: number[]): Tensor {
  if (g.rank === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const s = sumToShape(g, [...new Array(g.rank - shape.length).fill(1), ...shape]);
  return reshape(s, shape.slice());
}

/**
 * A fully connected layer: x [..., in] -> x W^T + b: [..., out] with weight [out, in] and bias
 * [out] (or null). With a bias, the output starts as the broadcast bias and the product is
 * accumulated into it, so no separate matmul result is kept (half the activation memory of
 * matmul + add).
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const backend = bias ? backendOf('linear', x, weight, bias) : backendOf('linear', x, weight);
  if (weight.rank !== 2 || x.rank < 1 || x.shape[x.rank - 1] !== weight.shape[1]) {
    throw new ShapeError(`linear: x must be [..., ${weight.shape[1] ?? 'in'}] and weight [out, in], got x ${fmtShape(x.shape)} and weight ${fmtShape(weight.shape)}`);
  }
  const [outF, inF] = weight.shape;
  if (bias && !(bias.rank === 1 && bias.shape[0] === outF)) {
    throw new ShapeError(`linear: bias must be [${outF}] like the weight's rows, got ${fmtShape(bias.shape)}`);
  }
  if (!bias) return reshape(matmul(reshape(x, [-1, inF]), weight, { transB: true }), [...x.shape.slice(0, -1), outF]);
  const n = shapeSize(x.shape.slice(0, -1));
  const out = empty([...x.shape.slice(0, -1), outF], backend);
  if (n === 1) {
    backend.kernels.copy(bias.storage, out.storage);
  } else {
    // out = bias broadcast over rows (as bias [1, out] + zeros [n, 1]: neither operand is a scalar).
    const zero = empty([n, 1], backend);
    backend.kernels.fill(zero.storage, 0);
    backend.kernels.binary('add', bias.storage, [1, outF], zero.storage, [n, 1], out.storage, [n, outF]);
    zero.dispose();
  }
  backend.kernels.matmul(x.storage, weight.storage, out.storage, {
    batch: 1, m: n, k: inF, n: outF, transA: false, transB: true, aBatchOffsets: SINGLE, bBatchOffsets: SINGLE, accumulate: true,
  });
  return record(out, 'linear', [x, weight, bias], (g) => {
    const g2 = reshape(g, [n, outF]);
    const dx = x.requiresGrad ? reshape(matmul(g2, weight), x.shape.slice()) : null;
    const dw = weight.requiresGrad ? matmul(g2, reshape(x, [n, inF]), { transA: true }) : null;
    const db = bias.requiresGrad ? sumToShape(g2, [outF]) : null;
    return [dx, dw, db];
  });
}

/** The packed forms packWeights kept. */
export interface PackedWeights {
  /** Weights the backend keeps packed for this handle. */
  readonly count: number;
  /** Hands the packed forms back (once; later calls do nothing). */
  release(): void;
}

/**
 * Keeps Linear weights ([out, in]) in the form the backend's matmul packs B into, so products
 * with them skip that work: a serving engine's steps run the same weights in every call. The
 * forms stay until release(); a kernel that writes a weight (an optimizer step, a copy into
 * it) drops its form and products read the weight itself again. Weights not of rank 2, repeats,
 * and backends that keep no packed form (ref, gpu) are skipped.
 */
export function packWeights(weights: Iterable<Tensor>): PackedWeights {
  const held: Storage[] = [];
  const seen = new Set<Storage>();
  for (const w of weights) {
    if (w.rank !== 2 || seen.has(w.storage)) continue;
    seen.add(w.storage);
    const backend = w.storage.backend;
    if (backend.packWeight?.(w.storage, w.shape[0], w.shape[1])) held.push(w.storage);
  }
  let released = false;
  return {
    count: held.length,
    release() {
      if (released) return;
      released = true;
      for (const s of held) s.backend.releaseWeight?.(s);
    },
  };
}

/** Consecutive rows of groupedLinear's input and the Linear weight [out, in] (and bias [out]) they take. */
export interface LinearGroup {
  rows: number;
  weight: Tensor;
  bias?: Tensor | null;
}

/**
 * Rows of x [N, in] in consecutive groups, each through a Linear of its own: group g's rows
 * (those after the earlier groups') -> x_g W_g^T + b_g, all in one [N, out]. Made for serving
 * calls whose rows sit at several depths of a relaxed model (one merged weight per depth): with
 * the backend's linearGroups kernel (cpu) every group runs in one matmul job, so each row costs
 * a plain product and the threads share the whole call. Elsewhere, and when gradients are
 * needed, it is one linear per group.
 */
export function groupedLinear(x: Tensor, groups: readonly LinearGroup[]): Tensor {
  if (groups.length === 0) throw new RrtError('groupedLinear: no groups given');
  const biases = groups.flatMap((g) => (g.bias ? [g.bias] : []));
  const backend = backendOf('groupedLinear', x, ...groups.map((g) => g.weight), ...biases);
  const w0 = groups[0].weight;
  if (x.rank !== 2 || w0.rank !== 2 || x.shape[1] !== w0.shape[1]) {
    throw new ShapeError(`groupedLinear: x must be [N, ${w0.shape[1] ?? 'in'}] and the weights [out, in], got x ${fmtShape(x.shape)} and weight ${fmtShape(w0.shape)}`);
  }
  const [outF, inF] = w0.shape;
  let total = 0;
  groups.forEach((g, i) => {
    if (!sameShape(g.weight.shape, w0.shape)) throw new ShapeError(`groupedLinear: group ${i}'s weight is ${fmtShape(g.weight.shape)}, group 0's ${fmtShape(w0.shape)}`);
    if (g.bias && !(g.bias.rank === 1 && g.bias.shape[0] === outF)) throw new ShapeError(`groupedLinear: group ${i}'s bias must be [${outF}], got ${fmtShape(g.bias.shape)}`);
    if (!(Number.isInteger(g.rows) && g.rows >= 0)) throw new RrtError(`groupedLinear: group ${i} has ${g.rows} rows; rows are integers >= 0`);
    total += g.rows;
  });
  if (total !== x.shape[0]) throw new ShapeError(`groupedLinear: the groups hold ${total} rows, x has ${x.shape[0]}`);
  const kernel = backend.kernels.linearGroups;
  const grads = isGradEnabled() && [x, ...groups.map((g) => g.weight), ...biases].some((t) => t.requiresGrad);
  const live = groups.filter((g) => g.rows > 0);
  if (!kernel || grads || live.length <= 1 || (biases.length > 0 && biases.length < groups.length)) {
    const parts: Tensor[] = [];
    let start = 0;
    for (const g of groups) {
      if (g.rows > 0) parts.push(linear(g.rows === total ? x : narrow(x, 0, start, g.rows), g.weight, g.bias ?? null));
      start += g.rows;
    }
    return parts.length === 0 ? empty([0, outF], backend) : parts.length === 1 ? parts[0] : concat(parts, 0);
  }
  const out = empty([total, outF], backend);
  kernel(x.storage, groups.map((g) => g.weight.storage), Int32Array.from(groups, (g) => g.rows), inF, outF, out.storage);
  if (biases.length === 0) return out;
  // Every group has a bias: one [G, out] table, a row of it per output row.
  const groupOf = new Int32Array(total);
  let r = 0;
  groups.forEach((g, i) => groupOf.fill(i, r, (r += g.rows)));
  return add(out, gather(concat(biases.map((b) => reshape(b, [1, outF])), 0), groupOf));
}
