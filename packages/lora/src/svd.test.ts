import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Generator, RrtError, ShapeError, availableBackends } from '@rrt/tensor';
import { exactSvd, randomizedSvd, symmetricEigen, truncatedSvd, type MatrixF32, type TruncatedSvd } from './svd.js';

const backend = availableBackends()[0]!;

function gaussian(m: number, n: number, seed: number): MatrixF32 {
  const g = new Generator(seed);
  const data = new Float32Array(m * n);
  for (let i = 0; i < data.length; i++) data[i] = g.normal();
  return { shape: [m, n], data };
}

/** Oracle: one-sided Jacobi SVD in float64 (Hestenes), independent of the code under test. */
function jacobiSingularValues(a: MatrixF32): number[] {
  const [m0, n0] = a.shape;
  // Orthogonalise the rows of the wide orientation.
  const wide = m0 <= n0;
  const rows = wide ? m0 : n0, cols = wide ? n0 : m0;
  const X = Array.from({ length: rows }, (_, i) => Float64Array.from({ length: cols }, (_, j) => (wide ? a.data[i * n0 + j] : a.data[j * n0 + i])));
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < rows; p++) {
      for (let q = p + 1; q < rows; q++) {
        let alpha = 0, beta = 0, gamma = 0;
        for (let k = 0; k < cols; k++) {
          alpha += X[p][k] ** 2;
          beta += X[q][k] ** 2;
          gamma += X[p][k] * X[q][k];
        }
        if (gamma === 0 || Math.abs(gamma) < 1e-15 * Math.sqrt(alpha * beta)) continue;
        off = Math.max(off, Math.abs(gamma) / Math.sqrt(alpha * beta));
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t), s = c * t;
        for (let k = 0; k < cols; k++) {
          const xp = X[p][k], xq = X[q][k];
          X[p][k] = c * xp - s * xq;
          X[q][k] = s * xp + c * xq;
        }
      }
    }
    if (off < 1e-14) break;
  }
  return X.map((r) => Math.sqrt(r.reduce((s, v) => s + v * v, 0))).sort((x, y) => y - x);
}

function reconstruct(r: TruncatedSvd): Float64Array {
  const out = new Float64Array(r.m * r.n);
  for (let i = 0; i < r.m; i++) {
    for (let t = 0; t < r.k; t++) {
      const us = r.U[i * r.k + t] * r.S[t];
      if (us === 0) continue;
      for (let j = 0; j < r.n; j++) out[i * r.n + j] += us * r.Vt[t * r.n + j];
    }
  }
  return out;
}

function frobenius(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

function residualNorm(a: MatrixF32, r: TruncatedSvd): number {
  const rec = reconstruct(r);
  let s = 0;
  for (let i = 0; i < rec.length; i++) s += (rec[i] - a.data[i]) ** 2;
  return Math.sqrt(s);
}

/** Largest |Q^T Q - I| over the k columns of Q [rows, k] (columns: stride k) or rows (stride 1). */
function orthogonalityError(q: Float32Array, rows: number, k: number, columns: boolean): number {
  let worst = 0;
  for (let i = 0; i < k; i++) {
    for (let j = 0; j <= i; j++) {
      let d = 0;
      for (let r = 0; r < rows; r++) d += columns ? q[r * k + i] * q[r * k + j] : q[i * rows + r] * q[j * rows + r];
      worst = Math.max(worst, Math.abs(d - (i === j ? 1 : 0)));
    }
  }
  return worst;
}

function checkOrthonormal(r: TruncatedSvd, tol = 1e-5): void {
  expect(orthogonalityError(r.U, r.m, r.k, true)).toBeLessThan(tol);
  expect(orthogonalityError(r.Vt, r.n, r.k, false)).toBeLessThan(tol);
  for (let i = 1; i < r.k; i++) expect(r.S[i]).toBeLessThanOrEqual(r.S[i - 1]);
}

/** U diag(sigma) V^T with random orthonormal U [m, s], V [n, s] (s = sigma.length). */
function withSpectrum(m: number, n: number, sigma: number[], seed: number): MatrixF32 {
  const s = sigma.length;
  const u = exactSvd(gaussian(m, s, seed), s).U; // [m, s]
  const v = exactSvd(gaussian(n, s, seed + 1), s).U; // [n, s]
  const data = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let t = 0; t < s; t++) acc += u[i * s + t] * sigma[t] * v[j * s + t];
      data[i * n + j] = acc;
    }
  }
  return { shape: [m, n], data };
}

describe('symmetricEigen', () => {
  it.each([1, 2, 3, 10, 40])('decomposes a random symmetric %i x %i matrix', (n) => {
    const g = new Generator(n);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) a[i * n + j] = a[j * n + i] = g.normal();
    const { values, vectors } = symmetricEigen(a, n);
    for (let i = 1; i < n; i++) expect(values[i]).toBeLessThanOrEqual(values[i - 1]);
    for (let e = 0; e < n; e++) {
      for (let r = 0; r < n; r++) {
        let av = 0;
        for (let c = 0; c < n; c++) av += a[r * n + c] * vectors[e * n + c];
        expect(Math.abs(av - values[e] * vectors[e * n + r])).toBeLessThan(1e-10);
      }
      for (let f = 0; f <= e; f++) {
        let d = 0;
        for (let c = 0; c < n; c++) d += vectors[e * n + c] * vectors[f * n + c];
        expect(Math.abs(d - (e === f ? 1 : 0))).toBeLessThan(1e-10);
      }
    }
  });

  it('handles repeated and zero eigenvalues', () => {
    const n = 6;
    const a = new Float64Array(n * n);
    [3, 3, 3, 0, 0, -1].forEach((v, i) => (a[i * n + i] = v));
    expect([...symmetricEigen(a, n).values]).toEqual([3, 3, 3, 0, 0, -1]);
    expect([...symmetricEigen(new Float64Array(16), 4).values]).toEqual([0, 0, 0, 0]);
  });
});

describe('exactSvd', () => {
  it.each([[7, 5], [5, 7], [1, 9], [9, 1], [30, 30], [64, 40]])('%i x %i: singular values of the Jacobi oracle, exact reconstruction', (m, n) => {
    const a = gaussian(m, n, m * 100 + n);
    const r = exactSvd(a, Math.min(m, n));
    const oracle = jacobiSingularValues(a);
    oracle.forEach((s, i) => expect(Math.abs(r.S[i] - s)).toBeLessThan(1e-9 * oracle[0]));
    expect(residualNorm(a, r)).toBeLessThan(1e-6 * frobenius(a.data));
    checkOrthonormal(r);
  });

  it('a rank-3 matrix: zero singular values past 3, still an orthonormal basis and exact', () => {
    const x = gaussian(20, 3, 1), y = gaussian(3, 30, 2);
    const data = new Float32Array(600);
    for (let i = 0; i < 20; i++) for (let j = 0; j < 30; j++) for (let t = 0; t < 3; t++) data[i * 30 + j] += x.data[i * 3 + t] * y.data[t * 30 + j];
    const a = { shape: [20, 30], data };
    const r = exactSvd(a, 20);
    expect(r.S[3] / r.S[0]).toBeLessThan(1e-6);
    expect(residualNorm(a, r)).toBeLessThan(1e-6 * frobenius(data));
    checkOrthonormal(r);
  });

  it('property: any small matrix is reproduced at full rank by orthonormal factors', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 1000 }), fc.boolean(), (m, n, seed, lowRank) => {
        let a = gaussian(m, n, seed);
        if (lowRank && m > 1) {
          // Repeat the first row: rank drops by at least one.
          const data = a.data.slice();
          data.set(data.subarray(0, n), n);
          a = { shape: [m, n], data };
        }
        const r = exactSvd(a, Math.min(m, n));
        expect(residualNorm(a, r)).toBeLessThan(1e-6 * Math.max(frobenius(a.data), 1e-30));
        checkOrthonormal(r);
      }),
      { numRuns: 60 },
    );
  });
});

describe('truncatedSvd', () => {
  it('a decaying spectrum: the top singular values and the Eckart-Young error, wide and tall', () => {
    const sigma = Array.from({ length: 60 }, (_, i) => 0.85 ** i);
    for (const [m, n] of [[150, 400], [400, 150]]) {
      const a = withSpectrum(m, n, sigma, 5);
      const k = 12;
      const r = truncatedSvd(a, k, { backend });
      expect(r.method).toBe('randomized');
      expect(r.k).toBe(k);
      for (let i = 0; i < k; i++) expect(Math.abs(r.S[i] - sigma[i]) / sigma[i]).toBeLessThan(1e-4);
      const optimum = Math.sqrt(sigma.slice(k).reduce((s, x) => s + x * x, 0));
      expect(residualNorm(a, r)).toBeLessThan(optimum * 1.001);
      checkOrthonormal(r);
    }
  });

  it.each(availableBackends().map((b) => [b.name, b] as const))('runs its products on the %s backend', (_name, b) => {
    const sigma = Array.from({ length: 40 }, (_, i) => 0.8 ** i);
    const a = withSpectrum(90, 220, sigma, 21);
    const r = randomizedSvd(a, 6, { backend: b });
    for (let i = 0; i < 6; i++) expect(Math.abs(r.S[i] - sigma[i]) / sigma[i]).toBeLessThan(1e-4);
    checkOrthonormal(r, 1e-4);
  });

  it('a flat (Gaussian) spectrum, the hard case: error within 3% of the optimum', () => {
    const a = gaussian(120, 300, 9);
    const k = 20;
    const oracle = jacobiSingularValues(a);
    const optimum = Math.sqrt(oracle.slice(k).reduce((s, x) => s + x * x, 0));
    const r = randomizedSvd(a, k, { backend });
    expect(residualNorm(a, r)).toBeLessThan(optimum * 1.03);
    expect(residualNorm(a, r)).toBeGreaterThanOrEqual(optimum * (1 - 1e-6));
    for (let i = 0; i < k; i++) expect(r.S[i]).toBeLessThanOrEqual(oracle[i] * (1 + 1e-5));
    checkOrthonormal(r);
    // More power iterations get closer.
    const sharper = randomizedSvd(a, k, { backend, powerIterations: 6 });
    expect(residualNorm(a, sharper)).toBeLessThan(residualNorm(a, r));
  });

  it('rank-deficient input: the basis is completed, the matrix reproduced', () => {
    const sigma = [5, 3, 2, 1];
    const a = withSpectrum(100, 260, sigma, 11);
    const r = truncatedSvd(a, 10, { backend });
    expect(r.method).toBe('randomized');
    sigma.forEach((s, i) => expect(Math.abs(r.S[i] - s)).toBeLessThan(1e-5 * s));
    for (let i = 4; i < 10; i++) expect(r.S[i]).toBeLessThan(1e-5);
    expect(residualNorm(a, r)).toBeLessThan(1e-5 * frobenius(a.data));
    checkOrthonormal(r, 1e-4);
  });

  it('a zero matrix gives zero singular values with orthonormal factors on both paths', () => {
    for (const method of ['exact', 'randomized'] as const) {
      const r = truncatedSvd({ shape: [80, 120], data: new Float32Array(9600) }, 5, { backend, method });
      expect([...r.S]).toEqual([0, 0, 0, 0, 0]);
      checkOrthonormal(r);
    }
  });

  it("'auto' goes exact for small matrices and ranks near full, randomized otherwise", () => {
    expect(truncatedSvd(gaussian(40, 50, 1), 3, { backend }).method).toBe('exact');
    expect(truncatedSvd(gaussian(100, 120, 1), 95, { backend }).method).toBe('exact');
    expect(truncatedSvd(gaussian(100, 120, 1), 20, { backend }).method).toBe('randomized');
    expect(truncatedSvd(gaussian(10, 20, 1), 0).k).toBe(0);
    expect(truncatedSvd(gaussian(10, 20, 1), 50).k).toBe(10);
  });

  it('is reproducible from its seed', () => {
    const a = gaussian(90, 200, 4);
    const r1 = randomizedSvd(a, 8, { backend, seed: 3 }), r2 = randomizedSvd(a, 8, { backend, seed: 3 });
    expect(r1.U).toEqual(r2.U);
    expect(r1.Vt).toEqual(r2.Vt);
  });

  it('rejects bad input with a message naming it', () => {
    expect(() => truncatedSvd({ shape: [2, 3], data: new Float32Array(5) }, 1)).toThrow(ShapeError);
    expect(() => truncatedSvd({ shape: [6], data: new Float32Array(6) }, 1)).toThrow(/2-D/);
    expect(() => truncatedSvd({ shape: [2, 2], data: Float32Array.of(1, NaN, 0, 1) }, 1)).toThrow(/entry 1/);
    expect(() => truncatedSvd(gaussian(3, 3, 1), -1)).toThrow(RrtError);
    expect(() => truncatedSvd(gaussian(3, 3, 1), 1, { method: 'qr' as never })).toThrow(/method/);
  });
});
