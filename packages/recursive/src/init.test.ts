import { describe, expect, it } from 'vitest';
import { CYCLE, MIDDLE_CYCLE, SEQUENCE, type SharingScheme } from './schemes.js';
import { INITS, average, isNormPath, lower, random, selectionInit, stepwise, stepwiseFixedStart, tiedGroup, upper, type InitContext } from './init.js';
import { toRecursive } from './convert.js';
import { blockValues, randomModel } from './testing.test-util.js';

function ctxOf(scheme: SharingScheme, L: number, loops: number, seed = 0): InitContext {
  const depthMap = scheme(L, loops);
  const K = Math.max(...depthMap) + 1;
  return { numLayers: L, loops, depthMap, seed, sources: Array.from({ length: K }, (_, k) => scheme.sourcesOf(k, depthMap)) };
}

/** Layer l's "weight" is two values, l and 10 l, so a result shows which layers went in. */
const layerIndex = (l: number) => new Float32Array([l, 10 * l]);
const firstValues = (arrays: Float32Array[]) => arrays.map((a) => a[0]);

describe('selection inits on layer-index weights', () => {
  it('stepwise keeps first and last: round(linspace(0, L - 1, K))', () => {
    expect(firstValues(stepwise.init('w', layerIndex, ctxOf(CYCLE, 18, 2)))).toEqual([0, 2, 4, 6, 8, 11, 13, 15, 17]);
    expect(firstValues(stepwise.init('w', layerIndex, ctxOf(CYCLE, 6, 3)))).toEqual([0, 5]);
    expect(stepwise.pickLayers(ctxOf(SEQUENCE, 6, 2))).toEqual([0, 2, 5]);
  });

  it('stepwise fixed-start picks 0, B, 2B, ...', () => {
    expect(stepwiseFixedStart.pickLayers(ctxOf(CYCLE, 6, 2))).toEqual([0, 2, 4]);
    expect(stepwiseFixedStart.pickLayers(ctxOf(CYCLE, 18, 3))).toEqual([0, 3, 6, 9, 12, 15]);
  });

  it('lower picks the first K layers, upper the last K', () => {
    expect(lower.pickLayers(ctxOf(CYCLE, 6, 2))).toEqual([0, 1, 2]);
    expect(upper.pickLayers(ctxOf(CYCLE, 6, 2))).toEqual([3, 4, 5]);
  });

  it('MIDDLE schemes keep the unique first and last layers and pick among the middle ones', () => {
    // L = 8, 2 loops: blocks 0 | 1 2 3 1 2 3 | 4; middle layers 1..6.
    const ctx = ctxOf(MIDDLE_CYCLE, 8, 2);
    expect(tiedGroup(ctx)).toEqual({ blocks: [1, 2, 3], layers: [1, 2, 3, 4, 5, 6] });
    // numpy: round(linspace(1, 6, 3)) = [1, 4, 6] (3.5 rounds to 4).
    expect(stepwise.pickLayers(ctx)).toEqual([0, 1, 4, 6, 7]);
    expect(stepwiseFixedStart.pickLayers(ctx)).toEqual([0, 1, 3, 5, 7]);
    expect(lower.pickLayers(ctx)).toEqual([0, 1, 2, 3, 7]);
    expect(upper.pickLayers(ctx)).toEqual([0, 4, 5, 6, 7]);
    expect(firstValues(average.init('w', layerIndex, ctx))).toEqual([0, 2.5, 3.5, 4.5, 7]);
  });

  it('random is a sorted choice without replacement, fixed by the seed', () => {
    const picks = (seed: number) => random.pickLayers(ctxOf(CYCLE, 12, 3, seed));
    for (let seed = 0; seed < 20; seed++) {
      const p = picks(seed);
      expect(p).toHaveLength(4);
      expect(p).toEqual([...p].sort((a, b) => a - b));
      expect(new Set(p).size).toBe(4);
      expect(p.every((l) => l >= 0 && l < 12)).toBe(true);
      expect(picks(seed)).toEqual(p);
    }
    expect(new Set(Array.from({ length: 20 }, (_, s) => picks(s).join())).size).toBeGreaterThan(1);
  });

  it('1 loop: every init is the identity', () => {
    for (const init of Object.values(INITS)) expect(firstValues(init.init('w', layerIndex, ctxOf(CYCLE, 5, 1)))).toEqual([0, 1, 2, 3, 4]);
  });

  it('selectionInit validates its picks', () => {
    const bad = selectionInit('bad', () => [0]);
    expect(selectionInit('first', (n) => Array(n).fill(0)).pickLayers(ctxOf(CYCLE, 4, 2))).toEqual([0, 0]);
    expect(() => bad.pickLayers(ctxOf(CYCLE, 6, 2))).toThrow(/init bad: picked \[0\] for 3 blocks from 6 layers/);
  });

  it('isNormPath', () => {
    expect(['ln1.weight', 'ln2.bias', 'attn.q.weight', 'mlp.down.bias'].map(isNormPath)).toEqual([true, true, false, false]);
  });
});

describe('inits on a small model (CYCLE, L = 6, 2 loops: blocks 0 1 2 0 1 2)', () => {
  const src = randomModel('llama', 6);
  const paths = [...src.blocks[0].namedParameters().keys()];
  const mean = (a: Float32Array, b: Float32Array) => a.map((x, i) => (x + b[i]) / 2);

  it('average: each shared weight is the mean of its tied layers (norms included)', () => {
    const { model } = toRecursive(src, { loops: 2, init: average });
    expect(model.blocks).toHaveLength(3);
    for (let k = 0; k < 3; k++) {
      for (const p of paths) {
        const want = mean(blockValues(src, k, p), blockValues(src, k + 3, p));
        const got = blockValues(model, k, p);
        for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i], 6);
      }
    }
    model.dispose();
  });

  for (const [init, picks] of [[stepwise, [0, 2, 5]], [stepwiseFixedStart, [0, 2, 4]], [lower, [0, 1, 2]], [upper, [3, 4, 5]]] as const) {
    it(`${init.name}: shared block k is a copy of source layer ${picks.join(', ')}`, () => {
      const { model } = toRecursive(src, { loops: 2, init });
      expect(model.recursion.init).toBe(init.name);
      picks.forEach((layer, k) => {
        for (const p of paths) expect(blockValues(model, k, p)).toEqual(blockValues(src, layer, p));
      });
      model.dispose();
    });
  }

  it('random: the seed fixes the picks and is recorded', () => {
    const { model } = toRecursive(src, { loops: 2, init: random, seed: 5 });
    expect(model.recursion).toMatchObject({ init: 'random', seed: 5 });
    const picks = random.pickLayers({ numLayers: 6, loops: 2, depthMap: [0, 1, 2, 0, 1, 2], sources: [[0, 3], [1, 4], [2, 5]], seed: 5 });
    picks.forEach((layer, k) => expect(blockValues(model, k, 'mlp.up.weight')).toEqual(blockValues(src, layer, 'mlp.up.weight')));
    model.dispose();
  });

  it("norms: 'average' averages the norms while the rest follows the init; 'reset' sets the identity", () => {
    const avg = toRecursive(src, { loops: 2, init: lower, norms: 'average' }).model;
    expect(blockValues(avg, 1, 'attn.q.weight')).toEqual(blockValues(src, 1, 'attn.q.weight'));
    const want = mean(blockValues(src, 1, 'ln1.weight'), blockValues(src, 4, 'ln1.weight'));
    blockValues(avg, 1, 'ln1.weight').forEach((v, i) => expect(v).toBeCloseTo(want[i], 6));
    const reset = toRecursive(src, { loops: 2, norms: 'reset' }).model;
    expect([...blockValues(reset, 2, 'ln2.weight')].every((v) => v === 1)).toBe(true);
    const gemma = toRecursive(randomModel('gemma', 4), { loops: 2, norms: 'reset' }).model;
    expect([...blockValues(gemma, 0, 'ln1.weight')].every((v) => v === 0)).toBe(true);
    const neox = toRecursive(randomModel('gpt_neox', 4), { loops: 2, norms: 'reset' }).model;
    expect([...blockValues(neox, 1, 'ln1.bias')].every((v) => v === 0)).toBe(true);
    expect([...blockValues(neox, 1, 'ln1.weight')].every((v) => v === 1)).toBe(true);
    for (const m of [avg, reset, gemma, neox]) m.dispose();
  });
});
