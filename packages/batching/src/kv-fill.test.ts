import { describe, expect, it } from 'vitest';
import { Generator, noGrad, randn, reshape, tidy } from '@rrt/tensor';
import { CausalLM, LayerKVCache, defineConfig, type ForwardContext, type ModelFamily } from '@rrt/layers';
import { ServingKVCache, ServingLayerCache, appendCopies, fillExitedKV, projectKV } from './kv-fill.js';
import { exactBackend, runTo, tinyLooped } from './testing.test-util.js';

function closeTo(a: Float32Array, b: Float32Array): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(1e-5);
}

describe('ServingLayerCache', () => {
  it('append gives the same views as LayerKVCache, also across regrowth', () => {
    noGrad(() => tidy(() => {
      const ours = new ServingLayerCache(2, 3, 2);
      const theirs = new LayerKVCache(2, 3, 2);
      for (const t of [1, 2, 1, 3]) {
        const k = randn([2, t, 3], { backend: exactBackend() }), v = randn([2, t, 3], { backend: exactBackend() });
        const [ok, ov] = ours.append(k, v);
        const [tk, tv] = theirs.append(k, v);
        expect(ok.shape).toEqual(tk.shape);
        closeTo(ok.dataSync(), tk.dataSync());
        closeTo(ov.dataSync(), tv.dataSync());
      }
      expect(ours.length).toBe(7);
      expect(ours.bytes).toBe(2 * 2 * 8 * 3 * 4);
      ours.dispose();
      theirs.dispose();
      expect(ours.bytes).toBe(0);
    }));
  });

  it('appendRow and appendCopyOf write single entries', () => {
    noGrad(() => tidy(() => {
      const a = new ServingLayerCache(2, 3, 4);
      const b = new ServingLayerCache(2, 3, 1);
      const k = randn([3, 2, 3], { backend: exactBackend() }), v = randn([3, 2, 3], { backend: exactBackend() });
      a.appendRow(k, v, 2);
      a.appendRow(k, v, 0);
      closeTo(a.entry(0)[0], k.dataSync().subarray(12, 18));
      closeTo(a.entry(1)[1], v.dataSync().subarray(0, 6));
      b.appendCopyOf(a, 1);
      b.appendCopyOf(a, 0);
      closeTo(b.entry(0)[0], a.entry(1)[0]);
      closeTo(b.entry(1)[1], a.entry(0)[1]);
      expect(() => b.appendCopyOf(a, 5)).toThrow(/no entry at position 5/);
      a.dispose();
      b.dispose();
    }));
  });

  it('appendCopies writes many copies in one call, into a destination listed twice that grows on the way', () => {
    noGrad(() => tidy(() => {
      const src = new ServingLayerCache(2, 3, 4), other = new ServingLayerCache(2, 3, 4);
      const k = randn([4, 2, 3], { backend: exactBackend() }), v = randn([4, 2, 3], { backend: exactBackend() });
      for (const r of [0, 1, 2]) src.appendRow(k, v, r);
      other.appendRow(k, v, 3);
      const dst = new ServingLayerCache(2, 3, 1), plain = new ServingLayerCache(2, 3, 1);
      appendCopies([{ from: src, position: 2, to: dst }, { from: other, position: 0, to: plain }, { from: src, position: 0, to: dst }]);
      expect([dst.length, plain.length]).toEqual([2, 1]);
      for (const part of [0, 1] as const) {
        closeTo(dst.entry(0)[part], src.entry(2)[part]);
        closeTo(dst.entry(1)[part], src.entry(0)[part]);
        closeTo(plain.entry(0)[part], other.entry(0)[part]);
      }
      expect(() => appendCopies([{ from: other, position: 1, to: dst }])).toThrow(/no entry at position 1 to copy \(the source holds 1\)/);
      expect(dst.length).toBe(2); // nothing claimed by the refused call
      appendCopies([]);
    }));
  });
});

describe('projectKV', () => {
  const families: ModelFamily[] = ['llama', 'gpt2', 'gpt_neox', 'gemma'];
  for (const family of families) {
    it(`${family}: gives exactly the K/V the block's attention appends`, () => {
      const cfg = defineConfig(family, { vocabSize: 30, hiddenSize: 16, numLayers: 2, numHeads: 2, maxPositions: 16 });
      const model = new CausalLM(cfg, { backend: exactBackend(), rng: new Generator(2), std: 0.3 });
      noGrad(() => tidy(() => {
        const x = randn([3, 16], { rng: new Generator(1), backend: exactBackend() });
        const positions = Int32Array.from([0, 5, 9]);
        const ctx: ForwardContext = { depth: Int32Array.from([1, 1, 1]), positions, batch: 3, seq: 1 };
        const [k, v] = projectKV(model.blocks[1], x, ctx);
        const kv = k.dataSync(), vv = v.dataSync();
        const per = cfg.numKvHeads * cfg.headDim;
        // One cache per row, padded so each row lands at its position; then the real attention runs.
        const caches = [0, 1, 2].map((r) => {
          const c = new ServingLayerCache(cfg.numKvHeads, cfg.headDim, 16);
          if (positions[r] > 0) {
            const pad = randn([cfg.numKvHeads, positions[r], cfg.headDim], { backend: exactBackend() });
            c.append(pad, pad);
          }
          return c;
        });
        model.blocks[1].forward(reshape(x, [3, 1, 16]), ctx, caches);
        caches.forEach((c, r) => {
          const [ck, cv] = c.entry(positions[r]);
          closeTo(ck, kv.subarray(r * per, (r + 1) * per));
          closeTo(cv, vv.subarray(r * per, (r + 1) * per));
          c.dispose();
        });
      }));
    });
  }
});

describe('fillExitedKV', () => {
  const model = tinyLooped();
  const D = model.cfg.hiddenSize;


  it('propagate: each missing depth gets the K/V its block projects from the exited hidden state', () => {
    noGrad(() => tidy(() => {
      const cache = new ServingKVCache(model, 8);
      runTo(model, cache, 5, 0, 4);
      const h = runTo(model, cache, 7, 1, 2);
      const n = fillExitedKV(model, 'propagate', h, [{ cache, exitDepth: 2, position: 1, row: 0 }]);
      expect(n).toBe(2);
      for (const c of cache.layers) expect(c.length).toBe(2);
      for (const l of [2, 3]) {
        const [k, v] = projectKV(model.blocks[model.schedule[l]], h, { depth: Int32Array.of(l), positions: Int32Array.of(1), batch: 1, seq: 1 });
        closeTo(cache.layers[l].entry(1)[0], k.dataSync());
        closeTo(cache.layers[l].entry(1)[1], v.dataSync());
      }
      cache.dispose();
    }));
  });

  it("reuse copies depth e-1's entry; reuse-loop copies the same block's last computed depth", () => {
    noGrad(() => tidy(() => {
      for (const mode of ['reuse', 'reuse-loop'] as const) {
        const cache = new ServingKVCache(model, 8);
        const h = runTo(model, cache, 3, 0, 2);
        expect(fillExitedKV(model, mode, h, [{ cache, exitDepth: 2, position: 0, row: 0 }])).toBe(2);
        // schedule 0 1 0 1: depth 2 runs block 0 like depth 0, depth 3 block 1 like depth 1.
        const src = mode === 'reuse' ? [1, 1] : [0, 1];
        [2, 3].forEach((l, i) => {
          closeTo(cache.layers[l].entry(0)[0], cache.layers[src[i]].entry(0)[0]);
          closeTo(cache.layers[l].entry(0)[1], cache.layers[src[i]].entry(0)[1]);
        });
        cache.dispose();
      }
    }));
  });
});
