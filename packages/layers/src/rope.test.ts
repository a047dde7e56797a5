import { describe, expect, it } from 'vitest';
import { FormatError, fromValues, setBackend } from '@rrt/tensor';
import { parseHfConfig } from './config.js';
import { Attention } from './attention.js';
import { Rotary } from './nn.js';
import { parseRopeScaling, ropeFrequencies, type RopeScaling } from './rope.js';

setBackend('ref');

/** Relative closeness for float32-rounded frequencies. */
function expectClose(actual: ArrayLike<number>, expected: number[], rel = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    expect(Math.abs(actual[i] - expected[i]), `index ${i}: ${actual[i]} vs ${expected[i]}`).toBeLessThanOrEqual(rel * Math.abs(expected[i]) + 1e-12);
  }
}

// Reference values below are worked by hand for tiny dims (base 10000):
// dim 4 -> base^(-0/4), base^(-2/4) = [1, 0.01]; dim 8 -> [1, 0.1, 0.01, 0.001].
describe('ropeFrequencies', () => {
  it('default: base^(-2i/dim)', () => {
    expectClose(ropeFrequencies(4, 10000, null, 8).invFreq, [1, 0.01]);
    expectClose(ropeFrequencies(8, 10000, null, 8).invFreq, [1, 0.1, 0.01, 0.001]);
    expect(ropeFrequencies(8, 10000, null, 8).attentionScaling).toBe(1);
  });

  it('linear: every frequency divided by factor (positions / factor)', () => {
    const f = ropeFrequencies(4, 10000, { type: 'linear', factor: 2 }, 8);
    expectClose(f.invFreq, [0.5, 0.005]);
    expect(f.attentionScaling).toBe(1);
  });

  it('dynamic: base * ((factor * seq / max) - (factor - 1))^(dim / (dim - 2)) once seq > max', () => {
    const s: RopeScaling = { type: 'dynamic', factor: 2 };
    // seq 16, max 8: base' = 10000 * (2 * 16 / 8 - 1)^(4 / 2) = 10000 * 9 = 90000; 90000^(-1/2) = 1/300.
    expectClose(ropeFrequencies(4, 10000, s, 8, 16).invFreq, [1, 1 / 300]);
    // At or under max the base is unchanged.
    expectClose(ropeFrequencies(4, 10000, s, 8, 8).invFreq, [1, 0.01]);
    expectClose(ropeFrequencies(4, 10000, s, 8).invFreq, [1, 0.01]);
  });

  it('llama3: high frequencies kept, low ones / factor, a smooth ramp between', () => {
    // original context 1024, low_freq_factor 1, high_freq_factor 4, factor 8:
    // wavelengths 2 pi / f = 6.28, 62.8, 628.3, 6283; thresholds 1024 / 4 = 256 and 1024 / 1 = 1024.
    // dims 0, 1: wavelength < 256, kept. dim 3: > 1024, 0.001 / 8 = 0.000125.
    // dim 2: smooth = (1024 / 628.3185 - 1) / (4 - 1) = 0.2099155;
    //        (1 - smooth) * 0.01 / 8 + smooth * 0.01 = 0.00308676.
    const s = parseRopeScaling({ rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 1024 }, 2048)!;
    const f = ropeFrequencies(8, 10000, s, 2048);
    expectClose(f.invFreq, [1, 0.1, 0.0030867610, 0.000125]);
    expect(f.attentionScaling).toBe(1);
  });

  it('yarn: ramp between extrapolation and interpolation, cos/sin scaled by 0.1 ln(factor) + 1', () => {
    // dim 8, original context 64, factor 4, beta_fast 32, beta_slow 1:
    // correction dim(r) = 8 ln(64 / (2 pi r)) / (2 ln 10000): r=32 -> -0.497 (floor -1, clamp 0); r=1 -> 1.008 (ceil 2).
    // ramp over dims (i - 0) / (2 - 0) clamped: [0, 0.5, 1, 1];
    // f = (f / 4) * ramp + f * (1 - ramp) = [1, 0.1 * (0.125 + 0.5), 0.01 / 4, 0.001 / 4].
    const s = parseRopeScaling({ type: 'yarn', factor: 4, original_max_position_embeddings: 64 }, 256)!;
    const f = ropeFrequencies(8, 10000, s, 256);
    expectClose(f.invFreq, [1, 0.0625, 0.0025, 0.00025]);
    expect(f.attentionScaling).toBeCloseTo(1.1386294361, 9);
    // Without truncation the range is [0, 1.008]: ramp of dim 1 is 1 / 1.008 = 0.99206.
    const untruncated = ropeFrequencies(8, 10000, { ...(s as Extract<RopeScaling, { type: 'yarn' }>), truncate: false }, 256);
    expectClose(untruncated.invFreq, [1, 0.025595246, 0.0025, 0.00025]);
    // original_max_position_embeddings defaults to max_position_embeddings.
    expect(parseRopeScaling({ type: 'yarn', factor: 4 }, 64)).toMatchObject({ originalMaxPositions: 64 });
    // attention_factor given wins; mscale / mscale_all_dim give a ratio of magnitude corrections.
    expect(parseRopeScaling({ type: 'yarn', factor: 4, attention_factor: 1.5 }, 64)).toMatchObject({ attentionFactor: 1.5 });
    const ratio = (0.1 * 2 * Math.log(4) + 1) / (0.1 * 1 * Math.log(4) + 1);
    expect((parseRopeScaling({ type: 'yarn', factor: 4, mscale: 2, mscale_all_dim: 1 }, 64) as { attentionFactor: number }).attentionFactor).toBeCloseTo(ratio, 12);
  });
});

describe('parseRopeScaling', () => {
  it('accepts rope_type or the legacy type, and default as no scaling', () => {
    expect(parseRopeScaling(null, 8)).toBeNull();
    expect(parseRopeScaling({ rope_type: 'default' }, 8)).toBeNull();
    expect(parseRopeScaling({ type: 'linear', factor: 2 }, 8)).toEqual({ type: 'linear', factor: 2 });
    expect(parseRopeScaling({ rope_type: 'dynamic', factor: 2, rope_theta: 10000 }, 8)).toEqual({ type: 'dynamic', factor: 2 });
  });

  it('refuses other types by name and bad parameters by key', () => {
    expect(() => parseRopeScaling({ type: 'foo', factor: 2 }, 8)).toThrow(FormatError);
    expect(() => parseRopeScaling({ type: 'foo', factor: 2 }, 8)).toThrow('rope_scaling.type "foo" is not supported; supported: default, linear, dynamic, llama3, yarn');
    expect(() => parseRopeScaling({ rope_type: 'longrope', long_factor: [1], short_factor: [1] }, 8)).toThrow(/rope_scaling.rope_type "longrope" is not supported/);
    expect(() => parseRopeScaling({ factor: 2 }, 8)).toThrow(/missing key "rope_type"/);
    expect(() => parseRopeScaling({ type: 'linear' }, 8)).toThrow(/rope type "linear" needs key "factor"/);
    expect(() => parseRopeScaling({ type: 'linear', factor: 0.5 }, 8)).toThrow(/rope_scaling.factor: expected a number >= 1, found 0.5/);
    expect(() => parseRopeScaling({ type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4 }, 8)).toThrow(/needs key "original_max_position_embeddings"/);
    expect(() => parseRopeScaling({ rope_type: 'linear', type: 'dynamic', factor: 2 }, 8)).toThrow(/disagree/);
  });

  it('is checked when a config.json is read, naming the file and key', () => {
    const base = {
      model_type: 'llama', vocab_size: 32, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 16,
    };
    expect(() => parseHfConfig({ ...base, rope_scaling: { type: 'foo', factor: 2 } }, 'x/config.json')).toThrow(
      'x/config.json: rope_scaling.type "foo" is not supported; supported: default, linear, dynamic, llama3, yarn',
    );
    expect(() => parseHfConfig({ ...base, rope_parameters: { rope_type: 'longrope', rope_theta: 10000 } }, 'x/config.json')).toThrow(
      /x\/config.json: rope_parameters.rope_type "longrope" is not supported/,
    );
    const cfg = parseHfConfig({ ...base, rope_scaling: { type: 'linear', factor: 4 } });
    expect(cfg.ropeScaling).toEqual({ type: 'linear', factor: 4 });
    // ... and reaches the attention's rotary embedding.
    const attn = new Attention(cfg);
    expect(attn.rotary!.scaling).toEqual({ type: 'linear', factor: 4 });
    attn.rotary!.dispose();
  });
});

describe('Rotary with scaling', () => {
  /** One head of dim 4, x = [1, 0, 0, 0] at `p`: out = [cos a0, 0, sin a0, 0] * scale, a0 = p * invFreq[0]... */
  function rotate(rotary: Rotary, p: number, x = [1, 2, 3, 4]): number[] {
    const out = rotary.apply(fromValues(new Float32Array(x), [1, 1, 4]), Int32Array.of(p));
    return Array.from(out.dataSync());
  }
  /** rotate-half by hand: [x1 cos - x2 sin, x2 cos + x1 sin] per frequency pair (i, i + 2). */
  function byHand(p: number, inv: number[], scale = 1, x = [1, 2, 3, 4]): number[] {
    const out = [0, 0, 0, 0];
    for (let i = 0; i < 2; i++) {
      const a = p * inv[i];
      out[i] = (x[i] * Math.cos(a) - x[i + 2] * Math.sin(a)) * scale;
      out[i + 2] = (x[i + 2] * Math.cos(a) + x[i] * Math.sin(a)) * scale;
    }
    return out;
  }

  it('linear factor 2 at position 6 equals no scaling at position 3', () => {
    const scaled = new Rotary(4, 4, 10000, 8, undefined, { type: 'linear', factor: 2 });
    const plain = new Rotary(4, 4, 10000, 8);
    expectClose(rotate(scaled, 6), rotate(plain, 3), 1e-5);
    expectClose(rotate(scaled, 5), byHand(5, [0.5, 0.005]), 1e-5);
  });

  it('yarn multiplies cos and sin by its attention factor', () => {
    const s = parseRopeScaling({ type: 'yarn', factor: 4 }, 8)!;
    const r = new Rotary(4, 4, 10000, 8, undefined, s);
    const af = 0.1 * Math.log(4) + 1;
    expectClose(rotate(r, 0), [af, 2 * af, 3 * af, 4 * af], 1e-6);
  });

  it('dynamic: plain frequencies up to maxPositions, the grown NTK base for a longer sequence', () => {
    const r = new Rotary(4, 4, 10000, 8, undefined, { type: 'dynamic', factor: 2 });
    expectClose(rotate(r, 7), byHand(7, [1, 0.01]), 1e-5);
    // Position 15: a sequence of 16 tokens, base 90000 (see ropeFrequencies above).
    expectClose(rotate(r, 15), byHand(15, [1, 1 / 300]), 1e-5);
  });
});
