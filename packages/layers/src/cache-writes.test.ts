import { describe, expect, it } from 'vitest';
import { availableBackends, fromValues, noGrad, tidy } from '@rrt/tensor';
import { LayerKVCache, appendRows } from './attention.js';
import type { ModelFamily } from './config.js';
import { D, ReadableCache, oneLayerModel, values } from './cache.test-util.js';

// Cache writes folded into a call of one-token rows (packed segments too) must leave every cache and output as if the
// written rows had run first as a call of their own (the separate K/V fill of serving).

describe.each(availableBackends().map((b) => [b.name, b] as const))('cache writes on %s', (_n, backend) => {
  for (const family of ['llama', 'gpt2', 'gpt_neox'] as ModelFamily[]) {
    it(`${family}: a folded write equals a separate call before it, also when it feeds a row of the same call`, () => {
      const model = oneLayerModel(family, backend, 5);
      const block = model.blocks[0];
      const { numKvHeads, headDim } = model.cfg;
      noGrad(() =>
        tidy(() => {
          // Three sequences with 3, 5 and 4 cached tokens; row 2 is a write for sequence 0's
          // position 3, which sequence 0's call row (position 4) then attends to.
          const fresh = () => [3, 5, 4].map((len, i) => {
            const c = new ReadableCache(numKvHeads, headDim, 2);
            const kv = () => fromValues(values(numKvHeads * len * headDim, 10 + i), [numKvHeads, len, headDim], backend);
            c.append(kv(), kv());
            return c;
          });
          const extra = () => new ReadableCache(numKvHeads, headDim, 1);
          const x = fromValues(values(3 * D, 1), [3, 1, D], backend);
          const w = fromValues(values(2 * D, 2), [2, D], backend);
          const ctx = { depth: 0, positions: Int32Array.from([4, 5, 4]), batch: 3, seq: 1 };
          const wPositions = Int32Array.from([3, 7]);

          const foldCaches = fresh(), foldOther = extra();
          foldCaches[0].truncate(3);
          const folded = block.forward(x, ctx, foldCaches, { x: w, depth: Int32Array.from([0, 0]), positions: wPositions, caches: [foldCaches[0], foldOther] }).dataSync();

          const sepCaches = fresh(), sepOther = extra();
          sepCaches[0].truncate(3);
          block.forward(fromValues(w.dataSync(), [2, 1, D], backend), { depth: 0, positions: wPositions, batch: 2, seq: 1 }, [sepCaches[0], sepOther]);
          const separate = block.forward(x, ctx, sepCaches).dataSync();

          expect(folded.length).toBe(3 * D);
          for (let i = 0; i < folded.length; i++) expect(folded[i]).toBeCloseTo(separate[i], 5);
          expect(foldCaches.map((c) => c.length)).toEqual([5, 6, 5]);
          for (let i = 0; i < 3; i++) {
            expect(foldCaches[i].length).toBe(sepCaches[i].length);
            const a = foldCaches[i].entries(), b = sepCaches[i].entries();
            for (let j = 0; j < a.length; j++) expect(a[j]).toBeCloseTo(b[j], 5);
          }
          const a = foldOther.entries(), b = sepOther.entries();
          expect(a.length).toBe(numKvHeads * headDim * 2);
          for (let j = 0; j < a.length; j++) expect(a[j]).toBeCloseTo(b[j], 5);
        }),
      );
    });
  }

  it('a folded write into a call of packed segments (a one-token row and a 3-token prompt) equals a separate call before it', () => {
    const model = oneLayerModel('llama', backend, 6);
    const block = model.blocks[0];
    const { numKvHeads, headDim } = model.cfg;
    noGrad(() =>
      tidy(() => {
        // Sequence 0 holds 3 tokens and is owed position 3 (the write), then runs position 4;
        // sequence 1 holds 2 tokens and runs positions 2..4 as one segment.
        const fresh = () => [3, 2].map((len, i) => {
          const c = new ReadableCache(numKvHeads, headDim, 2);
          const kv = () => fromValues(values(numKvHeads * len * headDim, 20 + i), [numKvHeads, len, headDim], backend);
          c.append(kv(), kv());
          return c;
        });
        const x = fromValues(values(4 * D, 7), [4, 1, D], backend);
        const w = fromValues(values(D, 8), [1, D], backend);
        const ctx = { depth: 0, positions: Int32Array.from([4, 2, 3, 4]), batch: 4, seq: 1, segments: Int32Array.from([1, 3]) };
        const foldCaches = fresh();
        const folded = block.forward(x, ctx, foldCaches, { x: w, depth: Int32Array.from([0]), positions: Int32Array.from([3]), caches: [foldCaches[0]] }).dataSync();
        const sepCaches = fresh();
        block.forward(fromValues(w.dataSync(), [1, 1, D], backend), { depth: 0, positions: Int32Array.from([3]), batch: 1, seq: 1 }, [sepCaches[0]]);
        const separate = block.forward(x, ctx, sepCaches).dataSync();
        expect(folded.length).toBe(4 * D);
        for (let i = 0; i < folded.length; i++) expect(folded[i]).toBeCloseTo(separate[i], 5);
        expect(foldCaches.map((c) => c.length)).toEqual([5, 5]);
        for (let i = 0; i < 2; i++) {
          const a = foldCaches[i].entries(), b = sepCaches[i].entries();
          expect(a.length).toBe(b.length);
          for (let j = 0; j < a.length; j++) expect(a[j]).toBeCloseTo(b[j], 5);
        }
      }),
    );
  });

  it('refuses writes into a prefill call and writes of the wrong shape', () => {
    const model = oneLayerModel('llama', backend, 5);
    const { numKvHeads, headDim } = model.cfg;
    noGrad(() =>
      tidy(() => {
        const c = () => new LayerKVCache(numKvHeads, headDim);
        const w = { x: fromValues(values(D, 3), [1, D], backend), depth: Int32Array.from([0]), positions: Int32Array.from([0]), caches: [c()] };
        const two = fromValues(values(2 * D, 4), [1, 2, D], backend);
        expect(() => model.blocks[0].forward(two, { depth: 0, positions: Int32Array.from([0, 1]), batch: 1, seq: 2 }, [c()], w)).toThrow(/one-token call/);
        const one = fromValues(values(D, 4), [1, 1, D], backend);
        expect(() => model.blocks[0].forward(one, { depth: 0, positions: Int32Array.from([0]), batch: 1, seq: 1 }, [c()], { ...w, caches: [] })).toThrow(/1 depths, positions and caches/);
      }),
    );
  });

  it('appendRows writes row first + j into caches[j]: in place or through append(), a cache listed twice, a cache that grows', () => {
    class OwnStorage extends ReadableCache {
      override append(k: Parameters<LayerKVCache['append']>[0], v: Parameters<LayerKVCache['append']>[1]) {
        return super.append(k, v);
      }
    }
    noGrad(() =>
      tidy(() => {
        const KV = 2, hd = 3, N = 6;
        const k = fromValues(values(N * KV * hd, 40), [N, KV, hd], backend), v = fromValues(values(N * KV * hd, 41), [N, KV, hd], backend);
        // Capacity 1 with one entry: the second write into `twice` grows it (the buffers move).
        const twice = new ReadableCache(KV, hd, 1), own = new OwnStorage(KV, hd, 1), plain = new ReadableCache(KV, hd, 4);
        const seed = fromValues(values(KV * hd, 42), [KV, 1, hd], backend);
        twice.append(seed, seed);
        appendRows(k, v, 2, [twice, own, twice, plain]);
        expect([twice.length, own.length, plain.length]).toEqual([3, 1, 1]);
        // entries() is [k | v], each [Hkv, length, hd]: entry p of head g at (g * length + p) * hd.
        const rowOf = (t: typeof k, row: number, g: number) => Array.from(t.dataSync().subarray((row * KV + g) * hd, (row * KV + g + 1) * hd));
        const entryOf = (c: ReadableCache, p: number, g: number, part: 0 | 1) => {
          const e = c.entries(), half = e.length / 2;
          return e.slice(part * half + (g * c.length + p) * hd, part * half + (g * c.length + p + 1) * hd);
        };
        for (let g = 0; g < KV; g++) {
          expect(entryOf(twice, 0, g, 0)).toEqual(Array.from(seed.dataSync().subarray(g * hd, (g + 1) * hd)));
          expect(entryOf(twice, 1, g, 0)).toEqual(rowOf(k, 2, g));
          expect(entryOf(twice, 2, g, 1)).toEqual(rowOf(v, 4, g));
          expect(entryOf(own, 0, g, 0)).toEqual(rowOf(k, 3, g));
          expect(entryOf(plain, 0, g, 1)).toEqual(rowOf(v, 5, g));
        }
        expect(() => own.claim(1, backend)).toThrow(/keeps its own storage/);
        expect(() => plain.segment(0, 2)).toThrow(/no entries 0..1 \(holds 1\)/);
      }),
    );
  });
});
