// Parameter accounting of a Relaxed Recursive Transformer: the recursive model plus one LoRA
// module per depth position on each target projection of the block that position runs.

import { RrtError } from '@rrt/tensor';
import { layerProjections, type ModelConfig, type ProjectionName } from '@rrt/layers';
import { countRecursiveParams, type RecursiveParamCount } from '@rrt/recursive';

/** Projections a LoRA module can sit on (q, k, v are the thirds of a fused qkv in gpt_neox / gpt2). */
export type LoraTarget = ProjectionName;

/** The paper's targets: every projection of the block. */
export const DEFAULT_LORA_TARGETS: readonly LoraTarget[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

export interface RelaxedParamOptions {
  /** LoRA rank r for every target unless rankPattern overrides it; 0 gives the plain recursive model. */
  readonly rank: number;
  /** Default: all of DEFAULT_LORA_TARGETS the family has (no gate without a gated MLP). */
  readonly targets?: readonly LoraTarget[];
  /** Separate ranks for attention (q, k, v, o) and MLP (gate, up, down) projections. */
  readonly rankPattern?: { readonly attention?: number; readonly mlp?: number };
  /**
   * Per-depth bias deltas (relax's `biases`): each depth position also gets a bias vector of the
   * target's output rows on every target projection that has a bias or reads a LayerNorm.
   */
  readonly biases?: boolean;
}

/** One LoRA module on W [dOut x dIn]: A [rank x dIn], B [dOut x rank]. */
export interface LoraModuleCount {
  readonly target: LoraTarget;
  readonly dIn: number;
  readonly dOut: number;
  /** The rank asked for (rank or its rankPattern override). */
  readonly requestedRank: number;
  /** min(requestedRank, dIn, dOut): a larger rank adds parameters but no expressiveness. */
  readonly rank: number;
  /** rank * (dIn + dOut). */
  readonly params: number;
}

export interface RelaxedParamCount {
  /** The shared model underneath. */
  readonly recursive: RecursiveParamCount;
  /** L: each depth position has its own modules. */
  readonly depthPositions: number;
  /** The modules of one depth position (the same shapes at every position). */
  readonly modules: readonly LoraModuleCount[];
  readonly loraPerDepth: number;
  /** All LoRA parameters: loraPerDepth * depthPositions. */
  readonly lora: number;
  /** Per-depth bias deltas in all (0 unless options.biases): depthPositions * the rows of each target that has them. */
  readonly depthBiases: number;
  readonly total: number;
  readonly embedding: number;
  /** recursive.nonEmbedding + lora + depthBiases. */
  readonly nonEmbedding: number;
}

/** Parameters of LoRA of rank r on W [dOut x dIn], rank capped at min(dIn, dOut): r * (dIn + dOut). */
export function loraParams(dIn: number, dOut: number, rank: number): number {
  return Math.min(rank, dIn, dOut) * (dIn + dOut);
}

function checkRank(what: string, r: unknown): number {
  if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 0) {
    throw new RrtError(`countRelaxedParams: ${what} must be a non-negative integer, got ${JSON.stringify(r) ?? String(r)}`);
  }
  return r;
}

/**
 * Parameters of the relaxed recursive model: the recursive model of `depthMap` (see
 * countRecursiveParams) plus, at each of its L depth positions, a LoRA module of rank r on each
 * target projection of the shared block that position runs.
 *
 * Counting convention (the one that reproduces the paper's table, PAPER.md section 2):
 * - one module per depth position, L of them per target, not one per shared layer or loop;
 * - a module on W [dOut x dIn] has r * (dIn + dOut) parameters, with r capped at
 *   min(dIn, dOut) per matrix (Gemma's and TinyLlama's narrow k/v at r = 512);
 * - a fused qkv (gpt_neox query_key_value, gpt2 c_attn) counts as three projections q, k, v,
 *   each with its own rank-r A [r x d] and B [d_head*heads x r], not one rank-r module on the
 *   fused [3d x d] matrix;
 * - LoRA modules have no biases and are non-embedding parameters.
 * The paper's relaxed entries equal round(recursive, 2) + round(lora, 2) in billions; rounding
 * the exact sum instead differs by 0.01 for TinyLlama at r = 128 and r = 256.
 */
export function countRelaxedParams(cfg: ModelConfig, depthMap: readonly number[], options: RelaxedParamOptions): RelaxedParamCount {
  const recursive = countRecursiveParams(cfg, depthMap);
  const rank = checkRank('rank', options.rank);
  const attentionRank = options.rankPattern?.attention === undefined ? rank : checkRank('rankPattern.attention', options.rankPattern.attention);
  const mlpRank = options.rankPattern?.mlp === undefined ? rank : checkRank('rankPattern.mlp', options.rankPattern.mlp);
  const shapes = layerProjections(cfg);
  const available = shapes.map((s) => s.name);
  let targets: readonly LoraTarget[];
  if (options.targets === undefined) {
    targets = DEFAULT_LORA_TARGETS.filter((t) => available.includes(t));
  } else {
    const missing = options.targets.filter((t) => !available.includes(t));
    if (missing.length > 0) {
      throw new RrtError(
        `countRelaxedParams: target(s) ${missing.join(', ')} do not exist in a ${cfg.family} block${cfg.gatedMlp ? '' : ' (its MLP is not gated)'}; available: ${available.join(', ')}`,
      );
    }
    if (new Set(options.targets).size !== options.targets.length) {
      throw new RrtError(`countRelaxedParams: targets list a projection twice: ${options.targets.join(', ')}`);
    }
    targets = options.targets;
  }
  const modules: LoraModuleCount[] = shapes
    .filter((s) => targets.includes(s.name))
    .map((s) => {
      const requestedRank = s.group === 'attention' ? attentionRank : mlpRank;
      const r = Math.min(requestedRank, s.dIn, s.dOut);
      return { target: s.name, dIn: s.dIn, dOut: s.dOut, requestedRank, rank: r, params: loraParams(s.dIn, s.dOut, requestedRank) };
    });
  const loraPerDepth = modules.reduce((sum, m) => sum + m.params, 0);
  const lora = loraPerDepth * recursive.depthPositions;
  // A bias delta sits where the output has a bias, or where the input is a LayerNorm's output (its beta).
  const hasBias = (t: LoraTarget): boolean => {
    if (t === 'q' || t === 'k' || t === 'v') return cfg.qkvBias || cfg.norm === 'layernorm';
    if (t === 'o') return cfg.attentionBias;
    if (t === 'gate' || t === 'up') return cfg.mlpBias || cfg.norm === 'layernorm';
    return cfg.mlpBias;
  };
  const biasPerDepth = options.biases ? shapes.filter((s) => targets.includes(s.name) && hasBias(s.name)).reduce((sum, s) => sum + s.dOut, 0) : 0;
  const depthBiases = biasPerDepth * recursive.depthPositions;
  return {
    recursive,
    depthPositions: recursive.depthPositions,
    modules,
    loraPerDepth,
    lora,
    depthBiases,
    total: recursive.total + lora + depthBiases,
    embedding: recursive.embedding,
    nonEmbedding: recursive.nonEmbedding + lora + depthBiases,
  };
}
