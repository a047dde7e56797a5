// What the attention cache tests share: a one-layer model, seeded values, and a cache whose
// entries can be read back.

import { Generator, type availableBackends } from '@rrt/tensor';
import { LayerKVCache } from './attention.js';
import { defineConfig, type ModelFamily } from './config.js';
import { CausalLM } from './lm.js';

export const D = 32;

/** A one-layer model of `family` (d 32, 4 heads; llama with 2 KV heads). */
export function oneLayerModel(family: ModelFamily, backend: ReturnType<typeof availableBackends>[number], seed: number): CausalLM {
  const cfg = defineConfig(family, { vocabSize: 20, hiddenSize: D, numLayers: 1, numHeads: 4, maxPositions: 32, ...(family === 'llama' ? { numKvHeads: 2 } : {}) });
  return new CausalLM(cfg, { backend, rng: new Generator(seed), std: 0.3 });
}

/** n standard normal values from `seed`. */
export function values(n: number, seed: number): Float32Array {
  const rng = new Generator(seed);
  return Float32Array.from({ length: n }, () => rng.normal());
}

/** A cache whose filled entries can be read back: [k | v], each [Hkv, length, headDim] flat. */
export class ReadableCache extends LayerKVCache {
  entries(): number[] {
    const out: number[] = [];
    for (const buf of [this.k!, this.v!]) {
      const all = buf.dataSync();
      for (let h = 0; h < this.kvHeads; h++) out.push(...all.subarray(h * this.capacity * this.headDim, (h * this.capacity + this.length) * this.headDim));
    }
    return out;
  }
}
