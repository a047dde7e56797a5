import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RrtError } from '@rrt/tensor';
import { countParams, defineConfig, parseHfConfig } from '@rrt/layers';
import { countRecursiveParams, sharedLayerCount } from './params.js';
import { CYCLE, MIDDLE_CYCLE, MIDDLE_SEQUENCE, SEQUENCE, validLoopCounts, type DepthMapFn } from './schemes-maps.js';

const GEMMA_2B = parseHfConfig({
  architectures: ['GemmaForCausalLM'],
  model_type: 'gemma',
  head_dim: 256,
  hidden_act: 'gelu',
  hidden_size: 2048,
  intermediate_size: 16384,
  max_position_embeddings: 8192,
  num_attention_heads: 8,
  num_hidden_layers: 18,
  num_key_value_heads: 1,
  rms_norm_eps: 1e-6,
  vocab_size: 256000,
});

const MAPS: Record<string, DepthMapFn> = { CYCLE, SEQUENCE, MIDDLE_CYCLE, MIDDLE_SEQUENCE };

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a throw');
}

describe('depth maps', () => {
  it("reproduce PAPER.md's worked examples", () => {
    expect(CYCLE(6, 3)).toEqual([0, 1, 0, 1, 0, 1]);
    expect(SEQUENCE(6, 3)).toEqual([0, 0, 0, 1, 1, 1]);
    // a 0 1 0 1 b, with a = 0, the middle shifted to 1..K, b = K + 1
    expect(MIDDLE_CYCLE(6, 2)).toEqual([0, 1, 2, 1, 2, 3]);
    expect(MIDDLE_SEQUENCE(6, 2)).toEqual([0, 1, 1, 2, 2, 3]);
  });

  it('CYCLE runs shared layer k at depths k, k+K, k+2K, ...', () => {
    expect(CYCLE(18, 2)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(SEQUENCE(6, 2)).toEqual([0, 0, 1, 1, 2, 2]);
  });

  it('1 loop is the untied model; L loops of CYCLE is one layer', () => {
    for (const fn of [CYCLE, SEQUENCE]) expect(fn(5, 1)).toEqual([0, 1, 2, 3, 4]);
    expect(MIDDLE_CYCLE(5, 1)).toEqual([0, 1, 2, 3, 4]);
    expect(CYCLE(4, 4)).toEqual([0, 0, 0, 0]);
    expect(MIDDLE_SEQUENCE(5, 3)).toEqual([0, 1, 1, 1, 2]);
  });

  it('throw when L is not divisible by the loops, naming L, loops and valid loop counts', () => {
    const e = errorOf(() => CYCLE(22, 3));
    expect(e).toBeInstanceOf(RrtError);
    expect(e.message).toContain('L = 22');
    expect(e.message).toContain('3 loops');
    expect(e.message).toContain('valid loop counts for L = 22: 1, 2, 11, 22');
    expect(() => SEQUENCE(7, 2)).toThrow(/SEQUENCE: .*valid loop counts for L = 7: 1, 7/);
    // Middle schemes split L - 2 layers: 18 - 2 = 16.
    expect(() => MIDDLE_CYCLE(18, 3)).toThrow(/L - 2 = 16 is not divisible by 3.*valid loop counts for L = 18: 1, 2, 4, 8, 16/);
    expect(() => MIDDLE_SEQUENCE(2, 1)).toThrow(/at least 3 layers/);
    expect(() => CYCLE(6, 0)).toThrow(/loops must be a positive integer, got 0/);
    expect(() => CYCLE(6, 1.5)).toThrow(/loops must be a positive integer/);
    expect(() => CYCLE(0, 1)).toThrow(/numLayers must be a positive integer/);
    expect(validLoopCounts(22, 'CYCLE')).toEqual([1, 2, 11, 22]);
    expect(validLoopCounts(18, 'MIDDLE_CYCLE')).toEqual([1, 2, 4, 8, 16]);
  });

  it('use each shared layer B times and indices 0..K-1 (property)', () => {
    const arb = fc.tuple(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 6 }), fc.constantFrom(...Object.keys(MAPS)));
    fc.assert(
      fc.property(arb, ([k, loops, name]) => {
        const middle = name.startsWith('MIDDLE');
        const numLayers = k * loops + (middle ? 2 : 0);
        const map = MAPS[name]!(numLayers, loops);
        expect(map).toHaveLength(numLayers);
        const counts = new Map<number, number>();
        for (const s of map) counts.set(s, (counts.get(s) ?? 0) + 1);
        const shared = middle ? k + 2 : k;
        expect([...counts.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: shared }, (_, i) => i));
        if (middle) {
          expect(counts.get(0)).toBe(1);
          expect(counts.get(k + 1)).toBe(1);
          for (let s = 1; s <= k; s++) expect(counts.get(s)).toBe(loops);
        } else {
          for (const c of counts.values()) expect(c).toBe(loops);
        }
        // First use in order: shared layers are numbered as they appear.
        const firstUse = [...new Set(map)];
        expect(firstUse).toEqual([...firstUse].sort((a, b) => a - b));
      }),
      { numRuns: 300 },
    );
  });
});

describe('countRecursiveParams', () => {
  it('Gemma 2B with 2 loops keeps 9 blocks', () => {
    const r = countRecursiveParams(GEMMA_2B, CYCLE(18, 2));
    expect(r.depthPositions).toBe(18);
    expect(r.sharedLayers).toBe(9);
    expect(r.perLayer.total).toBe(110_104_576);
    expect(r.uniqueBlock).toBe(9 * 110_104_576);
    expect(r.nonEmbedding).toBe(9 * 110_104_576 + 2048);
    expect(r.embedding).toBe(256000 * 2048);
    expect(r.total).toBe(r.embedding + r.nonEmbedding);
    expect(r.breakdown).toEqual({ tokenEmbedding: 524_288_000, positionEmbedding: 0, layers: r.uniqueBlock, finalNorm: 2048, lmHead: 0 });
    expect(r.uniqueBlockBreakdown.gate).toBe(9 * 2048 * 16384);
    expect(r.uniqueBlockBreakdown.k).toBe(9 * 2048 * 256);
    expect(r.full).toEqual(countParams(GEMMA_2B));
    // Paper: 0.99B non-embedding (2 loops), 0.66B (3 loops).
    expect(Math.round(r.nonEmbedding / 1e7) / 100).toBe(0.99);
    expect(Math.round(countRecursiveParams(GEMMA_2B, CYCLE(18, 3)).nonEmbedding / 1e7) / 100).toBe(0.66);
  });

  it('counts blocks by shared layer, whatever the scheme', () => {
    expect(countRecursiveParams(GEMMA_2B, SEQUENCE(18, 2)).uniqueBlock).toBe(9 * 110_104_576);
    // First and last unique plus 16 / 2 tied.
    expect(countRecursiveParams(GEMMA_2B, MIDDLE_CYCLE(18, 2)).sharedLayers).toBe(10);
    expect(countRecursiveParams(GEMMA_2B, MIDDLE_SEQUENCE(18, 4)).sharedLayers).toBe(6);
  });

  it('1 loop is the full model', () => {
    const cfg = defineConfig('gpt2', { numLayers: 6 });
    const r = countRecursiveParams(cfg, CYCLE(6, 1));
    const full = countParams(cfg);
    expect(r.total).toBe(full.total);
    expect(r.nonEmbedding).toBe(full.nonEmbedding);
    expect(r.breakdown).toEqual(full.breakdown);
  });

  it('saves (L - K) blocks and nothing else (property)', () => {
    const arb = fc.tuple(fc.constantFrom('llama', 'gemma', 'gpt_neox', 'gpt2' as const), fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 4 }), fc.boolean());
    fc.assert(
      fc.property(arb, ([family, k, loops, tie]) => {
        const cfg = defineConfig(family, { numLayers: k * loops, tieWordEmbeddings: tie });
        const r = countRecursiveParams(cfg, CYCLE(k * loops, loops));
        expect(r.full.total - r.total).toBe((k * loops - k) * r.perLayer.total);
        expect(r.embedding).toBe(r.full.embedding);
        expect(r.total).toBe(r.embedding + r.nonEmbedding);
      }),
    );
  });

  it('rejects malformed depth maps', () => {
    const cfg = defineConfig('llama', { numLayers: 4 });
    expect(() => countRecursiveParams(cfg, [0, 1, 0])).toThrow(/has 3 depth positions but the config has numLayers = 4/);
    expect(() => countRecursiveParams(cfg, [0, 2, 0, 2])).toThrow(/shared layers 1 of 0\.\.2 are never used/);
    expect(() => countRecursiveParams(cfg, [0, -1, 0, 1])).toThrow(/position 1 holds -1/);
    expect(() => countRecursiveParams(cfg, [0, 0.5, 0, 1])).toThrow(RrtError);
    expect(() => countRecursiveParams(cfg, [])).toThrow(/one shared-layer index per depth position/);
    expect(sharedLayerCount(cfg, [0, 1, 1, 0])).toBe(2);
  });
});
