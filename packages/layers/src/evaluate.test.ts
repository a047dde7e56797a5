import { describe, expect, it } from 'vitest';
import { Generator, availableBackends, crossEntropy, noGrad, tidy } from '@rrt/tensor';
import { defineConfig } from './config.js';
import { CausalLM } from './lm.js';
import { TokenSequences, batches, scoredBytes } from './data.js';
import { ByteTokenizer } from './tokenizers/index.js';
import { bitsPerByte, bitsPerByteOf, evaluateLM, meanLoss, perplexity } from './evaluate.js';

describe.each(availableBackends().map((b) => [b.name, b] as const))('evaluate on %s', (_n, backend) => {
  const tok = new ByteTokenizer();
  const text = 'In the beginning God created the heaven and the earth. And the earth was without form, and void.';
  const seqs = new TokenSequences(Int32Array.from(tok.encode(text)), 8);
  const model = () => new CausalLM(defineConfig('llama', { vocabSize: tok.vocabSize, hiddenSize: 16, numLayers: 2, numHeads: 2, maxPositions: 16 }), { backend, rng: new Generator(2), std: 0.2 });

  it('mean loss, perplexity and bits per byte match a direct computation', () => {
    const m = model();
    // Reference: every sequence alone, one forward each.
    let nats = 0;
    noGrad(() => {
      for (let i = 0; i < seqs.count; i++) {
        const b = seqs.batch([i]);
        nats += tidy(() => crossEntropy(m.forward(b.ids, b.shape).logits, b.targets, { reduction: 'sum' }).item());
      }
    });
    const tokens = seqs.scoredTokens;
    const bytes = scoredBytes(seqs, tok);
    expect(bytes).toBe(tokens); // one byte per token for ASCII text
    const r = evaluateLM(m, batches(seqs, { batchSize: 3, shuffle: false }), { bytes });
    expect(r.tokens).toBe(tokens);
    expect(r.loss).toBeCloseTo(nats / tokens, 5);
    expect(r.perplexity).toBeCloseTo(Math.exp(nats / tokens), 3);
    expect(r.bitsPerByte).toBeCloseTo(nats / tokens / Math.LN2, 5);
    expect(perplexity(m, batches(seqs, { batchSize: 4, shuffle: false }))).toBeCloseTo(r.perplexity, 3);
    expect(meanLoss(m, batches(seqs, { batchSize: 4, shuffle: false }))).toBeCloseTo(r.loss, 5);
    expect(bitsPerByte(m, batches(seqs, { batchSize: 4, shuffle: false }), bytes)).toBeCloseTo(r.bitsPerByte!, 5);
    expect(bitsPerByteOf(10 * Math.LN2, 5)).toBeCloseTo(2, 10);
    // A random init is close to uniform: perplexity near the vocabulary size.
    expect(r.perplexity).toBeGreaterThan(tok.vocabSize / 3);
    m.dispose();
  });

  it('records no gradients, frees its tensors and restores the training mode', () => {
    const m = model();
    evaluateLM(m, batches(seqs, { batchSize: 4, shuffle: false }));
    const before = backend.memory().bytesInUse;
    const r = evaluateLM(m, batches(seqs, { batchSize: 4, shuffle: false }), { maxBatches: 1 });
    expect(r.tokens).toBe(4 * 8);
    expect(backend.memory().bytesInUse).toBe(before);
    expect(m.parameters().every((p) => p.grad === null)).toBe(true);
    expect(m.training).toBe(true);
    m.eval();
    evaluateLM(m, batches(seqs, { batchSize: 4, shuffle: false }), { maxBatches: 1 });
    expect(m.training).toBe(false);
    m.dispose();
  });
});
