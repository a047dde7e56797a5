import { describe, expect, it } from 'vitest';
import { Generator, noGrad, randn, reshape, tidy } from '@rrt/tensor';
import { CausalLM, defineConfig, type ForwardContext, type ModelFamily } from '@rrt/layers';
import { CapturingLayerCache, ServingKVCache, fillExitedKV, projectKV } from './kv-fill.js';
import { exactBackend, tinyLooped } from './testing.test-util.js';

function captured(c: CapturingLayerCache): [Float32Array, Float32Array] {
  return [c.lastK!.dataSync(), c.lastV!.dataSync()];
}

function closeTo(a: Float32Array, b: Float32Array): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(1e-5);
}

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
          const c = new CapturingLayerCache(cfg.numKvHeads, cfg.headDim, 16);
          if (positions[r] > 0) {
            const pad = randn([cfg.numKvHeads, positions[r], cfg.headDim], { backend: exactBackend() });
            c.append(pad, pad);
          }
          c.capture = true;
          return c;
        });
        model.blocks[1].forward(reshape(x, [3, 1, 16]), ctx, caches);
        caches.forEach((c, r) => {
          closeTo(captured(c)[0], kv.subarray(r * per, (r + 1) * per));
          closeTo(captured(c)[1], vv.subarray(r * per, (r + 1) * per));
          c.dispose();
        });
      }));
    });
  }
});

describe('fillExitedKV', () => {
  const model = tinyLooped();
  const D = model.cfg.hiddenSize;

  /** Runs one token through depths 0..exitDepth-1 with capture on; returns its hidden state [1, D]. */
  function runTo(cache: ServingKVCache, token: number, position: number, exitDepth: number) {
    let h = model.embedTokens([token], 1, 1, Int32Array.of(position));
    for (let l = 0; l < exitDepth; l++) {
      h = model.blocks[model.schedule[l]].forward(h, { depth: l, positions: Int32Array.of(position), batch: 1, seq: 1 }, [cache.layers[l]]);
    }
    return reshape(h, [1, D]);
  }

  it('propagate: each missing depth gets the K/V its block projects from the exited hidden state', () => {
    noGrad(() => tidy(() => {
      const cache = new ServingKVCache(model, 8, true);
      const h = runTo(cache, 7, 0, 2);
      const n = fillExitedKV(model, 'propagate', h, [{ cache, exitDepth: 2, position: 0, row: 0 }]);
      expect(n).toBe(2);
      for (const c of cache.layers) expect(c.length).toBe(1);
      for (const l of [2, 3]) {
        const [k, v] = projectKV(model.blocks[model.schedule[l]], h, { depth: Int32Array.of(l), positions: Int32Array.of(0), batch: 1, seq: 1 });
        closeTo(captured(cache.layers[l])[0], k.dataSync());
        closeTo(captured(cache.layers[l])[1], v.dataSync());
      }
      cache.dispose();
    }));
  });

  it("reuse copies depth e-1's entry; reuse-loop copies the same block's last computed depth", () => {
    noGrad(() => tidy(() => {
      for (const mode of ['reuse', 'reuse-loop'] as const) {
        const cache = new ServingKVCache(model, 8, true);
        const h = runTo(cache, 3, 0, 2);
        expect(fillExitedKV(model, mode, h, [{ cache, exitDepth: 2, position: 0, row: 0 }])).toBe(2);
        // schedule 0 1 0 1: depth 2 runs block 0 like depth 0, depth 3 block 1 like depth 1.
        const src = mode === 'reuse' ? [1, 1] : [0, 1];
        [2, 3].forEach((l, i) => {
          closeTo(captured(cache.layers[l])[0], captured(cache.layers[src[i]])[0]);
          closeTo(captured(cache.layers[l])[1], captured(cache.layers[src[i]])[1]);
        });
        cache.dispose();
      }
    }));
  });

  it('reuse needs captured entries and says so', () => {
    noGrad(() => tidy(() => {
      const cache = new ServingKVCache(model, 8, false);
      const h = runTo(cache, 3, 0, 2);
      expect(() => fillExitedKV(model, 'reuse', h, [{ cache, exitDepth: 2, position: 0, row: 0 }])).toThrow(/capture on/);
      cache.dispose();
    }));
  });
});
