// Conversion of a pretrained CausalLM into a RecursiveLM (PAPER.md section 1): pick source
// layers, map depth positions to shared blocks, initialise the shared blocks from the source
// layers, and expose the residuals W_original - W_shared that the LoRA SVD init consumes.

import { RrtError, type Backend } from '@rrt/tensor';
import type { CausalLM } from '@rrt/layers';
import { CYCLE, checkDepthMap, evenlySpacedSourceLayers, type SharingScheme } from './schemes.js';
import { average, isNormPath, stepwise, type InitContext, type InitMethod, type NormInit } from './init.js';
import { RecursiveLM, withNumLayers, writeValues } from './model.js';

export interface ToRecursiveOptions {
  /** B: how many times the shared blocks are looped. */
  loops: number;
  /** Default CYCLE. */
  scheme?: SharingScheme;
  /** Default stepwise (fixed ends). */
  init?: InitMethod;
  /** Norm weights of tied blocks; default 'follow' (as the init). */
  norms?: NormInit;
  /** Seed of random choices (the `random` init); default 0. */
  seed?: number;
  /**
   * Which source layers become depth positions: 'all' (default; L must suit the loops),
   * 'evenly-spaced' (the largest depth the scheme can loop, at round(linspace(0, L - 1, L'))),
   * or explicit ascending layer indices.
   */
  sourceLayers?: 'all' | 'evenly-spaced' | readonly number[];
  /** Backend of the new model; default the source model's. */
  backend?: Backend;
}

/** A weight as flat row-major values. */
export interface WeightValues {
  shape: number[];
  data: Float32Array;
}

/**
 * (depth, block-relative path such as 'attn.q.weight') -> W_original(depth) - W_shared(depth),
 * of the parameter's shape ([out, in] for a Linear weight). W_original is read from the source
 * model when called (it must not be disposed); W_shared is the model's current weight at that
 * depth, so W_shared + residual is always the original weight.
 */
export type Residuals = (depth: number, path: string) => WeightValues;

export interface Conversion {
  model: RecursiveLM;
  residuals: Residuals;
}

function resolveSourceLayers(pretrained: CausalLM, scheme: SharingScheme, loops: number, choice: ToRecursiveOptions['sourceLayers']): number[] {
  const L = pretrained.depth;
  if (choice === undefined || choice === 'all') return [...Array(L).keys()];
  if (choice === 'evenly-spaced') return evenlySpacedSourceLayers(scheme, L, loops);
  if (!Array.isArray(choice) || choice.length === 0 || choice.some((l, i) => !Number.isInteger(l) || l < 0 || l >= L || (i > 0 && l <= choice[i - 1]))) {
    throw new RrtError(`toRecursive: sourceLayers must be 'all', 'evenly-spaced' or ascending distinct layer indices in [0, ${L}), got ${JSON.stringify(choice)}`);
  }
  return [...choice];
}

/**
 * Converts a pretrained model (L depth positions) into a recursive one with K = L / B shared
 * blocks run along the scheme's depth map. The new model owns copies of every weight (the source
 * stays usable as a KD teacher). With loops = 1 the result computes the same logits.
 */
export function toRecursive(pretrained: CausalLM, opts: ToRecursiveOptions): Conversion {
  const { loops } = opts;
  const scheme = opts.scheme ?? CYCLE;
  const init = opts.init ?? stepwise;
  const norms = opts.norms ?? 'follow';
  const seed = opts.seed ?? 0;
  if (!['follow', 'average', 'reset'].includes(norms)) throw new RrtError(`toRecursive: norms must be 'follow', 'average' or 'reset', got ${JSON.stringify(norms)}`);
  if (!Number.isSafeInteger(loops) || loops < 1) throw new RrtError(`toRecursive: loops must be a positive integer, got ${loops}`);
  const sourceLayers = resolveSourceLayers(pretrained, scheme, loops, opts.sourceLayers);
  const L = sourceLayers.length;

  let depthMap: number[];
  try {
    depthMap = scheme.depthMap(L, loops);
  } catch (err) {
    if (opts.sourceLayers === undefined || opts.sourceLayers === 'all') {
      throw new RrtError(`toRecursive: ${(err as Error).message}; or pass sourceLayers: 'evenly-spaced' to keep evenly spaced source layers`);
    }
    throw err;
  }
  const K = checkDepthMap(depthMap, L, scheme.name);
  const sources = Array.from({ length: K }, (_, k) => {
    const src = scheme.sourcesOf(k, depthMap);
    if (!Array.isArray(src) || src.length === 0 || src.some((l, i) => !Number.isInteger(l) || l < 0 || l >= L || (i > 0 && l <= src[i - 1]))) {
      throw new RrtError(`${scheme.name}: sourcesOf(${k}) must be ascending depth positions in [0, ${L}), got ${JSON.stringify(src)}`);
    }
    return src;
  });

  const srcBlocks = sourceLayers.map((l) => pretrained.blockAt(l).namedParameters());
  const paths = [...srcBlocks[0].keys()];
  const untiedPaths = scheme.tie ? paths.filter((p) => !scheme.tie!(p)) : [];
  const cfg = withNumLayers(pretrained.cfg, L);
  const backend = opts.backend ?? pretrained.embed.weight.backend;
  const model = new RecursiveLM(
    cfg,
    { scheme: scheme.name, init: init.name, norms, loops, seed, depthMap, sourceLayers, untiedPaths, sourceConfig: pretrained.cfg },
    { backend, std: 0 },
  );

  try {
    const target = model.namedParameters();
    for (const [path, t] of pretrained.namedParameters()) {
      if (path.startsWith('blocks.')) continue;
      writeValues(target.get(path)!, t.dataSync());
    }
    const ctx: InitContext = { numLayers: L, loops, depthMap, sources, seed };
    const dstBlocks = model.blocks.map((b) => b.namedParameters());
    // Where shared block k's tensors live: block k, or the first depth running k when partially tied.
    const home = (k: number) => (model.partiallyTied ? depthMap.indexOf(k) : k);
    for (const path of paths) {
      const cache = new Map<number, Float32Array>();
      const layer = (l: number): Float32Array => {
        if (!Number.isInteger(l) || l < 0 || l >= L) throw new RrtError(`init ${init.name}: asked for source layer ${l}, expected [0, ${L})`);
        let v = cache.get(l);
        if (!v) cache.set(l, (v = srcBlocks[l].get(path)!.dataSync()));
        return v;
      };
      if (untiedPaths.includes(path)) {
        for (let d = 0; d < L; d++) writeValues(dstBlocks[d].get(path)!, layer(d));
        continue;
      }
      const size = srcBlocks[0].get(path)!.size;
      let values: Float32Array[];
      if (isNormPath(path) && norms === 'reset') {
        const identity = path.endsWith('.weight') && !cfg.rmsNormAddOne ? 1 : 0;
        values = sources.map(() => new Float32Array(size).fill(identity));
      } else {
        const method = isNormPath(path) && norms === 'average' ? average : init;
        values = method.init(path, layer, ctx);
      }
      if (!Array.isArray(values) || values.length !== K || values.some((v) => !(v instanceof Float32Array) || v.length !== size)) {
        throw new RrtError(`init ${init.name}: for "${path}" expected ${K} Float32Arrays of ${size} values, got ${Array.isArray(values) ? values.map((v) => v?.length).join(', ') : typeof values}`);
      }
      values.forEach((v, k) => writeValues(dstBlocks[home(k)].get(path)!, v));
    }
  } catch (err) {
    model.dispose();
    throw err;
  }

  const residuals: Residuals = (depth, path) => {
    if (!Number.isInteger(depth) || depth < 0 || depth >= L) throw new RrtError(`residuals: depth ${depth} is outside [0, ${L})`);
    const src = srcBlocks[depth].get(path);
    if (!src) throw new RrtError(`residuals: no block parameter "${path}"; block parameters: ${paths.join(', ')}`);
    if (src.isDisposed) throw new RrtError('residuals: the source model was disposed; keep it alive while residuals are read');
    const shared = model.blockAt(depth).namedParameters().get(path)!;
    const a = src.dataSync(), b = shared.dataSync();
    const data = new Float32Array(a.length);
    for (let i = 0; i < a.length; i++) data[i] = a[i] - b[i];
    return { shape: src.shape.slice(), data };
  };
  return { model, residuals };
}
