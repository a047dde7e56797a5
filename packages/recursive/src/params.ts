// Parameter accounting of a Recursive Transformer from its config and depth map alone: the L
// depth positions run only K distinct (shared) blocks, so the blocks are counted K times,
// not L. Embeddings, final norm and LM head are not looped and count once, as in the full model.

import { RrtError } from '@rrt/tensor';
import { countParams, type LayerParams, type ModelConfig, type ParamBreakdown, type ParamCount } from '@rrt/layers';

export interface RecursiveParamCount {
  /** L: how many blocks a forward pass runs. */
  readonly depthPositions: number;
  /** K: distinct blocks whose weights exist. */
  readonly sharedLayers: number;
  /** Parameters of the K shared blocks. */
  readonly uniqueBlock: number;
  /** The K shared blocks by component (each component of one block times K). */
  readonly uniqueBlockBreakdown: LayerParams;
  /** One block. */
  readonly perLayer: LayerParams;
  readonly total: number;
  /** Token embedding, learned positions and an untied LM head, as in countParams. */
  readonly embedding: number;
  /** uniqueBlock + final norm. */
  readonly nonEmbedding: number;
  /** Whole model by component; `layers` is uniqueBlock. */
  readonly breakdown: ParamBreakdown;
  /** The same config without sharing, for comparison. */
  readonly full: ParamCount;
}

/**
 * Checks a depth map against a config and returns K, the number of shared layers.
 * A depth map has one entry per depth position (cfg.numLayers of them), each a shared-layer
 * index, and uses every index 0..K-1 (a shared layer nobody runs would be dead weight).
 */
export function sharedLayerCount(cfg: ModelConfig, depthMap: readonly number[]): number {
  if (!Array.isArray(depthMap) || depthMap.length === 0) {
    throw new RrtError(`depth map: expected an array with one shared-layer index per depth position, got ${JSON.stringify(depthMap)}`);
  }
  if (depthMap.length !== cfg.numLayers) {
    throw new RrtError(
      `depth map: has ${depthMap.length} depth positions but the config has numLayers = ${cfg.numLayers}; pass the config of the recursive model's depth`,
    );
  }
  const bad = depthMap.findIndex((s) => !Number.isSafeInteger(s) || s < 0);
  if (bad >= 0) throw new RrtError(`depth map: position ${bad} holds ${depthMap[bad]}; expected a non-negative integer layer index`);
  const k = Math.max(...depthMap) + 1;
  const used = new Set(depthMap);
  const unused = Array.from({ length: k }, (_, i) => i).filter((i) => !used.has(i));
  if (unused.length > 0) {
    throw new RrtError(`depth map: shared layers ${unused.join(', ')} of 0..${k - 1} are never used; expected indices 0..K-1 each used at least once`);
  }
  return k;
}

/**
 * Parameters of the recursive model that runs cfg.numLayers depth positions through the shared
 * layers `depthMap` names (e.g. CYCLE(18, 2) for Gemma 2B with 2 loops: 9 shared blocks).
 */
export function countRecursiveParams(cfg: ModelConfig, depthMap: readonly number[]): RecursiveParamCount {
  const sharedLayers = sharedLayerCount(cfg, depthMap);
  const full = countParams(cfg);
  const perLayer = full.perLayer;
  const uniqueBlockBreakdown = Object.fromEntries(Object.entries(perLayer).map(([k, v]) => [k, v * sharedLayers])) as unknown as LayerParams;
  const uniqueBlock = uniqueBlockBreakdown.total;
  const breakdown: ParamBreakdown = { ...full.breakdown, layers: uniqueBlock };
  const nonEmbedding = uniqueBlock + breakdown.finalNorm;
  return {
    depthPositions: depthMap.length,
    sharedLayers,
    uniqueBlock,
    uniqueBlockBreakdown,
    perLayer,
    total: full.embedding + nonEmbedding,
    embedding: full.embedding,
    nonEmbedding,
    breakdown,
    full,
  };
}
