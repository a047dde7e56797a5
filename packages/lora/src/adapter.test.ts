import { describe, expect, it } from 'vitest';
import { AdamW, Generator, RrtError, crossEntropy, fromValues, reshape, tidy } from '@rrt/tensor';
import { Linear } from '@rrt/layers';
import { writeValues } from '@rrt/recursive';
import { LoraAdapter, addLora } from './adapter.js';
import { FAMILIES, loadFixture, logitsOf, maxAbs, maxAbsDiff, someIds, testBackend } from './testing.test-util.js';

const backend = testBackend();

function random(n: number, seed: number): Float32Array {
  const g = new Generator(seed);
  return Float32Array.from({ length: n }, () => g.normal());
}

/** y = x W^T + b + s (x A^T) B^T, computed by hand. */
function expected(x: Float32Array, n: number, lin: Linear, A: Float32Array, B: Float32Array, r: number, s: number, rows?: Int32Array): Float32Array {
  const W = lin.weight.dataSync(), b = lin.bias?.dataSync();
  const inF = lin.inFeatures, outF = lin.outFeatures;
  const y = new Float32Array(n * outF);
  for (let i = 0; i < n; i++) {
    const h = new Float64Array(r);
    for (let t = 0; t < r; t++) for (let j = 0; j < inF; j++) h[t] += A[t * inF + j] * x[i * inF + j];
    for (let o = 0; o < outF; o++) {
      let acc = b ? b[o] : 0;
      for (let j = 0; j < inF; j++) acc += W[o * inF + j] * x[i * inF + j];
      y[i * outF + o] = acc;
    }
    const partRows = rows ?? Int32Array.from({ length: outF }, (_, o) => o);
    partRows.forEach((o, p) => {
      let d = 0;
      for (let t = 0; t < r; t++) d += B[p * r + t] * h[t];
      y[i * outF + o] += s * d;
    });
  }
  return y;
}

describe('LoraAdapter on a Linear', () => {
  const lin = new Linear(6, 5, { bias: true, rng: new Generator(1), backend, std: 0.5 });
  const x = random(4 * 6, 2);
  const run = () => tidy(() => lin.forward(fromValues(x, [4, 6], backend)).dataSync());

  it('adds scaling * B A x; merge and unmerge keep the output; remove restores the layer', () => {
    const base = run();
    const A = random(2 * 6, 3), B = random(5 * 2, 4);
    const lora = new LoraAdapter(lin, { rank: 2, alpha: 5, A, B });
    expect(lora.scaling).toBe(2.5);
    const want = expected(x, 4, lin, A, B, 2, 2.5);
    expect(maxAbsDiff(run(), want)).toBeLessThan(1e-5);
    const w0 = lin.weight.dataSync();
    lora.merge();
    expect(lora.merged).toBe(true);
    expect(maxAbsDiff(run(), want)).toBeLessThan(1e-5);
    expect(maxAbsDiff(lin.weight.dataSync(), w0)).toBeGreaterThan(0.1);
    lora.unmerge();
    expect(maxAbsDiff(lin.weight.dataSync(), w0)).toBeLessThan(1e-6);
    lora.remove();
    expect(lin.hooks).toHaveLength(0);
    expect(maxAbsDiff(run(), base)).toBeLessThan(1e-6);
  });

  it('default init: the delta starts at zero while A is random (PEFT init)', () => {
    const base = run();
    const lora = new LoraAdapter(lin, { rank: 3 });
    expect(run()).toEqual(base);
    expect(maxAbs(lora.A.dataSync())).toBeGreaterThan(0);
    expect(maxAbs(lora.A.dataSync())).toBeLessThanOrEqual(1 / Math.sqrt(6));
    lora.remove();
  });

  it('a part adapter writes only its rows (a slice of a fused output)', () => {
    const A = random(2 * 6, 5), B = random(2 * 2, 6);
    const lora = new LoraAdapter(lin, { rank: 2, A, B, part: { kind: 'slice', start: 1, length: 2 } });
    const want = expected(x, 4, lin, A, B, 2, 1, Int32Array.of(1, 2));
    const w0 = lin.weight.dataSync();
    try {
      expect(maxAbsDiff(run(), want)).toBeLessThan(1e-5);
      lora.merge();
      expect(maxAbsDiff(run(), want)).toBeLessThan(1e-5);
      const w = lin.weight.dataSync();
      // Rows 0, 3 and 4 of the weight are untouched.
      for (const row of [0, 3, 4]) expect(w.subarray(row * 6, row * 6 + 6)).toEqual(w0.subarray(row * 6, row * 6 + 6));
    } finally {
      lora.remove();
    }
  });

  it('rejects ranks beyond min(in, out) and bad dropout', () => {
    expect(() => new LoraAdapter(lin, { rank: 6 })).toThrow(/\[1, 5\]/);
    expect(() => new LoraAdapter(lin, { rank: 0 })).toThrow(RrtError);
    expect(() => new LoraAdapter(lin, { rank: 1, dropout: 1 })).toThrow(/dropout/);
    expect(lin.hooks).toHaveLength(0);
  });
});

describe.each(FAMILIES)('addLora on the %s fixture', (family) => {
  it('merged and unmerged give the same logits; counts are r (in + out) per matrix', () => {
    const model = loadFixture(family);
    const ids = someIds(2, 5, model.cfg.vocabSize);
    const set = addLora(model, { rank: 2, alpha: 4 });
    const fusedParts = family === 'gpt_neox' || family === 'gpt2' ? 3 : 0;
    expect(set.adapters).toHaveLength(2 * (family === 'llama' || family === 'gemma' ? 7 : 3 + fusedParts));
    expect(set.numParameters).toBe(set.adapters.reduce((s, a) => s + 2 * (a.adapter.pair.inFeatures + a.adapter.pair.outFeatures), 0));
    for (const a of set.adapters) writeValues(a.adapter.B, random(a.adapter.B.size, a.block + 7));
    const unmerged = logitsOf(model, ids, [2, 5]);
    set.merge();
    expect(maxAbsDiff(logitsOf(model, ids, [2, 5]), unmerged)).toBeLessThan(1e-5 * maxAbs(unmerged));
    set.unmerge();
    expect(maxAbsDiff(logitsOf(model, ids, [2, 5]), unmerged)).toBeLessThan(1e-5 * maxAbs(unmerged));
    set.remove();
  });
});

it('fine-tuning only the adapters lowers the loss and leaves the base weights alone', () => {
  const model = loadFixture('llama');
  const set = addLora(model, { rank: 4, alpha: 8, targets: ['q', 'v', 'down'] });
  const ids = someIds(2, 9, 48, 5);
  const x = [...ids.slice(0, 8), ...ids.slice(9, 17)], y = [...ids.slice(1, 9), ...ids.slice(10, 18)];
  // Not wrapped in its own tidy: that would free the graph before backward().
  const loss = () => crossEntropy(reshape(model.forward(x, [2, 8]).logits, [16, 48]), y);
  const before = tidy(() => loss().item());
  const w = model.blocks[0].attn.q!.weight.dataSync();
  expect(set.trainable().parameters()).toEqual(set.parameters());
  expect(set.trainable({ freezeBase: false }).parameters()).toHaveLength(set.parameters().length + model.parameters().length);
  const opt = new AdamW(set.parameters(), { lr: 1e-2, weightDecay: 0 });
  for (let step = 0; step < 20; step++) {
    tidy(() => loss().backward());
    opt.step();
    opt.zeroGrad();
  }
  expect(tidy(() => loss().item())).toBeLessThan(before - 0.1);
  expect(model.blocks[0].attn.q!.weight.dataSync()).toEqual(w);
});
