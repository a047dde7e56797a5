import { describe, expect, it } from 'vitest';
import { Generator, availableBackends, narrow, noGrad, tidy } from '@rrt/tensor';
import { defineConfig, type ModelFamily } from './config.js';
import { CausalLM } from './lm.js';
import { ByteTokenizer } from './tokenizers/index.js';
import { argmaxOf, generate, sample } from './generate.js';

const families: ModelFamily[] = ['llama', 'gpt2'];

function tinyModel(family: ModelFamily, backend: ReturnType<typeof availableBackends>[number]) {
  const cfg = defineConfig(family, { vocabSize: 40, hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 24, ...(family === 'llama' ? { numKvHeads: 2 } : {}) });
  // A larger init than the default 0.02 so logits differ clearly between positions.
  return new CausalLM(cfg, { backend, rng: new Generator(11), std: 0.3 });
}

describe.each(availableBackends().map((b) => [b.name, b] as const))('generate on %s', (_n, backend) => {
  for (const family of families) {
    it(`${family}: cached decoding gives the full forward's logits at every position`, () => {
      const model = tinyModel(family, backend);
      const ids = Array.from({ length: 12 }, (_, i) => (i * 13 + 5) % 40);
      noGrad(() =>
        tidy(() => {
          const full = model.forward(ids, [1, ids.length]).logits.dataSync();
          const V = model.cfg.vocabSize;
          const cache = model.newCache(4);
          const prefill = 5;
          const got: Float32Array[] = [];
          const first = model.forward(ids.slice(0, prefill), [1, prefill], { caches: [cache] }).logits.dataSync();
          for (let t = 0; t < prefill; t++) got.push(first.subarray(t * V, t * V + V));
          for (let t = prefill; t < ids.length; t++) got.push(model.forward([ids[t]], [1, 1], { caches: [cache] }).logits.dataSync());
          expect(cache.position).toBe(ids.length);
          let err = 0, scale = 0;
          for (let t = 0; t < ids.length; t++) {
            for (let v = 0; v < V; v++) {
              err = Math.max(err, Math.abs(got[t][v] - full[t * V + v]));
              scale = Math.max(scale, Math.abs(full[t * V + v]));
            }
          }
          expect(scale).toBeGreaterThan(0.1);
          expect(err / scale).toBeLessThan(1e-5);
          cache.dispose();
        }),
      );
      model.dispose();
    });

    it(`${family}: greedy generation is deterministic and equals argmax of the uncached forward`, () => {
      const model = tinyModel(family, backend);
      const prompt = [1, 2, 3];
      const a = generate(model, null, { prompt, maxNewTokens: 8, temperature: 0 });
      const b = generate(model, null, { prompt, maxNewTokens: 8, temperature: 0, seed: 99 });
      expect(a.tokens).toEqual(b.tokens);
      expect(a.tokens.length).toBe(8);
      expect(a.finishReason).toBe('length');
      const seq = [...prompt];
      noGrad(() => {
        for (let i = 0; i < 8; i++) {
          const row = tidy(() => narrow(model.forward(seq, [1, seq.length]).logits, 1, seq.length - 1, 1).dataSync());
          seq.push(argmaxOf(row));
        }
      });
      expect(a.tokens).toEqual(seq.slice(prompt.length));
      model.dispose();
    });
  }

  it('seeded sampling repeats, stops on stop tokens and at the context end, and leaves memory as it was', () => {
    const model = tinyModel('llama', backend);
    const check = () => {
      const a = generate(model, null, { prompt: [5], maxNewTokens: 6, temperature: 1, topK: 10, topP: 0.9, seed: 3 });
      const b = generate(model, null, { prompt: [5], maxNewTokens: 6, temperature: 1, topK: 10, topP: 0.9, seed: 3 });
      expect(a.tokens).toEqual(b.tokens);
      const firstGreedy = generate(model, null, { prompt: [5], maxNewTokens: 1, temperature: 0 }).tokens[0];
      const stop = generate(model, null, { prompt: [5], maxNewTokens: 6, temperature: 0, stopTokens: [firstGreedy] });
      expect(stop.tokens).toEqual([firstGreedy]);
      expect(stop.finishReason).toBe('stop');
      const ctx = generate(model, null, { prompt: Array(20).fill(1), maxNewTokens: 10, temperature: 0 });
      expect(ctx.finishReason).toBe('context');
      // 20 prompt tokens + 4 fed back fill the 24 positions; the 5th token is predicted at the last one.
      expect(ctx.tokens.length).toBe(5);
    };
    // The first pass fills the attention-mask cache; after it, generation must free everything it allocates.
    check();
    const before = backend.memory().bytesInUse;
    check();
    expect(backend.memory().bytesInUse).toBe(before);
    expect(model.training).toBe(true);
    model.dispose();
  });

  it('decodes with a tokenizer and accepts a text prompt', () => {
    const model = new CausalLM(defineConfig('llama', { vocabSize: 257, hiddenSize: 16, numLayers: 1, numHeads: 2, maxPositions: 32 }), { backend, rng: new Generator(1) });
    const tok = new ByteTokenizer();
    const out = generate(model, tok, { prompt: 'abc', maxNewTokens: 4, temperature: 0 });
    expect(out.text).toBe(tok.decode(out.tokens));
    expect(() => generate(model, null, { prompt: 'abc' })).toThrow(/needs a tokenizer/);
    expect(() => generate(model, null, { prompt: [] })).toThrow(/empty/);
    model.dispose();
  });
});

describe('sample', () => {
  it('respects top-k, top-p and temperature', () => {
    const rng = new Generator(1);
    const logits = [0, 1, 2, 3, 10];
    const counts = new Map<number, number>();
    for (let i = 0; i < 2000; i++) {
      const id = sample(logits, 1, 2, 1, rng);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual([3, 4]);
    // Token 4 alone holds > 0.99 of the mass: top-p 0.9 keeps only it.
    for (let i = 0; i < 200; i++) expect(sample(logits, 1, 0, 0.9, rng)).toBe(4);
    // A high temperature flattens the distribution so every token shows up.
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(sample(logits, 100, 0, 1, rng));
    expect(seen.size).toBe(5);
  });
});
