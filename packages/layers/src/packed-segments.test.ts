import { describe, expect, it } from 'vitest';
import { availableBackends, fromValues, noGrad, tidy } from '@rrt/tensor';
import { LayerKVCache } from './attention.js';
import type { ModelFamily } from './config.js';
import { D, ReadableCache, oneLayerModel, values } from './cache.test-util.js';

// Sequences of different lengths packed into one call of one-token rows (ForwardContext.segments)
// must give every token and every cache what a call of each sequence on its own gives.

/** A cache that keeps its own storage (overrides append): attention must take its view path. */
class OwnStorageCache extends ReadableCache {
  override append(k: Parameters<LayerKVCache['append']>[0], v: Parameters<LayerKVCache['append']>[1]) {
    return super.append(k, v);
  }
}

describe.each(availableBackends().map((b) => [b.name, b] as const))('packed segments on %s', (_n, backend) => {
  for (const family of ['llama', 'gpt2', 'gpt_neox'] as ModelFamily[]) {
    for (const Cache of [ReadableCache, OwnStorageCache]) {
      it(`${family}${Cache === OwnStorageCache ? ', caches with their own storage' : ''}: a packed call equals a call per sequence`, () => {
        const model = oneLayerModel(family, backend, 7);
        const block = model.blocks[0];
        const { numKvHeads, headDim } = model.cfg;
        noGrad(() =>
          tidy(() => {
            // Sequences with 0, 3 and 2 cached tokens continue with 4, 1 and 3 new tokens.
            const cached = [0, 3, 2], lengths = [4, 1, 3];
            const fresh = () => cached.map((len, i) => {
              const c = new Cache(numKvHeads, headDim, 2);
              if (len > 0) {
                const kv = () => fromValues(values(numKvHeads * len * headDim, 20 + i), [numKvHeads, len, headDim], backend);
                c.append(kv(), kv());
              }
              return c;
            });
            const S = lengths.reduce((a, b) => a + b, 0);
            const xs = values(S * D, 3);
            const positions = Int32Array.from(lengths.flatMap((len, i) => Array.from({ length: len }, (_, t) => cached[i] + t)));

            const packedCaches = fresh();
            const ctx = { depth: 0, positions, batch: S, seq: 1, segments: Int32Array.from(lengths) };
            const packed = block.forward(fromValues(xs, [S, 1, D], backend), ctx, packedCaches).dataSync();

            const aloneCaches = fresh();
            const alone: number[] = [];
            let offset = 0;
            lengths.forEach((len, i) => {
              const x = fromValues(xs.subarray(offset * D, (offset + len) * D), [1, len, D], backend);
              const out = block.forward(x, { depth: 0, positions: positions.subarray(offset, offset + len), batch: 1, seq: len }, [aloneCaches[i]]);
              alone.push(...out.dataSync());
              offset += len;
            });

            expect(packed.length).toBe(S * D);
            for (let i = 0; i < packed.length; i++) expect(packed[i]).toBeCloseTo(alone[i], 5);
            for (let i = 0; i < cached.length; i++) {
              expect(packedCaches[i].length).toBe(cached[i] + lengths[i]);
              const a = packedCaches[i].entries(), b = aloneCaches[i].entries();
              expect(a.length).toBe(b.length);
              for (let j = 0; j < a.length; j++) expect(a[j]).toBeCloseTo(b[j], 5);
            }
          }),
        );
      });
    }
  }

  it('refuses segments that do not match the call', () => {
    const model = oneLayerModel('llama', backend, 7);
    const { numKvHeads, headDim } = model.cfg;
    noGrad(() =>
      tidy(() => {
        const c = () => new LayerKVCache(numKvHeads, headDim);
        const x = fromValues(values(3 * D, 4), [3, 1, D], backend);
        const ctx = (segments: number[]) => ({ depth: 0, positions: Int32Array.from([0, 1, 0]), batch: 3, seq: 1, segments: Int32Array.from(segments) });
        expect(() => model.blocks[0].forward(x, ctx([2, 1]), [c()])).toThrow(/1 caches for 2 sequences/);
        expect(() => model.blocks[0].forward(x, ctx([2, 2]), [c(), c()])).toThrow(/hold 4 tokens, the call has 3/);
        expect(() => model.blocks[0].forward(x, ctx([2, 1]))).toThrow(/packed segments need/);
      }),
    );
  });
});
