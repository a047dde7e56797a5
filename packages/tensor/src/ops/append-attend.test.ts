import { describe, expect, it } from 'vitest';
import { type Backend, type CacheSegment, appendAttend, availableBackends, copyRuns, fromValues, noGrad, sum, tidy, zeros } from '../index.js';

/** Seeded values in [-1.5, 1.5). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return 3 * (s / 4294967296) - 1.5;
  });
}

interface Layout {
  H: number;
  KV: number;
  Dh: number;
  /** Per segment: cache capacity, entries already cached, new tokens. */
  segments: { capacity: number; start: number; tokens: number }[];
}

/**
 * Attention written out from the definition, in float64 on the host: token t of segment i sees
 * the cache's first `start` entries and its segment's tokens 0..t.
 */
function expected(L: Layout, q: Float32Array, k: Float32Array, v: Float32Array, oldK: Float32Array[], oldV: Float32Array[]): Float64Array {
  const { H, KV, Dh } = L, G = H / KV;
  const S = L.segments.reduce((a, s) => a + s.tokens, 0);
  const out = new Float64Array(S * H * Dh);
  let row0 = 0;
  L.segments.forEach((seg, i) => {
    // Key/value of position p, KV head g.
    const entry = (buf: Float32Array, old: Float32Array, p: number, g: number, c: number) =>
      p < seg.start ? old[(g * seg.capacity + p) * Dh + c] : buf[((row0 + p - seg.start) * KV + g) * Dh + c];
    for (let t = 0; t < seg.tokens; t++) {
      const row = row0 + t;
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / G);
        const visible = seg.start + t + 1;
        const scores = Array.from({ length: visible }, (_, p) => {
          let d = 0;
          for (let c = 0; c < Dh; c++) d += q[(row * H + h) * Dh + c] * entry(k, oldK[i], p, g, c);
          return d / Math.sqrt(Dh);
        });
        const mx = Math.max(...scores);
        const w = scores.map((s) => Math.exp(s - mx));
        const z = w.reduce((a, b) => a + b, 0);
        for (let c = 0; c < Dh; c++) {
          let acc = 0;
          for (let p = 0; p < visible; p++) acc += (w[p] / z) * entry(v, oldV[i], p, g, c);
          out[(row * H + h) * Dh + c] = acc;
        }
      }
    }
    row0 += seg.tokens;
  });
  return out;
}

const layouts: [string, Layout][] = [
  ['decode rows (one token each), grouped heads, Dh 16', { H: 4, KV: 2, Dh: 16, segments: [{ capacity: 8, start: 3, tokens: 1 }, { capacity: 4, start: 0, tokens: 1 }, { capacity: 16, start: 9, tokens: 1 }] }],
  ['prompts and decode rows packed together, Dh 6 (not a multiple of 4)', { H: 3, KV: 3, Dh: 6, segments: [{ capacity: 8, start: 0, tokens: 5 }, { capacity: 6, start: 4, tokens: 1 }, { capacity: 12, start: 2, tokens: 3 }] }],
  ['one long prompt over a long cache, one KV head', { H: 2, KV: 1, Dh: 9, segments: [{ capacity: 40, start: 21, tokens: 7 }] }],
];

describe.each(availableBackends().map((b) => [b.name, b] as const))('appendAttend on %s', (_name, backend: Backend) => {
  const build = (L: Layout, seed: number) => {
    const S = L.segments.reduce((a, s) => a + s.tokens, 0);
    const q = values(S * L.H * L.Dh, seed), k = values(S * L.KV * L.Dh, seed + 1), v = values(S * L.KV * L.Dh, seed + 2);
    const oldK = L.segments.map((s, i) => values(L.KV * s.capacity * L.Dh, seed + 10 + i));
    const oldV = L.segments.map((s, i) => values(L.KV * s.capacity * L.Dh, seed + 20 + i));
    const segs: CacheSegment[] = L.segments.map((s, i) => ({
      k: fromValues(oldK[i], [L.KV, s.capacity, L.Dh], backend), v: fromValues(oldV[i], [L.KV, s.capacity, L.Dh], backend), start: s.start, tokens: s.tokens,
    }));
    const t = (x: Float32Array, heads: number) => fromValues(x, [S, heads, L.Dh], backend);
    return { q, k, v, oldK, oldV, segs, tq: t(q, L.H), tk: t(k, L.KV), tv: t(v, L.KV), S };
  };

  for (const [name, L] of layouts) {
    it(`${name}: equals attention written out, and writes each token's entries into its cache`, () => {
      tidy(() => {
        const b = build(L, name.length);
        const got = noGrad(() => appendAttend(b.tq, b.tk, b.tv, b.segs)).dataSync();
        const want = expected(L, b.q, b.k, b.v, b.oldK, b.oldV);
        expect(got.length).toBe(want.length);
        for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i], 4);
        // Cache contents: old entries before start, the new ones at start.., the rest untouched.
        let row0 = 0;
        L.segments.forEach((s, i) => {
          for (const [buf, src, old] of [[b.segs[i].k, b.k, b.oldK[i]], [b.segs[i].v, b.v, b.oldV[i]]] as const) {
            const cache = buf.dataSync();
            for (let g = 0; g < L.KV; g++) {
              for (let p = 0; p < s.capacity; p++) {
                for (let c = 0; c < L.Dh; c++) {
                  const at = (g * s.capacity + p) * L.Dh + c;
                  const isNew = p >= s.start && p < s.start + s.tokens;
                  expect(cache[at]).toBe(isNew ? src[((row0 + p - s.start) * L.KV + g) * L.Dh + c] : old[at]);
                }
              }
            }
          }
          row0 += s.tokens;
        });
      });
    });
  }

  it('with gradients on q it takes the per-segment path: same values, and q gets a gradient', () => {
    tidy(() => {
      const L = layouts[1][1];
      const a = build(L, 3), b = build(L, 3);
      const fast = noGrad(() => appendAttend(a.tq, a.tk, a.tv, a.segs)).dataSync();
      const q = b.tq;
      q.requiresGrad = true;
      const out = appendAttend(q, b.tk, b.tv, b.segs);
      const slow = out.dataSync();
      for (let i = 0; i < fast.length; i++) expect(slow[i]).toBeCloseTo(fast[i], 5);
      sum(out).backward();
      expect(q.grad?.shape).toEqual(q.shape);
      expect(q.grad!.dataSync().some((g) => g !== 0)).toBe(true);
    });
  });

  it('rejects segments that do not fit or do not add up, saying what was given', () => {
    tidy(() => {
      const L = layouts[0][1];
      const b = build(L, 1);
      const seg = (start: number, tokens: number, capacity = 8): CacheSegment => ({ k: zeros([2, capacity, 16], { backend }), v: zeros([2, capacity, 16], { backend }), start, tokens });
      expect(() => appendAttend(b.tq, b.tk, b.tv, [seg(0, 1), seg(0, 1)])).toThrow(/segments hold 2 tokens, q has 3/);
      expect(() => appendAttend(b.tq, b.tk, b.tv, [seg(0, 1), seg(7, 2), seg(0, 0)])).toThrow(/segment 1 writes 2 tokens at position 7 of a cache of capacity 8/);
      const wrongHeads: CacheSegment = { k: zeros([3, 8, 16], { backend }), v: zeros([3, 8, 16], { backend }), start: 0, tokens: 3 };
      expect(() => appendAttend(b.tq, b.tk, b.tv, [wrongHeads])).toThrow(/segment 0's caches must be \[2, C, 16\], got \[3,8,16\]/);
      const allHeads: CacheSegment = { k: zeros([4, 8, 16], { backend }), v: zeros([4, 8, 16], { backend }), start: 0, tokens: 3 };
      expect(appendAttend(b.tq, b.tq, b.tq, [allHeads]).shape).toEqual([3, 4, 16]); // KV = H: plain multi-head
      expect(() => appendAttend(b.tq, fromValues(new Float32Array(3 * 3 * 16), [3, 3, 16], backend), b.tv, [seg(0, 3)])).toThrow(/k and v must be \[3, KV, 16\] with KV dividing 4/);
    });
  });
});

describe.each(availableBackends().map((b) => [b.name, b] as const))('copyRuns on %s', (_name, backend: Backend) => {
  it('copies each run between its own tensors and checks bounds', () => {
    tidy(() => {
      const a = fromValues(Float32Array.from({ length: 10 }, (_, i) => i), [10], backend);
      const b = fromValues(Float32Array.from({ length: 6 }, (_, i) => 100 + i), [2, 3], backend);
      const c = zeros([8], { backend });
      copyRuns({ src: [a, b, a], srcOffsets: Int32Array.of(7, 3, 0), dst: [c, c, b], dstOffsets: Int32Array.of(0, 4, 1), length: 3 });
      expect(Array.from(c.dataSync())).toEqual([7, 8, 9, 0, 103, 104, 105, 0]);
      expect(Array.from(b.dataSync())).toEqual([100, 0, 1, 2, 104, 105]);
      copyRuns({ src: [a], srcOffsets: Int32Array.of(0), dst: [c], dstOffsets: Int32Array.of(0), length: 0 }); // nothing to copy
      expect(c.dataSync()[0]).toBe(7);
      expect(() => copyRuns({ src: [a], srcOffsets: Int32Array.of(8), dst: [c], dstOffsets: Int32Array.of(0), length: 3 })).toThrow(/run 0 \(1 x 3 values, from offset 8 of 10 to offset 0 of 8\) is out of bounds/);
      expect(() => copyRuns({ src: [a, a], srcOffsets: Int32Array.of(0, 0), dst: [c], dstOffsets: Int32Array.of(0), length: 1 })).toThrow(/2 sources need as many destinations/);
      expect(() => copyRuns({ src: [a], srcOffsets: Int32Array.of(0), dst: [c], dstOffsets: Int32Array.of(0), length: 1, blocks: 2 })).toThrow(/2 blocks per run need 1 source and destination strides/);
    });
  });

  it('strided runs copy blocks at each side\'s own stride, also where no 2-D region fits', () => {
    tidy(() => {
      // A cache-entry write: 3 heads of 2 values, contiguous in src, 8 apart in dst; and 5 apart
      // in dst2, whose 21 values are no whole number of rows of 5: copyRegion per block there.
      const src = fromValues(Float32Array.from({ length: 12 }, (_, i) => i + 1), [12], backend);
      const dst = zeros([24], { backend }), dst2 = zeros([21], { backend });
      copyRuns({
        src: [src, src], srcOffsets: Int32Array.of(0, 6), srcStrides: Int32Array.of(2, 2),
        dst: [dst, dst2], dstOffsets: Int32Array.of(3, 1), dstStrides: Int32Array.of(8, 5), length: 2, blocks: 3,
      });
      const want = new Array<number>(24).fill(0), want2 = new Array<number>(21).fill(0);
      for (let b = 0; b < 3; b++) {
        want[3 + 8 * b] = 1 + 2 * b; want[4 + 8 * b] = 2 + 2 * b;
        want2[1 + 5 * b] = 7 + 2 * b; want2[2 + 5 * b] = 8 + 2 * b;
      }
      expect(Array.from(dst.dataSync())).toEqual(want);
      expect(Array.from(dst2.dataSync())).toEqual(want2);
      expect(() => copyRuns({ src: [src], srcOffsets: Int32Array.of(8), srcStrides: Int32Array.of(2), dst: [dst], dstOffsets: Int32Array.of(0), dstStrides: Int32Array.of(8), length: 2, blocks: 3 })).toThrow(/run 0 \(3 x 2 values, from offset 8 of 12/);
    });
  });
});
