// Init methods: how the K shared blocks get their weights from the L source layers. The built-ins
// follow PAPER.md section 1 (stepwise, average, lower, upper, random); a new method is a new
// object implementing InitMethod.

import { Generator, RrtError } from '@rrt/tensor';
import { roundHalfEven } from './schemes.js';

/** What an init method knows about the conversion. */
export interface InitContext {
  /** L: depth positions of the recursive model (= source layers, after any selection). */
  readonly numLayers: number;
  /** B. */
  readonly loops: number;
  /** `[L]`: shared block run at each depth position. */
  readonly depthMap: readonly number[];
  /** [K][...]: the source layers (depth positions) feeding each shared block, ascending. */
  readonly sources: readonly (readonly number[])[];
  /** Seed for methods that choose at random (same seed, same choice for every parameter). */
  readonly seed: number;
}

/** Builds the shared weights of one parameter from the source layers. */
export interface InitMethod {
  /** Recorded in a saved model's recursive.json. */
  readonly name: string;
  /**
   * path: block-relative ('attn.q.weight'); layer(l): the flat row-major values of that
   * parameter in source layer l (l < ctx.numLayers) -> K arrays, the shared value for each block,
   * each as long as the parameter. Must not modify what layer() returns.
   */
  init(path: string, layer: (l: number) => Float32Array, ctx: InitContext): Float32Array[];
}

/**
 * The tied group the selection methods pick within: the blocks fed by more than one source
 * layer (ascending) and the layers feeding them. A block with a single source (MIDDLE schemes'
 * first and last, or any block at 1 loop) has nothing to choose and keeps its own layer.
 */
export function tiedGroup(ctx: InitContext): { blocks: number[]; layers: number[] } {
  const blocks: number[] = [];
  const layers: number[] = [];
  ctx.sources.forEach((src, k) => {
    if (src.length > 1) {
      blocks.push(k);
      layers.push(...src);
    }
  });
  layers.sort((a, b) => a - b);
  return { blocks, layers };
}

/** An init that copies one source layer into each shared block. */
export interface SelectionInit extends InitMethod {
  /** `[K]`: the source layer copied into each shared block. */
  pickLayers(ctx: InitContext): number[];
}

/**
 * A SelectionInit. pick(n, layers, ctx) returns n ascending indices into `layers` (the tied
 * group's source layers, ascending), one per tied block in block order; single-source blocks
 * keep their own layer.
 */
export function selectionInit(name: string, pick: (n: number, layers: readonly number[], ctx: InitContext) => number[]): SelectionInit {
  const method: SelectionInit = {
    name,
    init: (_path, layer, ctx) => method.pickLayers(ctx).map((l) => layer(l).slice()),
    pickLayers(ctx) {
      const { blocks, layers } = tiedGroup(ctx);
      const picks = blocks.length > 0 ? pick(blocks.length, layers, ctx) : [];
      if (picks.length !== blocks.length || picks.some((i) => !Number.isSafeInteger(i) || i < 0 || i >= layers.length)) {
        throw new RrtError(`init ${name}: picked ${JSON.stringify(picks)} for ${blocks.length} blocks from ${layers.length} layers`);
      }
      const out = ctx.sources.map((src) => src[0]);
      blocks.forEach((k, i) => (out[k] = layers[picks[i]]));
      return out;
    },
  };
  return method;
}

/**
 * Stepwise, fixed ends (the default stepwise, as the public reference code): the tied blocks
 * get layers round(linspace(first, last, K)) of the tied layers, rounding half to even as
 * numpy does, so the first and last are kept. CYCLE, L = 18, 2 loops: 0 2 4 6 8 11 13 15 17;
 * MIDDLE_CYCLE, L = 8, 2 loops: 1 4 6 between the unique 0 and 7.
 */
export const stepwise = selectionInit('stepwise', (n, layers) => {
  const m = layers.length, first = layers[0];
  // Rounded in layer numbers (not positions) so the halves break the way numpy's do.
  return Array.from({ length: n }, (_, i) => (n === 1 ? 0 : roundHalfEven(first + (i * (m - 1)) / (n - 1)) - first));
});

/** Stepwise, fixed start: tied block i gets layer i * B (0, B, 2B, ...; L = 6, 2 loops: 0 2 4). */
export const stepwiseFixedStart = selectionInit('stepwise-fixed-start', (n, layers) => Array.from({ length: n }, (_, i) => Math.floor((i * layers.length) / n)));

/** Lower: the first K layers (0 .. K-1 of the tied layers). */
export const lower = selectionInit('lower', (n) => Array.from({ length: n }, (_, i) => i));

/** Upper: the last K layers. */
export const upper = selectionInit('upper', (n, layers) => Array.from({ length: n }, (_, i) => layers.length - n + i));

/** Random: a sorted random choice of K layers, seeded by ctx.seed (the same for every parameter). */
export const random = selectionInit('random', (n, layers, ctx) => {
  const m = layers.length;
  const rng = new Generator(ctx.seed);
  const idx = Array.from({ length: m }, (_, i) => i);
  // Partial Fisher-Yates: the first n entries are a uniform sample without replacement.
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rng.next() * (m - i));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, n).sort((a, b) => a - b);
});

/** Average: each shared block gets the mean of the layers tied to it (its sources). */
export const average: InitMethod = {
  name: 'average',
  init(_path, layer, ctx) {
    return ctx.sources.map((src) => {
      const first = layer(src[0]);
      if (src.length === 1) return first.slice();
      // Accumulate in float64: the mean of float32 values, rounded once.
      const acc = new Float64Array(first.length);
      for (const l of src) {
        const v = layer(l);
        for (let i = 0; i < v.length; i++) acc[i] += v[i];
      }
      const out = new Float32Array(acc.length);
      for (let i = 0; i < acc.length; i++) out[i] = acc[i] / src.length;
      return out;
    });
  },
};

/** The built-in inits by name. */
export const INITS: Readonly<Record<string, InitMethod>> = Object.freeze({ stepwise, 'stepwise-fixed-start': stepwiseFixedStart, average, lower, upper, random });

/**
 * Norm weights of tied blocks: 'follow' the chosen init (default), 'average' the tied layers, or
 * 'reset' to the identity (weight 1, or 0 for Gemma's (1 + w) RMSNorm; bias 0).
 */
export type NormInit = 'follow' | 'average' | 'reset';

/** True for block-relative paths of norm parameters ('ln1.weight', 'ln2.bias'). */
export function isNormPath(path: string): boolean {
  return /^ln\d*\./.test(path);
}
