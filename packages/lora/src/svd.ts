// Truncated SVD of float32 matrices, for SVD-initialised LoRA.
//
// Large matrices use randomized subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4):
// the products with A and the Cholesky QR products (all the O(m n l) and O(max(m, n) l^2) work)
// run on a tensor backend (the fast cpu kernels by default); the l x l problems (Cholesky,
// symmetric eigen) run in float64 JS.
// Small matrices, and ranks close to min(m, n), use an exact path in float64.

import { type Backend, Generator, RrtError, ShapeError, type Tensor, fmtShape, fromValues, getBackend, matmul, noGrad, tidy } from '@rrt/tensor';

/** A row-major float32 matrix: shape [rows, cols]. */
export interface MatrixF32 {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** A rank-k SVD: A ≈ U diag(S) Vt. */
export interface TruncatedSvd {
  /** [m, k] row-major, orthonormal columns. */
  readonly U: Float32Array;
  /** [k], descending, non-negative. */
  readonly S: Float64Array;
  /** [k, n] row-major, orthonormal rows. */
  readonly Vt: Float32Array;
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly method: 'exact' | 'randomized';
}

export interface SvdOptions {
  /** 'auto' (default): exact when min(m, n) <= 64 or rank + oversample >= min(m, n), else randomized. */
  readonly method?: 'auto' | 'exact' | 'randomized';
  /** Extra sample columns of the randomized range finder (default 10). */
  readonly oversample?: number;
  /** Power (subspace) iterations of the randomized method (default 2). */
  readonly powerIterations?: number;
  /** Seed of the Gaussian test matrix and of vectors completing a rank-deficient basis (default 0). */
  readonly seed?: number;
  /** Backend of the large products (default: the active backend). */
  readonly backend?: Backend;
}

function checkMatrix(what: string, a: MatrixF32): [number, number] {
  if (a.shape.length !== 2) throw new ShapeError(`${what}: expected a 2-D matrix, got shape ${fmtShape([...a.shape])}`);
  const [m, n] = a.shape;
  if (!(m > 0 && n > 0) || a.data.length !== m * n) {
    throw new ShapeError(`${what}: shape ${fmtShape([...a.shape])} needs ${m * n} values, got ${a.data.length}`);
  }
  for (let i = 0; i < a.data.length; i++) {
    if (!Number.isFinite(a.data[i])) throw new RrtError(`${what}: entry ${i} of the [${m}, ${n}] matrix is ${a.data[i]}`);
  }
  return [m, n];
}

function checkRank(what: string, rank: number, m: number, n: number): number {
  if (!Number.isSafeInteger(rank) || rank < 0) throw new RrtError(`${what}: rank must be a non-negative integer, got ${rank}`);
  return Math.min(rank, m, n);
}

/**
 * Best rank-`rank` approximation factors of a: [m, n] -> U [m, k], S [k], Vt [k, n] with
 * k = min(rank, m, n). Exact (to float32 output precision) on the exact path; on the randomized
 * path the error is close to the Eckart-Young optimum (power iterations sharpen it).
 */
export function truncatedSvd(a: MatrixF32, rank: number, opts: SvdOptions = {}): TruncatedSvd {
  const [m, n] = checkMatrix('truncatedSvd', a);
  const k = checkRank('truncatedSvd', rank, m, n);
  const s = Math.min(m, n);
  const p = opts.oversample ?? 10;
  if (!Number.isSafeInteger(p) || p < 0) throw new RrtError(`truncatedSvd: oversample must be a non-negative integer, got ${p}`);
  const method = opts.method ?? 'auto';
  if (method !== 'auto' && method !== 'exact' && method !== 'randomized') {
    throw new RrtError(`truncatedSvd: method must be 'auto', 'exact' or 'randomized', got ${JSON.stringify(method)}`);
  }
  const exact = method === 'exact' || (method === 'auto' && (s <= 64 || k + p >= s));
  if (k === 0) return { U: new Float32Array(0), S: new Float64Array(0), Vt: new Float32Array(0), m, n, k, method: exact ? 'exact' : 'randomized' };
  if (exact) return exactSvd(a, k, opts.seed ?? 0);
  return randomizedSvd(a, k, opts);
}

// ---------------------------------------------------------------------------------------------
// Exact path: eigen-decomposition of the small-side Gram matrix in float64.
// Singular values sigma_i come out with absolute error ~1e-16 sigma_1^2 / sigma_i: far below
// float32 resolution for every sigma_i above ~1e-8 sigma_1; smaller ones are treated as zero.

/** Thin SVD truncated to k, computed in float64 (see truncatedSvd). */
export function exactSvd(a: MatrixF32, rank: number, seed = 0): TruncatedSvd {
  const [m, n] = checkMatrix('exactSvd', a);
  const k = checkRank('exactSvd', rank, m, n);
  const wide = m <= n;
  const s = wide ? m : n, b = wide ? n : m;
  // Rows of X [s, b] are the small-side "vectors": A itself when wide, A^T otherwise.
  const X = new Float64Array(s * b);
  if (wide) for (let i = 0; i < X.length; i++) X[i] = a.data[i];
  else for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) X[j * m + i] = a.data[i * n + j];
  const G = new Float64Array(s * s);
  for (let i = 0; i < s; i++) {
    const xi = i * b;
    for (let j = 0; j <= i; j++) {
      const g = dot(X, xi, X, j * b, b);
      G[i * s + j] = g;
      G[j * s + i] = g;
    }
  }
  const { values, vectors } = symmetricEigen(G, s);
  const S = new Float64Array(k);
  // Big-side vectors w_i = X^T e_i / sigma_i, rows of W [k, b].
  const W = new Float64Array(k * b);
  const rng = new Generator(seed);
  const top = Math.sqrt(Math.max(values[0], 0));
  for (let i = 0; i < k; i++) {
    const sigma = Math.sqrt(Math.max(values[i], 0));
    S[i] = sigma;
    const wi = W.subarray(i * b, (i + 1) * b);
    if (sigma > 1e-9 * top && sigma > 0) {
      for (let r = 0; r < s; r++) {
        const e = vectors[i * s + r];
        if (e === 0) continue;
        const xr = r * b;
        for (let c = 0; c < b; c++) wi[c] += e * X[xr + c];
      }
      for (let c = 0; c < b; c++) wi[c] /= sigma;
      // Less accurate directions (orthogonality error ~1e-16 (sigma_1/sigma_i)^2) get cleaned.
      if (sigma < 1e-3 * top) orthogonalizeRow(W, i, b, rng);
    } else {
      S[i] = 0;
      orthogonalizeRow(W, i, b, rng, true);
    }
  }
  const small = new Float32Array(s * k); // [s, k]: column i = e_i
  for (let i = 0; i < k; i++) for (let r = 0; r < s; r++) small[r * k + i] = vectors[i * s + r];
  const bigT = Float32Array.from(W); // [k, b]
  if (wide) return { U: small, S, Vt: bigT, m, n, k, method: 'exact' };
  return { U: transposeF32(bigT, k, b), S, Vt: transposeF32(small, s, k), m, n, k, method: 'exact' };
}

function dot(x: Float32Array | Float64Array, xo: number, y: Float32Array | Float64Array, yo: number, len: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let i = 0;
  for (; i + 3 < len; i += 4) {
    s0 += x[xo + i] * y[yo + i];
    s1 += x[xo + i + 1] * y[yo + i + 1];
    s2 += x[xo + i + 2] * y[yo + i + 2];
    s3 += x[xo + i + 3] * y[yo + i + 3];
  }
  for (; i < len; i++) s0 += x[xo + i] * y[yo + i];
  return s0 + s1 + s2 + s3;
}

/**
 * Makes row i of M [*, len] orthonormal to rows 0..i-1 (two Gram-Schmidt passes). With `fresh`,
 * or when the row has (numerically) no component outside their span, it starts from a random
 * vector: a direction of a zero singular value, which any completion of the basis serves.
 */
function orthogonalizeRow(M: Float32Array | Float64Array, i: number, len: number, rng: Generator, fresh = false): void {
  const row = M.subarray(i * len, (i + 1) * len);
  for (let attempt = 0; attempt < 8; attempt++) {
    if (fresh || attempt > 0) for (let c = 0; c < len; c++) row[c] = rng.normal();
    const before = Math.sqrt(dot(row, 0, row, 0, len));
    for (let pass = 0; pass < 2; pass++) {
      for (let j = 0; j < i; j++) {
        const d = dot(M, j * len, row, 0, len);
        if (d !== 0) for (let c = 0; c < len; c++) row[c] -= d * M[j * len + c];
      }
    }
    const norm = Math.sqrt(dot(row, 0, row, 0, len));
    if (norm > 1e-6 * before && norm > 0) {
      for (let c = 0; c < len; c++) row[c] /= norm;
      return;
    }
  }
  throw new RrtError(`svd: could not complete an orthonormal basis of dimension ${len} at vector ${i}`);
}

function transposeF32(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c];
  return out;
}

// ---------------------------------------------------------------------------------------------
// Symmetric eigenproblem: Householder tridiagonalisation + implicit QL (the tred2 / tql2 pair of
// EISPACK, as in JAMA), float64.

/**
 * Eigen-decomposition of a symmetric matrix a: [n, n] row-major (float64; only read) ->
 * values [n] descending, vectors [n, n] row-major with ROW i the unit eigenvector of values[i].
 */
export function symmetricEigen(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  if (a.length !== n * n) throw new ShapeError(`symmetricEigen: expected ${n * n} values for [${n}, ${n}], got ${a.length}`);
  // tred2 below works on the transpose U = V^T of EISPACK's V (a is symmetric, so U starts as a):
  // its inner loops then run along contiguous rows, and U's rows are the columns tql2 rotates.
  const W: Float64Array[] = Array.from({ length: n }, (_, i) => Float64Array.from(a.subarray(i * n, (i + 1) * n)));
  const d = new Float64Array(n), e = new Float64Array(n);
  tred2T(W, d, e, n);
  tql2(W, d, e, n);
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[y] - d[x]);
  const values = new Float64Array(n), vectors = new Float64Array(n * n);
  order.forEach((src, i) => {
    values[i] = d[src];
    vectors.set(W[src], i * n);
  });
  return { values, vectors };
}

/** EISPACK tred2 (as in JAMA) with every V[a][b] read as U[b][a]: U holds V transposed. */
function tred2T(U: Float64Array[], d: Float64Array, e: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) d[j] = U[j][n - 1];
  for (let i = n - 1; i > 0; i--) {
    let scale = 0, h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]);
    if (scale === 0) {
      e[i] = d[i - 1];
      for (let j = 0; j < i; j++) {
        d[j] = U[j][i - 1];
        U[j][i] = 0;
        U[i][j] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      let f = d[i - 1];
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      const Ui = U[i];
      for (let j = 0; j < i; j++) {
        f = d[j];
        Ui[j] = f;
        const Uj = U[j];
        g = e[j] + Uj[j] * f;
        for (let k = j + 1; k <= i - 1; k++) {
          const vkj = Uj[k];
          g += vkj * d[k];
          e[k] += vkj * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] -= hh * d[j];
      for (let j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        const Uj = U[j];
        for (let k = j; k <= i - 1; k++) Uj[k] -= f * e[k] + g * d[k];
        d[j] = Uj[i - 1];
        Uj[i] = 0;
      }
    }
    d[i] = h;
  }
  for (let i = 0; i < n - 1; i++) {
    const Ui = U[i], Ui1 = U[i + 1];
    Ui[n - 1] = Ui[i];
    Ui[i] = 1;
    const h = d[i + 1];
    if (h !== 0) {
      for (let k = 0; k <= i; k++) d[k] = Ui1[k] / h;
      for (let j = 0; j <= i; j++) {
        const Uj = U[j];
        let g = 0;
        for (let k = 0; k <= i; k++) g += Ui1[k] * Uj[k];
        for (let k = 0; k <= i; k++) Uj[k] -= g * d[k];
      }
    }
    for (let k = 0; k <= i; k++) Ui1[k] = 0;
  }
  for (let j = 0; j < n; j++) {
    d[j] = U[j][n - 1];
    U[j][n - 1] = 0;
  }
  U[n - 1][n - 1] = 1;
  e[0] = 0;
}

/** W holds the eigenvector matrix transposed: W[i] is column i. */
function tql2(W: Float64Array[], d: Float64Array, e: Float64Array, n: number): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0;
  let f = 0, tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n - 1 && Math.abs(e[m]) > eps * tst1) m++;
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > 300) throw new RrtError(`symmetricEigen: QL iteration did not converge for eigenvalue ${l} of ${n}`);
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e[l]);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1, c2 = c, c3 = c, s = 0, s2 = 0;
        const el1 = e[l + 1];
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = Math.hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          const wi = W[i], wi1 = W[i + 1];
          for (let k = 0; k < n; k++) {
            const t = wi1[k];
            wi1[k] = s * wi[k] + c * t;
            wi[k] = c * wi[k] - s * t;
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Randomized path.

/**
 * Randomized truncated SVD (Halko, Martinsson & Tropp 2011, Alg. 4.4 with Rayleigh-Ritz).
 * The basis P [s, l] lives on the smaller side s = min(m, n), l = min(k + oversample, s), and is
 * re-orthonormalised after every product pair (power iterations sharpen a flat spectrum). Then
 * Z = A^T P (or A P) [b, l] on the larger side gives A ≈ P Z^T; Z = Q R by Cholesky QR and the
 * l x l factor R is solved exactly in float64. Every O(m n l) and O(b l^2) product runs on the
 * backend. Directions with sigma_i / sigma_1 below ~1e-4 are resolved only to float32 noise (the
 * power step squares the spectrum); they do not matter to a low-rank approximation.
 */
export function randomizedSvd(a: MatrixF32, rank: number, opts: SvdOptions = {}): TruncatedSvd {
  const [m, n] = checkMatrix('randomizedSvd', a);
  const k = checkRank('randomizedSvd', rank, m, n);
  const wide = m <= n;
  const s = wide ? m : n, b = wide ? n : m;
  const l = Math.min(k + (opts.oversample ?? 10), s);
  const q = opts.powerIterations ?? 2;
  if (!Number.isSafeInteger(q) || q < 0) throw new RrtError(`randomizedSvd: powerIterations must be a non-negative integer, got ${q}`);
  const backend = opts.backend ?? getBackend();
  const rng = new Generator(opts.seed ?? 0);
  let allZero = true;
  for (let i = 0; i < a.data.length; i++) if (a.data[i] !== 0) { allZero = false; break; }
  if (allZero || k === 0) return zeroSvd(m, n, k);

  return noGrad(() => tidy(() => {
    const A = fromValues(a.data, [m, n], backend);
    // toSmall: [b, l] -> [s, l]; toBig: [s, l] -> [b, l].
    const toSmall = (X: Tensor): Tensor => (wide ? matmul(A, X) : matmul(A, X, { transA: true }));
    const toBig = (Y: Tensor): Tensor => (wide ? matmul(A, Y, { transA: true }) : matmul(A, Y));
    const omega = new Float32Array(b * l);
    for (let i = 0; i < omega.length; i++) omega[i] = rng.normal();
    // Only the last factorisation needs R; the basis updates keep Q alone.
    let P = orthonormalize(toSmall(fromValues(omega, [b, l], backend)), rng, false).Q;
    for (let it = 0; it < q; it++) P = orthonormalize(toSmall(toBig(P)), rng, false).Q;
    // A ≈ P Z^T with Z = Qz R: A ≈ P R^T Qz^T, and R = Ur diag(sigma) W^T gives
    // small-side vectors P W, big-side vectors Qz Ur.
    const { Q: Qz, R } = orthonormalize(toBig(P), rng);
    // G = R^T R as a sum of outer products of R's rows (contiguous), lower half mirrored.
    const G = new Float64Array(l * l);
    for (let t = 0; t < l; t++) {
      const row = t * l;
      for (let i = t; i < l; i++) {
        const v = R[row + i];
        if (v === 0) continue;
        const gi = i * l;
        for (let j = i; j < l; j++) G[gi + j] += v * R[row + j];
      }
    }
    for (let i = 0; i < l; i++) for (let j = 0; j < i; j++) G[i * l + j] = G[j * l + i];
    const { values, vectors } = symmetricEigen(G, l);
    const S = new Float64Array(k);
    const top = Math.sqrt(Math.max(values[0], 0));
    // Ur columns u_i = R w_i / sigma_i, stored as rows [k, l].
    const UrT = new Float32Array(k * l);
    const repair: number[] = [], zero = new Set<number>();
    for (let i = 0; i < k; i++) {
      const sigma = Math.sqrt(Math.max(values[i], 0));
      if (!(sigma > 1e-9 * top && sigma > 0)) {
        zero.add(i);
        repair.push(i);
        continue;
      }
      S[i] = sigma;
      const w = vectors.subarray(i * l, (i + 1) * l);
      for (let r = 0; r < l; r++) {
        let acc = 0;
        for (let t = r; t < l; t++) acc += R[r * l + t] * w[t];
        UrT[i * l + r] = acc / sigma;
      }
      if (sigma < 1e-3 * top) repair.push(i);
    }
    const Wk = fromValues(Float32Array.from(vectors.subarray(0, k * l)), [k, l], backend);
    const smallT = matmul(Wk, P, { transB: true }).dataSync(); // [k, s]
    const bigT = matmul(fromValues(UrT, [k, l], backend), Qz, { transB: true }).dataSync(); // [k, b]
    // Small singular values: their big-side vectors lose orthogonality (or vanish); repair them.
    for (const i of repair) orthogonalizeRow(bigT, i, b, rng, zero.has(i));
    if (wide) return { U: transposeF32(smallT, k, s), S, Vt: bigT, m, n, k, method: 'randomized' as const };
    return { U: transposeF32(bigT, k, b), S, Vt: smallT, m, n, k, method: 'randomized' as const };
  }));
}

function zeroSvd(m: number, n: number, k: number): TruncatedSvd {
  // Any orthonormal factors serve; unit vectors keep it cheap and deterministic.
  const U = new Float32Array(m * k), Vt = new Float32Array(k * n);
  for (let i = 0; i < k; i++) {
    U[i * k + i] = 1;
    Vt[i * n + i] = 1;
  }
  return { U, S: new Float64Array(k), Vt, m, n, k, method: 'randomized' };
}

/**
 * Orthonormal basis of the columns of X [p, l] (p >= l), by Cholesky QR on the backend: the
 * Gram matrix X^T X and the product X R^-1 are backend matmuls, the l x l Cholesky factor and its
 * inverse are float64. Repeated (CholeskyQR2) so the float32 Gram's error does not remain; a
 * pass whose Gram is too ill-conditioned for float32 is shifted (shifted CholeskyQR), which
 * bounds the next pass's condition number. Returns Q [p, l] and the upper-triangular float64
 * R [l, l] (product of the passes' factors) with X = Q R; with wantR false R is left as the identity.
 */
function orthonormalize(X: Tensor, rng: Generator, wantR = true): { Q: Tensor; R: Float64Array } {
  const l = X.shape[1];
  let R: Float64Array = new Float64Array(l * l);
  for (let i = 0; i < l; i++) R[i * l + i] = 1;
  let cleanPasses = 0;
  for (let pass = 0; pass < 8; pass++) {
    const G = Float64Array.from(matmul(X, X, { transA: true }).dataSync());
    let maxDiag = 0;
    for (let i = 0; i < l; i++) maxDiag = Math.max(maxDiag, G[i * l + i]);
    if (!(maxDiag > 0) || !Number.isFinite(maxDiag)) {
      // X = 0: any orthonormal Q with R = 0 factors it.
      const fresh = new Float32Array(X.size);
      for (let i = 0; i < fresh.length; i++) fresh[i] = rng.normal();
      X = fromValues(fresh, X.shape.slice(), X.backend);
      R = new Float64Array(l * l);
      cleanPasses = 0;
      continue;
    }
    if (pass > 0) {
      let offMax = 0;
      for (let i = 0; i < l; i++) for (let j = 0; j < l; j++) offMax = Math.max(offMax, Math.abs(G[i * l + j] - (i === j ? 1 : 0)));
      if (offMax < 1e-4) return { Q: X, R };
    }
    let Rp = cholesky(G, l, 0);
    let shifted = false;
    // Pivots this small are below the float32 Gram's own error: shift instead of trusting them.
    if (!Rp || minPivotRatio(Rp, l, maxDiag) < 1e-5) {
      Rp = cholesky(G, l, 1e-5 * maxDiag);
      shifted = true;
      if (!Rp) throw new RrtError('svd: shifted Cholesky QR failed (non-finite values?)');
    }
    X = matmul(X, fromValues(Float32Array.from(invertUpper(Rp, l)), [l, l], X.backend));
    if (wantR) R = multiplyUpper(Rp, R, l);
    cleanPasses = shifted ? 0 : cleanPasses + 1;
    // CholeskyQR2: two unshifted passes leave the basis orthonormal to float32 precision.
    if (cleanPasses >= 2) return { Q: X, R };
  }
  return { Q: X, R };
}

/** Product of two upper-triangular [l, l] matrices. */
function multiplyUpper(a: Float64Array, b: Float64Array, l: number): Float64Array {
  const out = new Float64Array(l * l);
  for (let i = 0; i < l; i++) {
    for (let t = i; t < l; t++) {
      const v = a[i * l + t];
      if (v === 0) continue;
      for (let j = t; j < l; j++) out[i * l + j] += v * b[t * l + j];
    }
  }
  return out;
}

function minPivotRatio(R: Float64Array, l: number, maxDiag: number): number {
  let min = Infinity;
  for (let i = 0; i < l; i++) min = Math.min(min, R[i * l + i] * R[i * l + i]);
  return min / maxDiag;
}

/**
 * Upper R [l, l] with G + shift I = R^T R, or null when G is not positive definite.
 * Right-looking (outer-product) form: every inner loop runs along a contiguous row.
 */
function cholesky(G: Float64Array, l: number, shift: number): Float64Array | null {
  const R = new Float64Array(l * l);
  // Upper triangle of the trailing matrix, updated in place in R.
  for (let i = 0; i < l; i++) for (let j = i; j < l; j++) R[i * l + j] = G[i * l + j];
  for (let i = 0; i < l; i++) R[i * l + i] += shift;
  for (let k = 0; k < l; k++) {
    const d = R[k * l + k];
    if (!(d > 0)) return null;
    const rkk = Math.sqrt(d);
    const rowK = k * l;
    R[rowK + k] = rkk;
    for (let j = k + 1; j < l; j++) R[rowK + j] /= rkk;
    for (let i = k + 1; i < l; i++) {
      const rki = R[rowK + i];
      if (rki === 0) continue;
      const rowI = i * l;
      for (let j = i; j < l; j++) R[rowI + j] -= rki * R[rowK + j];
    }
  }
  return R;
}

/** Inverse of an upper-triangular [l, l] matrix (upper-triangular), by rows from the bottom (contiguous inner loops). */
function invertUpper(R: Float64Array, l: number): Float64Array {
  const X = new Float64Array(l * l);
  for (let i = l - 1; i >= 0; i--) {
    // Row i of X: (e_i - sum_{k > i} R[i, k] X[k, :]) / R[i, i]; row k of X is zero left of k.
    const rowI = i * l;
    X[rowI + i] = 1;
    for (let k = i + 1; k < l; k++) {
      const r = R[rowI + k];
      if (r === 0) continue;
      const rowK = k * l;
      for (let j = k; j < l; j++) X[rowI + j] -= r * X[rowK + j];
    }
    const inv = 1 / R[rowI + i];
    for (let j = i; j < l; j++) X[rowI + j] *= inv;
  }
  return X;
}
