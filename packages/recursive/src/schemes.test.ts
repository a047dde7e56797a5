import { describe, expect, it } from 'vitest';
import { RrtError } from '@rrt/tensor';
import {
  CYCLE, MIDDLE_CYCLE, MIDDLE_SEQUENCE, SCHEMES, SEQUENCE, checkDepthMap, defineScheme, depthsOf, evenlySpaced, evenlySpacedSourceLayers,
  roundHalfEven, withTie,
} from './schemes.js';

describe('built-in sharing schemes', () => {
  it("reproduce PAPER.md's worked examples (L = 6)", () => {
    expect(CYCLE.depthMap(6, 3)).toEqual([0, 1, 0, 1, 0, 1]);
    expect(SEQUENCE.depthMap(6, 3)).toEqual([0, 0, 0, 1, 1, 1]);
    // "a 0 1 0 1 b": a and b unique, the middle four tied CYCLE-wise over two shared blocks.
    expect(MIDDLE_CYCLE.depthMap(6, 2)).toEqual([0, 1, 2, 1, 2, 3]);
    expect(MIDDLE_SEQUENCE.depthMap(6, 2)).toEqual([0, 1, 1, 2, 2, 3]);
  });

  it('are callable as their depth map and carry their name', () => {
    expect(CYCLE(18, 2)).toEqual(CYCLE.depthMap(18, 2));
    expect(Object.keys(SCHEMES)).toEqual(['CYCLE', 'SEQUENCE', 'MIDDLE_CYCLE', 'MIDDLE_SEQUENCE']);
    for (const [name, s] of Object.entries(SCHEMES)) {
      expect(s.name).toBe(name);
      expect(s.tie).toBeUndefined();
    }
  });

  it('sourcesOf lists the depth positions that run a block (CYCLE: k, k + K, ...)', () => {
    const map = CYCLE(6, 3);
    expect(CYCLE.sourcesOf(0, map)).toEqual([0, 2, 4]);
    expect(CYCLE.sourcesOf(1, map)).toEqual([1, 3, 5]);
    expect(SEQUENCE.sourcesOf(1, SEQUENCE(6, 3))).toEqual([3, 4, 5]);
    expect(MIDDLE_CYCLE.sourcesOf(3, MIDDLE_CYCLE(6, 2))).toEqual([5]);
    expect(depthsOf(2, [0, 2, 1, 2])).toEqual([1, 3]);
  });

  it('name L, loops and the valid loop counts when L is not divisible', () => {
    expect(() => CYCLE(22, 3)).toThrow(RrtError);
    expect(() => CYCLE(22, 3)).toThrow(/L = 22 .*3.*valid loop counts for L = 22: 1, 2, 11, 22/);
    expect(() => MIDDLE_SEQUENCE(18, 3)).toThrow(/L - 2 = 16 is not divisible by 3/);
  });
});

describe('custom schemes', () => {
  it('defineScheme: any depth map, default sourcesOf, optional tie predicate', () => {
    // Mirror: 0 1 2 2 1 0.
    const mirror = defineScheme({
      name: 'MIRROR',
      depthMap: (L, B) => {
        if (B !== 2 || L % 2) throw new RrtError(`MIRROR: needs 2 loops and an even L, got L = ${L}, ${B} loops`);
        return Array.from({ length: L }, (_, l) => Math.min(l, L - 1 - l));
      },
    });
    expect(mirror(6, 2)).toEqual([0, 1, 2, 2, 1, 0]);
    expect(mirror.sourcesOf(1, mirror(6, 2))).toEqual([1, 4]);
    expect(mirror.name).toBe('MIRROR');
    const mlpOnly = withTie(CYCLE, (p) => p.startsWith('mlp.'), 'CYCLE-mlp');
    expect(mlpOnly.name).toBe('CYCLE-mlp');
    expect(mlpOnly(4, 2)).toEqual([0, 1, 0, 1]);
    expect(mlpOnly.tie!('mlp.up.weight')).toBe(true);
    expect(mlpOnly.tie!('attn.q.weight')).toBe(false);
    expect(() => defineScheme({ name: '', depthMap: CYCLE.depthMap })).toThrow(/non-empty name/);
  });

  it('checkDepthMap returns K and rejects gaps, negatives and wrong lengths', () => {
    expect(checkDepthMap([0, 1, 0, 1], 4)).toBe(2);
    expect(() => checkDepthMap([0, 2, 0, 2], 4, 'X')).toThrow(/X: shared blocks 1 of 0\.\.2 are never run/);
    expect(() => checkDepthMap([0, -1], 2)).toThrow(/depth position 1 maps to -1/);
    expect(() => checkDepthMap([0, 1], 3)).toThrow(/expected a depth map with 3 entries/);
  });
});

describe('evenly spaced source layers', () => {
  it('round half to even, as numpy', () => {
    expect([0.5, 1.5, 2.5, 8.5, -0.5, 2.4, 2.6].map(roundHalfEven)).toEqual([0, 2, 2, 8, -0, 2, 3]);
  });

  it('round(linspace(0, n - 1, count)) keeps the ends', () => {
    expect(evenlySpaced(18, 9)).toEqual([0, 2, 4, 6, 8, 11, 13, 15, 17]);
    expect(evenlySpaced(6, 3)).toEqual([0, 2, 5]);
    expect(evenlySpaced(5, 1)).toEqual([0]);
    expect(() => evenlySpaced(3, 4)).toThrow(/cannot pick 4 of 3/);
  });

  it('pick the deepest depth the scheme can loop (TinyLlama: 22 layers, 3 loops -> 21)', () => {
    const s = evenlySpacedSourceLayers(CYCLE, 22, 3);
    expect(s).toHaveLength(21);
    expect(s[0]).toBe(0);
    expect(s[20]).toBe(21);
    expect(new Set(s).size).toBe(21);
    // MIDDLE schemes need L' - 2 divisible: 18 layers, 3 loops -> 17.
    expect(evenlySpacedSourceLayers(MIDDLE_CYCLE, 18, 3)).toHaveLength(17);
    expect(evenlySpacedSourceLayers(CYCLE, 6, 2)).toEqual([0, 1, 2, 3, 4, 5]);
  });
});
