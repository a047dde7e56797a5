// RoPE frequencies: the plain inverse frequencies base^(-2i/dim) and the context-extension
// scalings of Hugging Face config.json's `rope_scaling` that transformers implements for llama:
// linear, dynamic (NTK), llama3 and yarn. Any other scaling type is refused by name, so a
// checkpoint is never run with positions it was not trained on.

import { FormatError } from '@rrt/tensor';

/** The rope_scaling types rrt implements, as config.json names them. */
export const ROPE_SCALING_TYPES = ['linear', 'dynamic', 'llama3', 'yarn'] as const;
export type RopeScalingType = (typeof ROPE_SCALING_TYPES)[number];

/** A validated rope_scaling. Positions are counts of tokens. */
export type RopeScaling =
  /** Positions divided by `factor` (equivalently every inverse frequency divided by it). */
  | { readonly type: 'linear'; readonly factor: number }
  /** NTK-aware: the base grows once a sequence is longer than maxPositions. */
  | { readonly type: 'dynamic'; readonly factor: number }
  /** Llama 3.1: low frequencies divided by factor, high ones kept, a smooth ramp between. */
  | {
      readonly type: 'llama3';
      readonly factor: number;
      readonly lowFreqFactor: number;
      readonly highFreqFactor: number;
      readonly originalMaxPositions: number;
    }
  /** YaRN: per-dimension ramp between interpolation and extrapolation, plus a cos/sin scale. */
  | {
      readonly type: 'yarn';
      readonly factor: number;
      readonly originalMaxPositions: number;
      readonly betaFast: number;
      readonly betaSlow: number;
      /** Multiplies cos and sin (so every attention logit by its square). */
      readonly attentionFactor: number;
      /** Round the correction range outwards to whole dims (transformers' default). */
      readonly truncate: boolean;
    };

type Raw = Record<string, unknown>;

function isPresent(v: unknown): boolean {
  return v !== undefined && v !== null;
}

/** YaRN's magnitude correction: 0.1 * mscale * ln(scale) + 1 (1 for scale <= 1). */
export function yarnMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/**
 * Validates a config.json rope_scaling object (or a transformers v5 rope_parameters object,
 * whose keys are the same plus rope_theta / partial_rotary_factor). `where` names the object in
 * errors ("config.json: rope_scaling"). Returns null for no scaling (null, or type "default").
 * `maxPositions` is the config's max_position_embeddings, the default of
 * original_max_position_embeddings for yarn.
 * Throws FormatError naming the key for an unsupported type, a missing or bad parameter.
 */
export function parseRopeScaling(raw: unknown, maxPositions: number, where = 'rope_scaling'): RopeScaling | null {
  if (!isPresent(raw)) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new FormatError(`${where}: expected an object or null, found ${JSON.stringify(raw)}`);
  }
  const s = raw as Raw;
  // transformers reads rope_type and accepts the legacy key "type".
  const typeKey = isPresent(s.rope_type) ? 'rope_type' : isPresent(s.type) ? 'type' : null;
  if (typeKey === null) throw new FormatError(`${where}: missing key "rope_type" (or "type"); supported: default, ${ROPE_SCALING_TYPES.join(', ')}`);
  const type = s[typeKey];
  if (typeKey === 'rope_type' && isPresent(s.type) && s.type !== type) {
    throw new FormatError(`${where}: "rope_type" ${JSON.stringify(type)} and "type" ${JSON.stringify(s.type)} disagree`);
  }
  if (type === 'default') return null;
  if (typeof type !== 'string' || !(ROPE_SCALING_TYPES as readonly string[]).includes(type)) {
    throw new FormatError(`${where}.${typeKey} ${JSON.stringify(type)} is not supported; supported: default, ${ROPE_SCALING_TYPES.join(', ')}`);
  }
  const num = (key: string, opts: { fallback?: number; min?: number; integer?: boolean } = {}): number => {
    const v = s[key];
    if (!isPresent(v)) {
      if (opts.fallback !== undefined) return opts.fallback;
      throw new FormatError(`${where}: rope type "${type}" needs key "${key}"`);
    }
    const min = opts.min ?? 0;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v < min || (opts.integer && !Number.isSafeInteger(v))) {
      const what = opts.integer ? 'a positive integer' : min > 0 ? `a number >= ${min}` : 'a positive finite number';
      throw new FormatError(`${where}.${key}: expected ${what}, found ${JSON.stringify(v)}`);
    }
    return v;
  };
  // transformers warns on factor < 1 and its formulas assume >= 1 (a factor below 1 shrinks the context).
  const factor = num('factor', { min: 1 });
  switch (type as RopeScalingType) {
    case 'linear':
      return { type: 'linear', factor };
    case 'dynamic':
      return { type: 'dynamic', factor };
    case 'llama3': {
      const lowFreqFactor = num('low_freq_factor');
      const highFreqFactor = num('high_freq_factor');
      if (highFreqFactor <= lowFreqFactor) {
        throw new FormatError(`${where}: "high_freq_factor" (${highFreqFactor}) must be larger than "low_freq_factor" (${lowFreqFactor})`);
      }
      return { type: 'llama3', factor, lowFreqFactor, highFreqFactor, originalMaxPositions: num('original_max_position_embeddings', { integer: true }) };
    }
    case 'yarn': {
      const originalMaxPositions = num('original_max_position_embeddings', { fallback: maxPositions, integer: true });
      let attentionFactor: number;
      if (isPresent(s.attention_factor)) attentionFactor = num('attention_factor');
      else if (isPresent(s.mscale) && isPresent(s.mscale_all_dim) && s.mscale !== 0 && s.mscale_all_dim !== 0) {
        attentionFactor = yarnMscale(factor, num('mscale')) / yarnMscale(factor, num('mscale_all_dim'));
      } else attentionFactor = yarnMscale(factor);
      const truncate = s.truncate ?? true;
      if (typeof truncate !== 'boolean') throw new FormatError(`${where}.truncate: expected true or false, found ${JSON.stringify(truncate)}`);
      // `|| default` as transformers does: 0 and null both mean the paper's 32 / 1.
      const betaFast = s.beta_fast === 0 ? 32 : num('beta_fast', { fallback: 32 });
      const betaSlow = s.beta_slow === 0 ? 1 : num('beta_slow', { fallback: 1 });
      return { type: 'yarn', factor, originalMaxPositions, betaFast, betaSlow, attentionFactor, truncate };
    }
  }
}

/** RoPE inverse frequencies of one head and the factor that multiplies cos and sin. */
export interface RopeFrequencies {
  /** [dim / 2] inverse frequencies (radians per position), float32-rounded as transformers computes them. */
  readonly invFreq: Float32Array;
  /** Multiplies cos and sin: yarn's attention factor, 1 for every other type. */
  readonly attentionScaling: number;
}

/**
 * Inverse frequencies for a rotary dim `dim` (even), RoPE base `base` and `scaling`.
 * `maxPositions` is max_position_embeddings; `seqLen` (dynamic only) the length of the sequence
 * being encoded (positions 0..seqLen-1): the NTK base grows only when seqLen > maxPositions.
 * Default (no scaling): invFreq[i] = base^(-2i/dim).
 */
export function ropeFrequencies(dim: number, base: number, scaling: RopeScaling | null, maxPositions: number, seqLen?: number): RopeFrequencies {
  const half = dim / 2;
  const plain = (b: number): Float64Array => {
    const out = new Float64Array(half);
    for (let i = 0; i < half; i++) out[i] = 1 / Math.pow(b, (2 * i) / dim);
    return out;
  };
  let inv: Float64Array;
  let attentionScaling = 1;
  switch (scaling?.type) {
    case undefined:
      inv = plain(base);
      break;
    case 'linear':
      inv = plain(base).map((f) => f / scaling.factor);
      break;
    case 'dynamic': {
      const len = seqLen !== undefined && seqLen > maxPositions ? seqLen : maxPositions;
      const grown = base * Math.pow((scaling.factor * len) / maxPositions - (scaling.factor - 1), dim / (dim - 2));
      inv = plain(grown);
      break;
    }
    case 'llama3': {
      const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions: old } = scaling;
      const lowFreqWavelen = old / lowFreqFactor;
      const highFreqWavelen = old / highFreqFactor;
      inv = plain(base).map((f) => {
        const wavelen = (2 * Math.PI) / f;
        if (wavelen < highFreqWavelen) return f; // high frequency: kept
        if (wavelen > lowFreqWavelen) return f / factor; // low frequency: interpolated
        const smooth = (old / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        return (1 - smooth) * (f / factor) + smooth * f;
      });
      break;
    }
    case 'yarn': {
      const { factor, originalMaxPositions, betaFast, betaSlow, truncate } = scaling;
      // The dim at which a wavelength fits `rotations` times into the original context.
      const correctionDim = (rotations: number) => (dim * Math.log(originalMaxPositions / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
      let low = correctionDim(betaFast), high = correctionDim(betaSlow);
      if (truncate) {
        low = Math.floor(low);
        high = Math.ceil(high);
      }
      low = Math.max(low, 0);
      high = Math.min(high, dim - 1);
      if (low === high) high += 0.001;
      const extrapolated = plain(base);
      inv = extrapolated.map((f, i) => {
        const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
        // ramp 0 (fast-turning dims): extrapolate (keep f); ramp 1: interpolate (f / factor).
        const keep = 1 - ramp;
        return (f / factor) * (1 - keep) + f * keep;
      });
      attentionScaling = scaling.attentionFactor;
      break;
    }
  }
  return { invFreq: Float32Array.from(inv), attentionScaling };
}
