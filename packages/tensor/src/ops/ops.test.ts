import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  Tensor, abs, add, affine, availableBackends, backendByName, broadcastTo, causalMask, clamp, concat, crossEntropy, div,
  exp, fromValues, gather, gelu, gradcheck, indexAdd, indexSelect, klDivergence, layerNorm, log, logSoftmax, logsumexp, matmul, max,
  maximum, mean, minimum, mul, narrow, neg, pad, permute, pow, relu, reshape, rmsNorm, rsqrt, sigmoid, silu, slice, softmax,
  split, sqrt, stack, sub, sum, tanh, tensor, tidy, transpose, variance, where, attention, min, argmax, ShapeError,
  causalSoftmax, cachedAttention, noGrad, RrtError, linear,
} from '../index.js';

interface Case {
  name: string;
  shapes: number[][];
  fn: (...t: Tensor[]) => Tensor;
  /** Input value generator (default: normal-ish in [-2, 2]). */
  values?: (n: number, rng: Generator, input: number) => number[];
}

const positive = (n: number, rng: Generator): number[] => Array.from({ length: n }, () => 0.5 + 2 * rng.next());
const targets = [1, 0, 3, 2, -100, 4];
const mask = (like: Tensor) => fromValues(Float32Array.from([1, 0, 0, 1, 1, 0]), [2, 3], like.backend);

const cases: Case[] = [
  { name: 'add broadcast', shapes: [[2, 3, 4], [3, 1]], fn: (a, b) => add(a, b) },
  { name: 'sub broadcast', shapes: [[2, 1, 4], [3, 4]], fn: (a, b) => sub(a, b) },
  { name: 'mul broadcast', shapes: [[4], [3, 4]], fn: (a, b) => mul(a, b) },
  { name: 'div', shapes: [[3, 4], [3, 4]], fn: (a, b) => div(a, b), values: (n, r, i) => (i === 1 ? positive(n, r) : normal(n, r)) },
  { name: 'scalar ops', shapes: [[5]], fn: (a) => add(mul(sub(a, 2), 3), div(a, 4)) },
  { name: 'neg', shapes: [[5]], fn: (a) => neg(a) },
  { name: 'pow', shapes: [[6]], fn: (a) => pow(a, 3) },
  { name: 'pow fractional', shapes: [[6]], fn: (a) => pow(a, 1.5), values: positive },
  { name: 'exp', shapes: [[6]], fn: exp },
  { name: 'log', shapes: [[6]], fn: log, values: positive },
  { name: 'sqrt', shapes: [[6]], fn: sqrt, values: positive },
  { name: 'rsqrt', shapes: [[6]], fn: rsqrt, values: positive },
  { name: 'abs', shapes: [[6]], fn: abs },
  { name: 'tanh', shapes: [[6]], fn: tanh },
  { name: 'sigmoid', shapes: [[6]], fn: sigmoid },
  { name: 'relu', shapes: [[6]], fn: relu },
  { name: 'gelu erf', shapes: [[7]], fn: (a) => gelu(a) },
  { name: 'gelu tanh', shapes: [[7]], fn: (a) => gelu(a, 'tanh') },
  { name: 'silu', shapes: [[7]], fn: silu },
  { name: 'clamp', shapes: [[8]], fn: (a) => clamp(a, -0.5, 0.7) },
  { name: 'maximum', shapes: [[2, 3], [3]], fn: (a, b) => maximum(a, b) },
  { name: 'minimum', shapes: [[2, 3], [2, 3]], fn: (a, b) => minimum(a, b) },
  { name: 'where', shapes: [[2, 3], [3]], fn: (a, b) => where(mask(a), a, b) },
  { name: 'matmul', shapes: [[3, 5], [5, 4]], fn: (a, b) => matmul(a, b) },
  { name: 'matmul transA', shapes: [[5, 3], [5, 4]], fn: (a, b) => matmul(a, b, { transA: true }) },
  { name: 'matmul transB', shapes: [[3, 5], [4, 5]], fn: (a, b) => matmul(a, b, { transB: true }) },
  { name: 'matmul transA transB', shapes: [[5, 3], [4, 5]], fn: (a, b) => matmul(a, b, { transA: true, transB: true }) },
  { name: 'matmul batched broadcast', shapes: [[2, 1, 3, 4], [3, 4, 2]], fn: (a, b) => matmul(a, b) },
  { name: 'matmul shared weight', shapes: [[2, 3, 4], [4, 5]], fn: (a, b) => matmul(a, b) },
  { name: 'sum all', shapes: [[2, 3, 4]], fn: (a) => sum(a) },
  { name: 'sum axes keepdims', shapes: [[2, 3, 4]], fn: (a) => sum(a, [0, 2], true) },
  { name: 'mean axis', shapes: [[2, 3, 4]], fn: (a) => mean(a, 1) },
  { name: 'max axis', shapes: [[3, 5]], fn: (a) => max(a, -1) },
  { name: 'max non-contiguous axes', shapes: [[2, 3, 4]], fn: (a) => max(a, [0, 2]) },
  { name: 'min', shapes: [[3, 4]], fn: (a) => min(a, 0, true) },
  { name: 'logsumexp', shapes: [[3, 5]], fn: (a) => logsumexp(a, 1) },
  { name: 'var', shapes: [[3, 5]], fn: (a) => variance(a, -1) },
  { name: 'softmax', shapes: [[3, 5]], fn: (a) => softmax(a) },
  { name: 'softmax axis 0', shapes: [[3, 5]], fn: (a) => softmax(a, 0) },
  { name: 'logSoftmax', shapes: [[2, 2, 5]], fn: (a) => logSoftmax(a) },
  { name: 'layerNorm', shapes: [[4, 6], [6], [6]], fn: (x, w, b) => layerNorm(x, w, b) },
  { name: 'layerNorm no affine', shapes: [[4, 6]], fn: (x) => layerNorm(x, null, null) },
  { name: 'rmsNorm', shapes: [[4, 6], [6]], fn: (x, w) => rmsNorm(x, w) },
  { name: 'rmsNorm gemma', shapes: [[4, 6], [6]], fn: (x, w) => rmsNorm(x, w, 1e-6, true) },
  { name: 'crossEntropy mean', shapes: [[6, 5]], fn: (x) => crossEntropy(x, targets) },
  { name: 'crossEntropy sum', shapes: [[2, 3, 5]], fn: (x) => crossEntropy(x, targets, { reduction: 'sum' }) },
  { name: 'crossEntropy none', shapes: [[6, 5]], fn: (x) => crossEntropy(x, targets, { reduction: 'none' }) },
  { name: 'kl forward T=2', shapes: [[3, 5], [3, 5]], fn: (s, t) => klDivergence(s, t, { temperature: 2 }) },
  { name: 'kl reverse', shapes: [[3, 5], [3, 5]], fn: (s, t) => klDivergence(s, t, { direction: 'reverse' }) },
  { name: 'reshape', shapes: [[2, 6]], fn: (a) => mul(reshape(a, [3, -1]), reshape(a, [3, 4])) },
  { name: 'permute', shapes: [[2, 3, 4]], fn: (a) => permute(a, [2, 0, 1]) },
  { name: 'transpose', shapes: [[2, 3, 4]], fn: (a) => transpose(a, 0, 2) },
  { name: 'slice', shapes: [[4, 5]], fn: (a) => slice(a, [[1, 3], [-3, 5]]) },
  { name: 'concat', shapes: [[2, 3], [2, 2]], fn: (a, b) => concat([a, b, a], 1) },
  { name: 'stack', shapes: [[2, 3], [2, 3]], fn: (a, b) => stack([a, b], 1) },
  { name: 'split', shapes: [[4, 3]], fn: (a) => { const [x, y] = split(a, [1, 3], 0); return add(sum(x), mul(y, 2)); } },
  { name: 'narrow', shapes: [[3, 6]], fn: (a) => narrow(a, 1, 2, 3) },
  { name: 'pad', shapes: [[2, 3]], fn: (a) => pad(a, [[1, 0], [2, 1]], 0.5) },
  { name: 'gather repeated ids', shapes: [[5, 3]], fn: (t) => gather(t, [4, 0, 4, 2], [2, 2]) },
  { name: 'indexAdd repeated ids', shapes: [[5, 3], [4, 3]], fn: (x, s) => indexAdd(x, [4, 0, 4, 2], s) },
  { name: 'indexSelect axis 1', shapes: [[2, 5, 3]], fn: (t) => indexSelect(t, 1, [3, 3, 0]) },
  { name: 'broadcastTo', shapes: [[3, 1]], fn: (t) => broadcastTo(t, [2, 3, 4]) },
  { name: 'attention causal', shapes: [[1, 2, 4, 3], [1, 2, 4, 3], [1, 2, 4, 3]], fn: (q, k, v) => attention(q, k, v, causalMask(4, 4, 0, q.backend)) },
  { name: 'linear with bias', shapes: [[2, 3, 5], [4, 5], [4]], fn: (x, w, b) => linear(x, w, b) },
  { name: 'linear one row', shapes: [[1, 5], [4, 5], [4]], fn: (x, w, b) => linear(x, w, b) },
  { name: 'linear no bias', shapes: [[3, 5], [4, 5]], fn: (x, w) => linear(x, w) },
  { name: 'causalSoftmax grouped rows', shapes: [[2, 6, 5]], fn: (a) => causalSoftmax(a, { scale: 0.5, period: 3 }) },
  { name: 'causalSoftmax square', shapes: [[2, 4, 4]], fn: (a) => causalSoftmax(a) },
  { name: 'cachedAttention', shapes: [[2, 3, 4], [2, 5, 4], [2, 5, 4]], fn: (q, k, v) => cachedAttention(q, k, v, 4) },
  { name: 'cachedAttention masked full', shapes: [[2, 3, 4], [2, 4, 4], [2, 4, 4]], fn: (q, k, v) => cachedAttention(q, k, v, 4, { mask: causalMask(3, 4, 1, q.backend), scale: 0.3 }) },
  { name: 'cachedAttention causal', shapes: [[2, 6, 4], [2, 5, 4], [2, 5, 4]], fn: (q, k, v) => cachedAttention(q, k, v, 5, { causal: { period: 3, offset: 2 } }) },
  { name: 'reuse of one input', shapes: [[3]], fn: (a) => mul(add(a, a), a) },
];

function normal(n: number, rng: Generator): number[] {
  return Array.from({ length: n }, () => Math.max(-2, Math.min(2, rng.normal())));
}

class Generator {
  private s: number;
  constructor(seed: number) { this.s = seed; }
  next(): number { this.s = (Math.imul(this.s, 1103515245) + 12345) >>> 0; return this.s / 4294967296; }
  normal(): number { return Math.sqrt(-2 * Math.log(this.next() + 1e-12)) * Math.cos(2 * Math.PI * this.next()); }
}

function inputsFor(c: Case) {
  const rng = new Generator(c.name.length * 7919);
  return c.shapes.map((shape, i) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return { shape, values: (c.values ?? normal)(n, rng, i) };
  });
}

const backends = availableBackends();

describe.each(backends.map((b) => [b.name, b] as const))('ops on %s', (_name, backend) => {
  for (const c of cases) {
    it(`${c.name}: forward matches ref`, () => {
      const ins = inputsFor(c);
      const run = (b: typeof backend) => tidy(() => c.fn(...ins.map((i) => fromValues(Float32Array.from(i.values), i.shape, b))).dataSync());
      const got = run(backend);
      const want = run(backendByName('ref'));
      expect(got.length).toBe(want.length);
      for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i], 4);
    });
    it(`${c.name}: gradient matches float64 finite differences`, () => {
      const r = gradcheck(c.fn, inputsFor(c), { backend });
      expect(r.maxError).toBeLessThan(2e-3);
    });
  }
});

describe.each(backends.map((b) => [b.name, b] as const))('fused attention pieces on %s equal the composite ops', (_name, backend) => {
  const values = (shape: number[], seed: number) => {
    const rng = new Generator(seed);
    return fromValues(Float32Array.from(normal(shape.reduce((a, b) => a * b, 1), rng)), shape, backend);
  };
  const close = (got: Float32Array, want: Float32Array) => {
    expect(got.length).toBe(want.length);
    for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i], 5);
  };
  it('causalSoftmax is softmax(scale * x + mask) with rows grouped by period', () => {
    tidy(() => {
      const x = values([2, 3 * 4, 7], 11); // 3 groups of 4 queries over 7 keys: offset 3
      const mask = causalMask(4, 7, 3, backend);
      const want = reshape(softmax(add(reshape(affine(x, 0.25, 0), [6, 4, 7]), mask)), [2, 12, 7]).dataSync();
      close(causalSoftmax(x, { scale: 0.25, period: 4 }).dataSync(), want);
      const row = causalSoftmax(x, { scale: 0.25, period: 4 }).dataSync().subarray(0, 7);
      expect(Array.from(row.subarray(4))).toEqual([0, 0, 0]); // query 0 sees keys 0..3
    });
  });
  it('cachedAttention without gradients reads the cache in place and equals attention over the filled part', () => {
    tidy(() => {
      const q = values([2, 3, 8], 5), k = values([2, 10, 8], 6), v = values([2, 10, 8], 7);
      const mask = causalMask(3, 6, 3, backend);
      const want = attention(q, slice(k, [null, [0, 6]]), slice(v, [null, [0, 6]]), mask, 0.4).dataSync();
      close(noGrad(() => cachedAttention(q, k, v, 6, { mask, scale: 0.4 })).dataSync(), want);
      close(noGrad(() => cachedAttention(q, k, v, 10)).dataSync(), attention(q, k, v, null).dataSync());
      close(noGrad(() => cachedAttention(q, k, v, 6, { causal: { period: 3, offset: 3 }, scale: 0.4 })).dataSync(), want);
    });
  });
  it('linear equals matmul with the transposed weight plus the bias', () => {
    tidy(() => {
      const x = values([2, 7, 9], 3), w = values([6, 9], 4), b = values([6], 5);
      close(linear(x, w, b).dataSync(), add(matmul(reshape(x, [14, 9]), w, { transB: true }), b).dataSync());
      expect(linear(x, w, b).shape).toEqual([2, 7, 6]);
      expect(() => linear(x, values([6, 8], 1))).toThrow(/linear: x must be \[\.\.\., 8\]/);
      expect(() => linear(x, w, values([5], 1))).toThrow(/bias must be \[6\]/);
    });
  });
  it('reject bad arguments with what was given', () => {
    tidy(() => {
      const q = values([2, 3, 8], 5), k = values([2, 10, 8], 6);
      expect(() => cachedAttention(q, k, k, 11)).toThrow(/length must be an integer in \[1, 10\].*got 11/);
      expect(() => cachedAttention(q, k, k, 4, { mask: causalMask(3, 5, 2, backend) })).toThrow(/mask must be \[3, 4\]/);
      expect(() => cachedAttention(q, values([2, 10, 4], 1), k, 4)).toThrow(ShapeError);
      expect(() => causalSoftmax(k, { period: 3 })).toThrow(RrtError);
      expect(() => causalSoftmax(values([2, 4, 4], 2), { scale: -1 })).toThrow(/scale must be a positive/);
      expect(() => causalSoftmax(k)).toThrow(/offset must be a non-negative integer.*got -2/);
    });
  });
});

describe('errors say what they got', () => {
  it('matmul inner dimensions', () => {
    expect(() => matmul(tensor([[1, 2, 3], [4, 5, 6]]), tensor([[1, 2], [3, 4], [5, 6], [7, 8]]))).toThrow(/matmul: inner dimensions differ: \[2,3\] x \[4,2\]/);
  });
  it('broadcast', () => {
    expect(() => add(tensor([1, 2, 3]), tensor([1, 2]))).toThrow(ShapeError);
  });
  it('reshape', () => {
    expect(() => reshape(tensor([1, 2, 3]), [2, 2])).toThrow(/cannot view \[3\]/);
  });
  it('crossEntropy target range', () => {
    expect(() => crossEntropy(tensor([[1, 2]]), [5])).toThrow(/out of range/);
  });
  it('gather id range', () => {
    expect(() => gather(tensor([[1, 2]]), [1])).toThrow(/index 1 at position 0 is out of range \[0, 1\)/);
  });
  it('indexAdd ids and shapes', () => {
    expect(Array.from(indexAdd(tensor([[1, 2], [3, 4]]), [1, 1], tensor([[10, 20], [100, 200]])).dataSync())).toEqual([1, 2, 113, 224]);
    expect(() => indexAdd(tensor([[1, 2]]), [1], tensor([[1, 2]]))).toThrow(/index 1 at position 0 is out of range/);
    expect(() => indexAdd(tensor([[1, 2]]), [0, 0], tensor([[1, 2]]))).toThrow(/src must be \[2, 2\]/);
  });
  it('use after dispose', () => {
    const t = tensor([1]);
    t.dispose();
    expect(() => t.dataSync()).toThrow(/after dispose/);
  });
});

describe('values', () => {
  it('argmax and reductions on known data', () => {
    const t = tensor([[1, 5, 3], [7, 2, 7]]);
    expect(Array.from(argmax(t, -1).dataSync())).toEqual([1, 0]);
    expect(Array.from(sum(t, 0).dataSync())).toEqual([8, 7, 10]);
    expect(max(t).item()).toBe(7);
  });
  it('softmax of a row with -inf stays finite', () => {
    const s = softmax(tensor([[0, -Infinity, 0]])).dataSync();
    expect(Array.from(s)).toEqual([0.5, 0, 0.5]);
  });
  it('gradient accumulates across backward calls and uses', () => {
    const w = tensor([1, 2], undefined, { requiresGrad: true });
    sum(mul(w, w)).backward();
    sum(affine(w, 3, 0)).backward();
    expect(Array.from(w.grad!.dataSync())).toEqual([5, 7]);
  });
});

describe('broadcasting and shape ops (property tests)', () => {
  const dims = fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 3 });
  it('add broadcasts like numpy: each output element is a[idx mod] + b[idx mod]', () => {
    fc.assert(
      fc.property(dims, fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }), (shape, ones) => {
        const bShape = shape.map((d, i) => (ones[i] ? 1 : d));
        const n = shape.reduce((a, b) => a * b, 1), m = bShape.reduce((a, b) => a * b, 1);
        const a = tensor(Float32Array.from({ length: n }, (_, i) => i), shape);
        const b = tensor(Float32Array.from({ length: m }, (_, i) => 100 * i), bShape);
        const out = tidy(() => add(a, b).dataSync());
        // Recompute each element from its multi-index.
        for (let o = 0; o < n; o++) {
          let rem = o, bi = 0, stride = 1;
          const idx = shape.map(() => 0);
          for (let d = shape.length - 1; d >= 0; d--) { idx[d] = rem % shape[d]; rem = Math.floor(rem / shape[d]); }
          for (let d = shape.length - 1; d >= 0; d--) { bi += (bShape[d] === 1 ? 0 : idx[d]) * stride; stride *= bShape[d]; }
          if (out[o] !== o + 100 * bi) return false;
        }
        a.dispose(); b.dispose();
        return true;
      }),
      { numRuns: 60 },
    );
  });
  it('permute then inverse permute is the identity; concat of split is the identity', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 4 }), fc.nat(), (shape, seed) => {
        const n = shape.reduce((a, b) => a * b, 1);
        const perm = shape.map((_, i) => i).sort((x, y) => ((x * 7 + seed) % 5) - ((y * 7 + seed) % 5));
        const inverse = new Array<number>(perm.length);
        perm.forEach((a, i) => (inverse[a] = i));
        return tidy(() => {
          const t = tensor(Float32Array.from({ length: n }, (_, i) => i), shape);
          const back = permute(permute(t, perm), inverse).dataSync();
          const axis = seed % shape.length;
          const parts = split(t, shape[axis] === 1 ? 1 : [1, shape[axis] - 1], axis);
          const joined = concat(parts, axis).dataSync();
          return back.every((v, i) => v === i) && joined.every((v, i) => v === i);
        });
      }),
      { numRuns: 60 },
    );
  });
});
