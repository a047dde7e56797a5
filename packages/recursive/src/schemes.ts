// Sharing schemes: which shared block runs at each depth position, which source layers feed each
// shared block, and (optionally) which parameters of a block are tied at all. A scheme is a
// small object passed to toRecursive; a new scheme is a new object, not an edit to the library.

import { RrtError } from '@rrt/tensor';
import * as maps from './schemes-maps.js';

/**
 * A sharing scheme. Callable as its own depth map, so `CYCLE(18, 2)` is the 18-entry map and
 * `toRecursive(model, { scheme: CYCLE, loops: 2 })` uses the scheme.
 */
export interface SharingScheme {
  /** Same as depthMap. */
  (numLayers: number, loops: number): number[];
  /** Recorded in a saved model's recursive.json. */
  readonly name: string;
  /**
   * (L, B) -> [L]: the shared block index run at each depth position, using exactly 0..K-1.
   * Throws when L cannot be run in B loops.
   */
  depthMap(numLayers: number, loops: number): number[];
  /**
   * The depth positions (= source layers) whose weights initialise shared block `block`,
   * ascending. Default: the depth positions that run it.
   */
  sourcesOf(block: number, depthMap: readonly number[]): number[];
  /**
   * Which parameters are tied, by block-relative path ('attn.q.weight', 'mlp.down.bias',
   * 'ln1.weight'). Absent: every parameter is tied. A parameter it rejects stays per depth
   * position, initialised from that position's source layer.
   */
  readonly tie?: (path: string) => boolean;
}

export interface SchemeSpec {
  name: string;
  depthMap: (numLayers: number, loops: number) => number[];
  sourcesOf?: (block: number, depthMap: readonly number[]) => number[];
  tie?: (path: string) => boolean;
}

/** The depth positions of `depthMap` ([L] shared block indices) that run shared block `block`. */
export function depthsOf(block: number, depthMap: readonly number[]): number[] {
  const out: number[] = [];
  depthMap.forEach((b, d) => {
    if (b === block) out.push(d);
  });
  return out;
}

/** Builds a SharingScheme from its parts (sourcesOf defaults to depthsOf). */
export function defineScheme(spec: SchemeSpec): SharingScheme {
  if (typeof spec.name !== 'string' || spec.name.length === 0) throw new RrtError('defineScheme: a scheme needs a non-empty name');
  if (typeof spec.depthMap !== 'function') throw new RrtError(`defineScheme(${spec.name}): depthMap must be a function (numLayers, loops) => number[]`);
  const fn = ((numLayers: number, loops: number) => spec.depthMap(numLayers, loops)) as SharingScheme;
  Object.defineProperty(fn, 'name', { value: spec.name });
  const parts = { depthMap: spec.depthMap, sourcesOf: spec.sourcesOf ?? depthsOf, ...(spec.tie ? { tie: spec.tie } : {}) };
  return Object.freeze(Object.assign(fn, parts));
}

/**
 * The same depth map with only the parameters `tie` accepts shared; e.g.
 * `withTie(CYCLE, (p) => p.startsWith('mlp.'))` ties the MLPs and keeps attention and norms per depth.
 */
export function withTie(scheme: SharingScheme, tie: (path: string) => boolean, name = `${scheme.name}[partial]`): SharingScheme {
  return defineScheme({ name, depthMap: scheme.depthMap, sourcesOf: scheme.sourcesOf, tie });
}

/** CYCLE (the paper's main scheme): s(l) = l mod K. L=6, B=3: 0 1 0 1 0 1. */
export const CYCLE = defineScheme({ name: 'CYCLE', depthMap: maps.CYCLE });
/** SEQUENCE: s(l) = floor(l / B). L=6, B=3: 0 0 0 1 1 1. */
export const SEQUENCE = defineScheme({ name: 'SEQUENCE', depthMap: maps.SEQUENCE });
/** MIDDLE_CYCLE: first and last layer unique, the L - 2 middle ones tied CYCLE-wise. L=6, B=2: 0 1 2 1 2 3. */
export const MIDDLE_CYCLE = defineScheme({ name: 'MIDDLE_CYCLE', depthMap: maps.MIDDLE_CYCLE });
/** MIDDLE_SEQUENCE: as MIDDLE_CYCLE, middle tied SEQUENCE-wise. L=6, B=2: 0 1 1 2 2 3. */
export const MIDDLE_SEQUENCE = defineScheme({ name: 'MIDDLE_SEQUENCE', depthMap: maps.MIDDLE_SEQUENCE });

/** The built-in schemes by name (how loadRecursive and the CLI find them). */
export const SCHEMES: Readonly<Record<string, SharingScheme>> = Object.freeze({ CYCLE, SEQUENCE, MIDDLE_CYCLE, MIDDLE_SEQUENCE });

/**
 * Checks a depth map for `scheme` over numLayers positions and returns K, the shared blocks.
 * Valid: numLayers non-negative integers using every index 0..K-1.
 */
export function checkDepthMap(depthMap: readonly number[], numLayers: number, scheme = 'depth map'): number {
  if (!Array.isArray(depthMap) || depthMap.length !== numLayers) {
    throw new RrtError(`${scheme}: expected a depth map with ${numLayers} entries (one per depth position), got ${JSON.stringify(depthMap)}`);
  }
  const bad = depthMap.findIndex((s) => !Number.isSafeInteger(s) || s < 0);
  if (bad >= 0) throw new RrtError(`${scheme}: depth position ${bad} maps to ${depthMap[bad]}; expected a non-negative integer block index`);
  const k = Math.max(...depthMap) + 1;
  const used = new Set(depthMap);
  const unused = Array.from({ length: k }, (_, i) => i).filter((i) => !used.has(i));
  if (unused.length > 0) throw new RrtError(`${scheme}: shared blocks ${unused.join(', ')} of 0..${k - 1} are never run; a depth map must use every index 0..K-1`);
  return k;
}

/** Round half to even (numpy / Python `round`), so layer picks match the reference code. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** round(linspace(0, n - 1, count)) with round-half-to-even: count indices in [0, n), first and last kept. */
export function evenlySpaced(n: number, count: number): number[] {
  if (!Number.isSafeInteger(count) || count < 1 || count > n) throw new RrtError(`evenlySpaced: cannot pick ${count} of ${n} indices`);
  if (count === 1) return [0];
  const out = Array.from({ length: count }, (_, i) => roundHalfEven((i * (n - 1)) / (count - 1)));
  for (let i = 1; i < out.length; i++) {
    if (out[i] <= out[i - 1]) throw new RrtError(`evenlySpaced: picks of ${count} from ${n} collide at ${out[i]}`);
  }
  return out;
}

/**
 * The largest depth L' <= numLayers that `scheme` can run in `loops` loops, and the source layers
 * to keep: round(linspace(0, L - 1, L')), so the first and last layers are kept. Used when L is
 * not divisible by the loops (e.g. TinyLlama's 22 layers in 3 loops -> 21 of them).
 */
export function evenlySpacedSourceLayers(scheme: SharingScheme, numLayers: number, loops: number): number[] {
  for (let n = numLayers; n >= 1; n--) {
    let ok = true;
    try {
      scheme.depthMap(n, loops);
    } catch {
      ok = false;
    }
    if (ok) return evenlySpaced(numLayers, n);
  }
  throw new RrtError(`${scheme.name}: no depth up to L = ${numLayers} can be run in ${loops} loops`);
}
