import { describe, expect, it } from 'vitest';
import { type Backend, add, availableBackends, fromValues, groupedLinear, linear, mul, narrow, noGrad, packWeights, sum, tidy } from '../index.js';

/** Seeded values in [-1.5, 1.5). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return 3 * (s / 4294967296) - 1.5;
  });
}

/** x W_g^T + b_g per row, written out in float64: row i takes the group its index falls in. */
function expected(x: Float32Array, rows: number[], ws: Float32Array[], bs: (Float32Array | null)[], k: number, n: number): Float64Array {
  const N = rows.reduce((a, b) => a + b, 0);
  const out = new Float64Array(N * n);
  let i = 0;
  rows.forEach((r, g) => {
    for (let end = i + r; i < end; i++) {
      for (let j = 0; j < n; j++) {
        let acc = bs[g]?.[j] ?? 0;
        for (let p = 0; p < k; p++) acc += x[i * k + p] * ws[g][j * k + p];
        out[i * n + j] = acc;
      }
    }
  });
  return out;
}

function expectClose(actual: Float32Array, want: Float64Array, what: string): void {
  expect(actual.length, what).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(actual[i] - want[i]) / (1 + Math.abs(want[i])));
  expect(worst, what).toBeLessThan(1e-5);
}

const cases: [string, { rows: number[]; k: number; n: number; bias?: boolean }][] = [
  ['two depths of a serving call', { rows: [30, 10], k: 64, n: 48 }],
  ['few rows per group', { rows: [3, 1, 5], k: 20, n: 36 }],
  ['an empty group, odd k and n', { rows: [17, 0, 70, 2], k: 33, n: 19 }],
  ['every group with a bias', { rows: [6, 9], k: 16, n: 24, bias: true }],
  ['one group', { rows: [12], k: 16, n: 16, bias: true }],
];

describe.each(availableBackends().map((b) => [b.name, b] as const))('groupedLinear on %s', (_name, backend: Backend) => {
  for (const [name, c] of cases) {
    it(`${name}: each group's rows through its own weight`, () => {
      const N = c.rows.reduce((a, b) => a + b, 0);
      const x = values(N * c.k, 1);
      const ws = c.rows.map((_, g) => values(c.n * c.k, 10 + g));
      const bs = c.rows.map((_, g) => (c.bias ? values(c.n, 20 + g) : null));
      const out = noGrad(() => tidy(() => groupedLinear(fromValues(x, [N, c.k], backend), c.rows.map((rows, g) => ({
        rows,
        weight: fromValues(ws[g], [c.n, c.k], backend),
        bias: bs[g] ? fromValues(bs[g]!, [c.n], backend) : null,
      }))).dataSync()));
      expectClose(out, expected(x, c.rows, ws, bs, c.k, c.n), name);
    });
  }

  it('groups with and without biases: the same values as a linear per group', () => {
    const x = fromValues(values(7 * 8, 3), [7, 8], backend);
    const w = [fromValues(values(40, 4), [5, 8], backend), fromValues(values(40, 5), [5, 8], backend)];
    const b = fromValues(values(5, 6), [5], backend);
    const got = groupedLinear(x, [{ rows: 4, weight: w[0], bias: b }, { rows: 3, weight: w[1] }]).dataSync();
    const xs = x.dataSync();
    expectClose(got, expected(xs, [4, 3], w.map((t) => t.dataSync()), [b.dataSync(), null], 8, 5), 'mixed biases');
  });

  it('with gradients it runs a linear per group: the gradients of x, every weight and bias', () => {
    const k = 6, n = 4, rows = [3, 2];
    const mk = (seed: number, shape: number[]) => fromValues(values(shape.reduce((a, b) => a * b, 1), seed), shape, backend).requireGrad();
    const x = mk(1, [5, k]);
    const w = [mk(2, [n, k]), mk(3, [n, k])];
    const b = [mk(4, [n]), mk(5, [n])];
    const weights = fromValues(values(5 * n, 6), [5, n], backend);
    sum(mul(groupedLinear(x, rows.map((r, g) => ({ rows: r, weight: w[g], bias: b[g] }))), weights)).backward();
    // The same loss through plain linears on row slices of a copy of x.
    const x2 = mk(1, [5, k]);
    const w2 = [mk(2, [n, k]), mk(3, [n, k])];
    const b2 = [mk(4, [n]), mk(5, [n])];
    const y = [linear(narrow(x2, 0, 0, 3), w2[0], b2[0]), linear(narrow(x2, 0, 3, 2), w2[1], b2[1])];
    add(sum(mul(y[0], narrow(weights, 0, 0, 3))), sum(mul(y[1], narrow(weights, 0, 3, 2)))).backward();
    for (const [a, e, what] of [[x, x2, 'x'], [w[0], w2[0], 'w0'], [w[1], w2[1], 'w1'], [b[0], b2[0], 'b0'], [b[1], b2[1], 'b1']] as const) {
      expectClose(a.grad!.dataSync(), Float64Array.from(e.grad!.dataSync()), `gradient of ${what}`);
    }
  });

  it('rejects groups that do not add up or do not match, saying what was given', () => {
    const x = fromValues(values(12, 1), [3, 4], backend);
    const w = fromValues(values(8, 2), [2, 4], backend);
    expect(() => groupedLinear(x, [])).toThrow(/no groups/);
    expect(() => groupedLinear(x, [{ rows: 2, weight: w }])).toThrow(/hold 2 rows, x has 3/);
    expect(() => groupedLinear(x, [{ rows: 1, weight: w }, { rows: 2, weight: fromValues(values(12, 3), [3, 4], backend) }])).toThrow(/group 1's weight is \[3,4\], group 0's \[2,4\]/);
    expect(() => groupedLinear(x, [{ rows: 3, weight: w, bias: fromValues(values(3, 4), [3], backend) }])).toThrow(/bias must be \[2\], got \[3\]/);
    expect(() => groupedLinear(x, [{ rows: 1.5, weight: w }, { rows: 1.5, weight: w }])).toThrow(/1.5 rows/);
    expect(() => groupedLinear(fromValues(values(9, 1), [3, 3], backend), [{ rows: 3, weight: w }])).toThrow(/x must be \[N, 4\] and the weights \[out, in\], got x \[3,3\]/);
  });
});

describe.each(availableBackends().map((b) => [b.name, b] as const))('packWeights on %s', (name, backend: Backend) => {
  it('linear and groupedLinear give the same values with the weights packed; release hands them back', () => {
    const k = 40, n = 24, N = 20;
    const x = values(N * k, 7), wv = [values(n * k, 8), values(n * k, 9)], bv = values(n, 10);
    const xt = fromValues(x, [N, k], backend), bias = fromValues(bv, [n], backend);
    const ws = wv.map((v) => fromValues(v, [n, k], backend));
    const handle = packWeights([ws[0], ws[1], ws[0], bias]); // a repeat and a vector: skipped
    // cpu keeps packed forms; ref and gpu have none to keep.
    expect(handle.count).toBe(name === 'cpu' ? 2 : 0);
    expectClose(noGrad(() => linear(xt, ws[0], bias).dataSync()), expected(x, [N], [wv[0]], [bv], k, n), 'linear');
    const grouped = noGrad(() => groupedLinear(xt, [{ rows: 17, weight: ws[0] }, { rows: 3, weight: ws[1] }]).dataSync());
    expectClose(grouped, expected(x, [17, 3], wv, [null, null], k, n), 'groupedLinear');
    handle.release();
    handle.release();
    if (name === 'cpu') expect(Number(backend.info().details.packedWeights)).toBe(0);
  });
});
