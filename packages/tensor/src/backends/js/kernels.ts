// Plain-JS kernels over host memory. JS numbers are float64, so every accumulation here
// (sums, dot products, norms) runs in float64 before the result is rounded to float32: this
// makes the table the test oracle of the `ref` backend. The `cpu` backend reuses it for ops
// that are pure data movement or too small to pay for a trip into wasm.

import type { AdamWStep, BinaryOp, HostStorage, Kernels, MatmulSpec, Storage, UnaryOp } from '../../backend.js';

const h = (s: Storage): Float32Array => (s as HostStorage).data;

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** erf with |error| < 1.2e-7 (Numerical Recipes erfc, Chebyshev fit): enough for float32. */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z - 1.26551223 +
        t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 +
        t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - r : r - 1;
}

const sigmoid = (x: number): number => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));

export function unaryFn(op: UnaryOp): (x: number) => number {
  switch (op) {
    case 'neg': return (x) => -x;
    case 'exp': return Math.exp;
    case 'log': return Math.log;
    case 'sqrt': return Math.sqrt;
    case 'rsqrt': return (x) => 1 / Math.sqrt(x);
    case 'abs': return Math.abs;
    case 'tanh': return Math.tanh;
    case 'sigmoid': return sigmoid;
    case 'relu': return (x) => (x > 0 ? x : 0);
    case 'gelu': return (x) => 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'gelu_tanh': return (x) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
    case 'silu': return (x) => x * sigmoid(x);
    case 'square': return (x) => x * x;
    case 'sign': return (x) => (x > 0 ? 1 : x < 0 ? -1 : 0);
    case 'recip': return (x) => 1 / x;
  }
}

/** d f(x) / dx, given x and y = f(x). */
export function unaryDerivative(op: UnaryOp): (x: number, y: number) => number {
  switch (op) {
    case 'neg': return () => -1;
    case 'exp': return (_x, y) => y;
    case 'log': return (x) => 1 / x;
    case 'sqrt': return (_x, y) => 0.5 / y;
    case 'rsqrt': return (_x, y) => -0.5 * y * y * y;
    case 'abs': return (x) => (x > 0 ? 1 : x < 0 ? -1 : 0);
    case 'tanh': return (_x, y) => 1 - y * y;
    case 'sigmoid': return (_x, y) => y * (1 - y);
    case 'relu': return (x) => (x > 0 ? 1 : 0);
    case 'gelu': return (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
    case 'gelu_tanh': return (x) => {
      const u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
      const t = Math.tanh(u);
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
    };
    case 'silu': return (x) => { const s = sigmoid(x); return s * (1 + x * (1 - s)); };
    case 'square': return (x) => 2 * x;
    case 'sign': return () => 0;
    case 'recip': return (_x, y) => -y * y;
  }
}

export function binaryFn(op: BinaryOp): (a: number, b: number) => number {
  switch (op) {
    case 'add': return (a, b) => a + b;
    case 'sub': return (a, b) => a - b;
    case 'mul': return (a, b) => a * b;
    case 'div': return (a, b) => a / b;
    case 'maximum': return (a, b) => (a >= b ? a : b);
    case 'minimum': return (a, b) => (a <= b ? a : b);
    case 'eq': return (a, b) => (a === b ? 1 : 0);
    case 'gt': return (a, b) => (a > b ? 1 : 0);
    case 'pow': return Math.pow;
  }
}

/** Row-major strides of a shape, with 0 where the dimension is broadcast (size 1 vs larger out). */
export function broadcastStrides(shape: number[], outShape: number[]): number[] {
  const strides = new Array<number>(outShape.length).fill(0);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = shape[i] === 1 && outShape[i] !== 1 ? 0 : s;
    s *= shape[i];
  }
  return strides;
}

/** Calls body(outIndex, offsets...) for every output element, walking inputs by their strides. */
function forEachBroadcast(outShape: number[], strideSets: number[][], body: (o: number, offs: number[]) => void): void {
  const rank = outShape.length;
  const n = outShape.reduce((a, b) => a * b, 1);
  const idx = new Array<number>(rank).fill(0);
  const offs = strideSets.map(() => 0);
  for (let o = 0; o < n; o++) {
    body(o, offs);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      for (let j = 0; j < offs.length; j++) offs[j] += strideSets[j][d];
      if (idx[d] < outShape[d]) break;
      for (let j = 0; j < offs.length; j++) offs[j] -= strideSets[j][d] * outShape[d];
      idx[d] = 0;
    }
  }
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function matmul(a: Storage, b: Storage, out: Storage, spec: MatmulSpec): void {
  const A = h(a), B = h(b), C = h(out);
  const { m, k, n, transA, transB } = spec;
  // Element strides of a[i, p] and b[p, j] in storage.
  const aRow = transA ? 1 : k, aCol = transA ? m : 1;
  const bRow = transB ? 1 : n, bCol = transB ? k : 1;
  const acc = new Float64Array(n);
  for (let t = 0; t < spec.batch; t++) {
    const ao = spec.aBatchOffsets[t], bo = spec.bBatchOffsets[t], co = t * m * n;
    for (let i = 0; i < m; i++) {
      acc.fill(0);
      for (let p = 0; p < k; p++) {
        const av = A[ao + i * aRow + p * aCol];
        if (av === 0) continue;
        const bp = bo + p * bRow;
        for (let j = 0; j < n; j++) acc[j] += av * B[bp + j * bCol];
      }
      const cr = co + i * n;
      if (spec.accumulate) for (let j = 0; j < n; j++) C[cr + j] += acc[j];
      else for (let j = 0; j < n; j++) C[cr + j] = acc[j];
    }
  }
}

/** The reference grouped Linear product (see Kernels.linearGroups): one float64 matmul per group. */
function linearGroups(x: Storage, weights: Storage[], rows: Int32Array, k: number, n: number, out: Storage): void {
  const X = h(x), C = h(out);
  const acc = new Float64Array(n);
  let r0 = 0;
  for (let g = 0; g < weights.length; g++) {
    const W = h(weights[g]);
    for (let i = r0; i < r0 + rows[g]; i++) {
      acc.fill(0);
      for (let p = 0; p < k; p++) {
        const xv = X[i * k + p];
        if (xv !== 0) for (let j = 0; j < n; j++) acc[j] += xv * W[j * k + p];
      }
      for (let j = 0; j < n; j++) C[i * n + j] = acc[j];
    }
    r0 += rows[g];
  }
}

// copyRegion's strides and counters, reused between calls (no allocation per copy).
let copyStrides = new Float64Array(3 * 8);

function copyRegion(
  src: Storage, srcShape: number[], srcStart: number[],
  dst: Storage, dstShape: number[], dstStart: number[], region: number[], accumulate: boolean,
): void {
  const rank = region.length;
  let n = 1;
  for (let d = 0; d < rank; d++) n *= region[d];
  if (n === 0) return;
  if (copyStrides.length < 3 * rank) copyStrides = new Float64Array(3 * rank);
  // [0, rank): source strides, [rank, 2 rank): destination strides, [2 rank, 3 rank): counters.
  const st = copyStrides;
  let so = 0, doff = 0, sStride = 1, dStride = 1;
  for (let d = rank - 1; d >= 0; d--) {
    st[d] = sStride; st[rank + d] = dStride; st[2 * rank + d] = 0;
    so += srcStart[d] * sStride; doff += dstStart[d] * dStride;
    sStride *= srcShape[d]; dStride *= dstShape[d];
  }
  const S = h(src), D = h(dst);
  const inner = rank > 0 ? region[rank - 1] : 1;
  const outer = n / inner;
  for (let r = 0; r < outer; r++) {
    if (accumulate) for (let j = 0; j < inner; j++) D[doff + j] += S[so + j];
    // A subarray per row is JS garbage (a training step slices thousands of short rows).
    else if (inner < 4096) for (let j = 0; j < inner; j++) D[doff + j] = S[so + j];
    else D.set(S.subarray(so, so + inner), doff);
    for (let d = rank - 2; d >= 0; d--) {
      const c = 2 * rank + d;
      st[c]++; so += st[d]; doff += st[rank + d];
      if (st[c] < region[d]) break;
      so -= st[d] * region[d]; doff -= st[rank + d] * region[d]; st[c] = 0;
    }
  }
}

/** The reference attention over many caches (see Kernels.attendCaches); float64 sums. */
function attendCaches(
  q: Storage, kCaches: Storage[], vCaches: Storage[], capacities: Int32Array, starts: Int32Array, lens: Int32Array,
  heads: number, kvHeads: number, headDim: number, scale: number, out: Storage,
): void {
  const Q = h(q), O = h(out), group = heads / kvHeads;
  let row = 0;
  for (let i = 0; i < lens.length; i++) {
    const K = h(kCaches[i]), V = h(vCaches[i]), cap = capacities[i];
    for (let t = 0; t < lens[i]; t++, row++) {
      const visible = starts[i] + t + 1;
      const scores = new Float64Array(visible);
      for (let hq = 0; hq < heads; hq++) {
        const qo = (row * heads + hq) * headDim, base = Math.floor(hq / group) * cap * headDim;
        let mx = -Infinity;
        for (let j = 0; j < visible; j++) {
          let d = 0;
          for (let c = 0; c < headDim; c++) d += Q[qo + c] * K[base + j * headDim + c];
          scores[j] = scale * d;
          if (scores[j] > mx) mx = scores[j];
        }
        let sum = 0;
        for (let j = 0; j < visible; j++) sum += (scores[j] = Math.exp(scores[j] - mx));
        for (let c = 0; c < headDim; c++) {
          let acc = 0;
          for (let j = 0; j < visible; j++) acc += scores[j] * V[base + j * headDim + c];
          O[qo + c] = acc / sum;
        }
      }
    }
  }
}

export const jsKernels: Kernels = {
  fill(out, value) { h(out).fill(value); },
  copy(src, out) { h(out).set(h(src)); },

  unary(op: UnaryOp, x, out) {
    const X = h(x), O = h(out), f = unaryFn(op);
    for (let i = 0; i < X.length; i++) O[i] = f(X[i]);
  },
  unaryGrad(op, x, y, dy, dx) {
    const X = h(x), Y = h(y), G = h(dy), O = h(dx), d = unaryDerivative(op);
    for (let i = 0; i < X.length; i++) O[i] = G[i] * d(X[i], Y[i]);
  },

  binary(op, a, aShape, b, bShape, out, outShape) {
    const A = h(a), B = h(b), O = h(out), f = binaryFn(op);
    if (sameShape(aShape, bShape)) {
      for (let i = 0; i < O.length; i++) O[i] = f(A[i], B[i]);
      return;
    }
    if (B.length === 1) { const bv = B[0]; for (let i = 0; i < O.length; i++) O[i] = f(A[i], bv); return; }
    if (A.length === 1) { const av = A[0]; for (let i = 0; i < O.length; i++) O[i] = f(av, B[i]); return; }
    const sa = broadcastStrides(aShape, outShape), sb = broadcastStrides(bShape, outShape);
    forEachBroadcast(outShape, [sa, sb], (o, offs) => { O[o] = f(A[offs[0]], B[offs[1]]); });
  },
  affine(x, scale, shift, out) {
    const X = h(x), O = h(out);
    for (let i = 0; i < X.length; i++) O[i] = X[i] * scale + shift;
  },
  powScalar(x, p, out) {
    const X = h(x), O = h(out);
    for (let i = 0; i < X.length; i++) O[i] = Math.pow(X[i], p);
  },
  clamp(x, lo, hi, out) {
    const X = h(x), O = h(out);
    for (let i = 0; i < X.length; i++) O[i] = X[i] < lo ? lo : X[i] > hi ? hi : X[i];
  },
  where(cond, cShape, a, aShape, b, bShape, out, outShape) {
    const C = h(cond), A = h(a), B = h(b), O = h(out);
    const sc = broadcastStrides(cShape, outShape), sa = broadcastStrides(aShape, outShape), sb = broadcastStrides(bShape, outShape);
    forEachBroadcast(outShape, [sc, sa, sb], (o, offs) => { O[o] = C[offs[0]] !== 0 ? A[offs[1]] : B[offs[2]]; });
  },

  matmul,

  reduce(op, x, outer, r, inner, out) {
    const X = h(x), O = h(out);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * r * inner + i;
        if (op === 'sum') {
          let s = 0;
          for (let j = 0; j < r; j++) s += X[base + j * inner];
          O[o * inner + i] = s;
        } else {
          let best = -Infinity, arg = 0;
          for (let j = 0; j < r; j++) {
            const v = X[base + j * inner];
            if (v > best || (Number.isNaN(v) && !Number.isNaN(best))) { best = v; arg = j; }
          }
          O[o * inner + i] = op === 'max' ? (r === 0 ? -Infinity : best) : arg;
        }
      }
    }
  },

  softmax(x, rows, cols, log, out) {
    const X = h(x), O = h(out);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let mx = -Infinity;
      for (let j = 0; j < cols; j++) if (X[o + j] > mx) mx = X[o + j];
      if (mx === -Infinity) mx = 0; // a fully masked row gives NaN, as in PyTorch
      let s = 0;
      for (let j = 0; j < cols; j++) s += Math.exp(X[o + j] - mx);
      if (log) {
        const lse = mx + Math.log(s);
        for (let j = 0; j < cols; j++) O[o + j] = X[o + j] - lse;
      } else {
        for (let j = 0; j < cols; j++) O[o + j] = Math.exp(X[o + j] - mx) / s;
      }
    }
  },
  causalSoftmax(x, rows, cols, scale, period, offset, out) {
    const X = h(x), O = h(out);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const visible = Math.max(0, Math.min(cols, offset + (r % period) + 1));
      let mx = -Infinity;
      for (let j = 0; j < visible; j++) if (scale * X[o + j] > mx) mx = scale * X[o + j];
      let s = 0;
      for (let j = 0; j < visible; j++) s += Math.exp(scale * X[o + j] - mx);
      for (let j = 0; j < visible; j++) O[o + j] = Math.exp(scale * X[o + j] - mx) / s;
      for (let j = visible; j < cols; j++) O[o + j] = 0;
    }
  },
  softmaxGrad(y, dy, rows, cols, log, dx) {
    const Y = h(y), G = h(dy), O = h(dx);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let s = 0;
      if (log) {
        for (let j = 0; j < cols; j++) s += G[o + j];
        for (let j = 0; j < cols; j++) O[o + j] = G[o + j] - Math.exp(Y[o + j]) * s;
      } else {
        for (let j = 0; j < cols; j++) s += G[o + j] * Y[o + j];
        for (let j = 0; j < cols; j++) O[o + j] = Y[o + j] * (G[o + j] - s);
      }
    }
  },

  layerNorm(x, w, b, rows, cols, eps, out, mean, rstd) {
    const X = h(x), O = h(out), W = w ? h(w) : null, Bi = b ? h(b) : null, M = h(mean), R = h(rstd);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let s = 0;
      for (let j = 0; j < cols; j++) s += X[o + j];
      const mu = s / cols;
      let v = 0;
      for (let j = 0; j < cols; j++) { const d = X[o + j] - mu; v += d * d; }
      const rs = 1 / Math.sqrt(v / cols + eps);
      M[r] = mu; R[r] = rs;
      for (let j = 0; j < cols; j++) {
        let y = (X[o + j] - mu) * rs;
        if (W) y *= W[j];
        if (Bi) y += Bi[j];
        O[o + j] = y;
      }
    }
  },
  layerNormGrad(x, w, mean, rstd, dy, rows, cols, dx, dw, db) {
    const X = h(x), W = w ? h(w) : null, M = h(mean), R = h(rstd), G = h(dy), DX = h(dx);
    const DW = dw ? h(dw) : null, DB = db ? h(db) : null;
    for (let r = 0; r < rows; r++) {
      const o = r * cols, mu = M[r], rs = R[r];
      let sg = 0, sgx = 0;
      for (let j = 0; j < cols; j++) {
        const xh = (X[o + j] - mu) * rs;
        const g = G[o + j] * (W ? W[j] : 1);
        sg += g; sgx += g * xh;
        if (DW) DW[j] += G[o + j] * xh;
        if (DB) DB[j] += G[o + j];
      }
      sg /= cols; sgx /= cols;
      for (let j = 0; j < cols; j++) {
        const xh = (X[o + j] - mu) * rs;
        const g = G[o + j] * (W ? W[j] : 1);
        DX[o + j] = rs * (g - sg - xh * sgx);
      }
    }
  },
  rmsNorm(x, w, rows, cols, eps, addOne, out, rstd) {
    const X = h(x), O = h(out), W = w ? h(w) : null, R = h(rstd);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let s = 0;
      for (let j = 0; j < cols; j++) s += X[o + j] * X[o + j];
      const rs = 1 / Math.sqrt(s / cols + eps);
      R[r] = rs;
      for (let j = 0; j < cols; j++) {
        const scale = W ? (addOne ? 1 + W[j] : W[j]) : 1;
        O[o + j] = X[o + j] * rs * scale;
      }
    }
  },
  rmsNormGrad(x, w, rstd, dy, rows, cols, addOne, dx, dw) {
    const X = h(x), W = w ? h(w) : null, R = h(rstd), G = h(dy), DX = h(dx), DW = dw ? h(dw) : null;
    for (let r = 0; r < rows; r++) {
      const o = r * cols, rs = R[r];
      let sgx = 0;
      for (let j = 0; j < cols; j++) {
        const scale = W ? (addOne ? 1 + W[j] : W[j]) : 1;
        sgx += G[o + j] * scale * X[o + j];
        if (DW) DW[j] += G[o + j] * X[o + j] * rs;
      }
      const c = (sgx * rs * rs * rs) / cols;
      for (let j = 0; j < cols; j++) {
        const scale = W ? (addOne ? 1 + W[j] : W[j]) : 1;
        DX[o + j] = G[o + j] * scale * rs - X[o + j] * c;
      }
    }
  },

  crossEntropy(logits, targets, rows, vocab, ignoreIndex, loss, lse) {
    const X = h(logits), L = h(loss), S = h(lse);
    for (let r = 0; r < rows; r++) {
      const o = r * vocab;
      let mx = -Infinity;
      for (let j = 0; j < vocab; j++) if (X[o + j] > mx) mx = X[o + j];
      let s = 0;
      for (let j = 0; j < vocab; j++) s += Math.exp(X[o + j] - mx);
      const l = mx + Math.log(s);
      S[r] = l;
      const t = targets[r];
      L[r] = t === ignoreIndex ? 0 : l - X[o + t];
    }
  },
  crossEntropyGrad(logits, targets, lse, dloss, rows, vocab, ignoreIndex, dlogits) {
    const X = h(logits), S = h(lse), G = h(dloss), D = h(dlogits);
    for (let r = 0; r < rows; r++) {
      const o = r * vocab, t = targets[r];
      if (t === ignoreIndex) { D.fill(0, o, o + vocab); continue; }
      const g = G[r], l = S[r];
      for (let j = 0; j < vocab; j++) D[o + j] = g * Math.exp(X[o + j] - l);
      D[o + t] -= g;
    }
  },

  gather(table, ids, cols, out) {
    const T = h(table), O = h(out);
    for (let i = 0; i < ids.length; i++) O.set(T.subarray(ids[i] * cols, ids[i] * cols + cols), i * cols);
  },
  scatterAdd(dy, ids, cols, dtable) {
    const G = h(dy), T = h(dtable);
    for (let i = 0; i < ids.length; i++) {
      const to = ids[i] * cols, go = i * cols;
      for (let j = 0; j < cols; j++) T[to + j] += G[go + j];
    }
  },

  permute(x, shape, perm, out) {
    const X = h(x), O = h(out);
    const inStrides = broadcastStrides(shape, shape);
    const outShape = perm.map((p) => shape[p]);
    const walk = perm.map((p) => inStrides[p]);
    forEachBroadcast(outShape, [walk], (o, offs) => { O[o] = X[offs[0]]; });
  },

  copyRegion,
  copyRuns(src, srcOffsets, srcStrides, dst, dstOffsets, dstStrides, length, blocks) {
    for (let j = 0; j < src.length; j++) {
      const S = h(src[j]), D = h(dst[j]);
      for (let b = 0; b < blocks; b++) {
        const so = srcOffsets[j] + b * srcStrides[j], dof = dstOffsets[j] + b * dstStrides[j];
        for (let c = 0; c < length; c++) D[dof + c] = S[so + c];
      }
    }
  },
  attendCaches,
  linearGroups,

  adamw(p, g, m, v, o: AdamWStep) {
    const P = h(p), G = h(g), M = h(m), V = h(v);
    const { lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2, gradScale } = o;
    for (let i = 0; i < P.length; i++) {
      const gi = G[i] * gradScale;
      M[i] = beta1 * M[i] + (1 - beta1) * gi;
      V[i] = beta2 * V[i] + (1 - beta2) * gi * gi;
      const mh = M[i] / biasCorrection1, vh = V[i] / biasCorrection2;
      P[i] = P[i] - lr * (mh / (Math.sqrt(vh) + eps) + weightDecay * P[i]);
    }
  },

  sumSquares(x) {
    const X = h(x);
    let s = 0;
    for (let i = 0; i < X.length; i++) s += X[i] * X[i];
    return s;
  },
};
