// Model configs for the decoder-only families rrt supports: programmatic configs (defineConfig)
// and exact parameter accounting from a config alone (no weights). The normalised ModelConfig
// type lives in model-config.ts, reading and writing Hugging Face config.json in hf-config.ts;
// both are re-exported here.

import { RrtError } from '@rrt/tensor';
import {
  FIELD_ORDER, MODEL_FAMILIES, SUPPORTED_ARCHITECTURES, isFamily, parseHfConfig, sameValue, show, writeConfig, type ModelFields,
} from './hf-config.js';
import type { ModelConfig, ModelFamily } from './model-config.js';

export type { ModelFamily, Activation, NormKind, PositionKind, ModelConfig } from './model-config.js';
export { MODEL_FAMILIES, SUPPORTED_ARCHITECTURES, parseHfConfig, toHfConfig, toHfConfigFloat32, unrecognizedHfConfigKeys } from './hf-config.js';

// ---------------------------------------------------------------------------------------------
// Programmatic configs

type Style = Omit<ModelFields, 'family' | 'architecture' | 'vocabSize' | 'hiddenSize' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'intermediateSize' | 'maxPositions' | 'embeddingScale'>;

const ROPE_STYLE = { positions: 'rope', ropeTheta: 10000, rotaryPct: 1, ropeScaling: null, parallelResidual: false } as const;
const NO_BIAS = { qkvBias: false, attentionBias: false, mlpBias: false } as const;
const ALL_BIAS = { qkvBias: true, attentionBias: true, mlpBias: true } as const;

/** Each family's usual choices (transformers' defaults where it has them). */
const FAMILY_STYLE: Readonly<Record<ModelFamily, Style>> = {
  llama: { ...ROPE_STYLE, ...NO_BIAS, norm: 'rmsnorm', normEps: 1e-5, rmsNormAddOne: false, activation: 'silu', gatedMlp: true, tieWordEmbeddings: false },
  gemma: { ...ROPE_STYLE, ...NO_BIAS, norm: 'rmsnorm', normEps: 1e-6, rmsNormAddOne: true, activation: 'gelu_tanh', gatedMlp: true, tieWordEmbeddings: true },
  gpt_neox: {
    ...ROPE_STYLE,
    ...ALL_BIAS,
    rotaryPct: 0.25,
    parallelResidual: true,
    norm: 'layernorm',
    normEps: 1e-5,
    rmsNormAddOne: false,
    activation: 'gelu',
    gatedMlp: false,
    tieWordEmbeddings: false,
  },
  gpt2: {
    ...ALL_BIAS,
    positions: 'learned',
    ropeTheta: 0,
    rotaryPct: 0,
    ropeScaling: null,
    parallelResidual: false,
    norm: 'layernorm',
    normEps: 1e-5,
    rmsNormAddOne: false,
    activation: 'gelu_tanh',
    gatedMlp: false,
    tieWordEmbeddings: true,
  },
};

/**
 * Builds a ModelConfig from a family and overrides, with small per-family defaults
 * (vocab 256, d 64, 4 layers, 4 heads; gemma MQA) and each family's usual choices (norm,
 * activation, biases, tying, positions). Fields derived from others follow the overrides
 * unless given: headDim = hiddenSize / numHeads, numKvHeads = numHeads (gemma: 1),
 * intermediateSize = 4 * hiddenSize (gemma: 8x), gemma's embeddingScale = sqrt(hiddenSize),
 * attentionBias = qkvBias where the family has one attention-bias flag. The result is
 * validated exactly like a parsed file and its raw is the complete config.json; a combination
 * the family cannot express (e.g. gpt2 with rmsnorm) throws RrtError.
 */
export function defineConfig(family: ModelFamily, partial: Partial<Omit<ModelConfig, 'family' | 'raw'>> = {}): ModelConfig {
  if (!isFamily(family)) throw new RrtError(`defineConfig: unknown family ${show(family)}; supported: ${MODEL_FAMILIES.join(', ')}`);
  const source = `defineConfig('${family}')`;
  // Small sizes by default: a model that builds and trains in seconds.
  // An override given as undefined means "use the default", not "unset".
  const given = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined)) as typeof partial;
  const merged: Record<string, unknown> = {
    architecture: SUPPORTED_ARCHITECTURES[family][0],
    vocabSize: 256,
    hiddenSize: 64,
    numLayers: 4,
    numHeads: 4,
    maxPositions: 256,
    embeddingScale: 1,
    ...FAMILY_STYLE[family],
    ...given,
    family,
  };
  const hidden = merged.hiddenSize as number;
  const heads = merged.numHeads as number;
  if (given.headDim === undefined) {
    if (hidden % heads !== 0) {
      throw new RrtError(`${source}: hiddenSize (${hidden}) is not divisible by numHeads (${heads}); give headDim explicitly or change the sizes`);
    }
    merged.headDim = hidden / heads;
  }
  if (given.numKvHeads === undefined) merged.numKvHeads = family === 'gemma' ? 1 : heads;
  if (given.intermediateSize === undefined) merged.intermediateSize = (family === 'gemma' ? 8 : 4) * hidden;
  if (given.embeddingScale === undefined && family === 'gemma') merged.embeddingScale = Math.sqrt(hidden);
  if (given.attentionBias === undefined && family !== 'gpt2') merged.attentionBias = merged.qkvBias;
  const fields = merged as unknown as ModelFields;
  // Write every key explicitly, then read it back: the same validation as a file gets.
  for (const name of FIELD_ORDER) {
    if (fields[name] === undefined) throw new RrtError(`${source}: ${name} is undefined`);
  }
  const raw = writeConfig(fields, {}, true);
  const parsed = parseHfConfig(raw, source);
  for (const name of FIELD_ORDER) {
    if (!sameValue(parsed[name], fields[name])) {
      throw new RrtError(`${source}: ${name} = ${show(fields[name])} does not survive config.json (reads back as ${show(parsed[name])})`);
    }
  }
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// Parameter accounting

/** The logical projections of one block. gpt_neox and gpt2 store q, k, v fused in one matrix. */
export type ProjectionName = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';

export const PROJECTION_NAMES: readonly ProjectionName[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

/** One linear map of a block: W is [dOut x dIn]. */
export interface ProjectionShape {
  readonly name: ProjectionName;
  readonly dIn: number;
  readonly dOut: number;
  readonly bias: boolean;
  readonly group: 'attention' | 'mlp';
  /** The checkpoint's fused module holding it (gpt_neox query_key_value, gpt2 c_attn), or null. */
  readonly fusedIn: string | null;
}

/**
 * The projections of one block, in order q, k, v, o, [gate,] up, down (gate only for gated MLPs).
 * Shapes: q [H*hd x d], k/v [KV*hd x d], o [d x H*hd], gate/up [ff x d], down [d x ff].
 */
export function layerProjections(cfg: ModelConfig): ProjectionShape[] {
  const d = cfg.hiddenSize;
  const qOut = cfg.numHeads * cfg.headDim;
  const kvOut = cfg.numKvHeads * cfg.headDim;
  const ff = cfg.intermediateSize;
  const fused = cfg.family === 'gpt_neox' ? 'query_key_value' : cfg.family === 'gpt2' ? 'c_attn' : null;
  const out: ProjectionShape[] = [
    { name: 'q', dIn: d, dOut: qOut, bias: cfg.qkvBias, group: 'attention', fusedIn: fused },
    { name: 'k', dIn: d, dOut: kvOut, bias: cfg.qkvBias, group: 'attention', fusedIn: fused },
    { name: 'v', dIn: d, dOut: kvOut, bias: cfg.qkvBias, group: 'attention', fusedIn: fused },
    { name: 'o', dIn: qOut, dOut: d, bias: cfg.attentionBias, group: 'attention', fusedIn: null },
  ];
  if (cfg.gatedMlp) out.push({ name: 'gate', dIn: d, dOut: ff, bias: cfg.mlpBias, group: 'mlp', fusedIn: null });
  out.push({ name: 'up', dIn: d, dOut: ff, bias: cfg.mlpBias, group: 'mlp', fusedIn: null });
  out.push({ name: 'down', dIn: ff, dOut: d, bias: cfg.mlpBias, group: 'mlp', fusedIn: null });
  return out;
}

/** Parameters of one block by component (weights plus biases); gate is 0 without a gated MLP. */
export interface LayerParams {
  readonly attnNorm: number;
  readonly q: number;
  readonly k: number;
  readonly v: number;
  readonly o: number;
  readonly mlpNorm: number;
  readonly gate: number;
  readonly up: number;
  readonly down: number;
  readonly total: number;
}

/** Whole-model parameters by component. Tied heads are counted once, in tokenEmbedding. */
export interface ParamBreakdown {
  readonly tokenEmbedding: number;
  /** Learned position table (gpt2); 0 for RoPE. */
  readonly positionEmbedding: number;
  /** All blocks together. */
  readonly layers: number;
  readonly finalNorm: number;
  /** 0 when tied to the token embedding. */
  readonly lmHead: number;
}

export interface ParamCount {
  readonly total: number;
  /** tokenEmbedding + positionEmbedding + lmHead. */
  readonly embedding: number;
  /** total - embedding: the blocks and the final norm. */
  readonly nonEmbedding: number;
  /** One block. */
  readonly perLayer: LayerParams;
  readonly breakdown: ParamBreakdown;
}

/** Parameters of one norm layer: LayerNorm has weight and bias, RMSNorm a weight only. */
export function normParams(cfg: ModelConfig): number {
  return cfg.norm === 'layernorm' ? 2 * cfg.hiddenSize : cfg.hiddenSize;
}

/** Parameters of one block by component. */
export function countLayerParams(cfg: ModelConfig): LayerParams {
  const byName: Record<ProjectionName, number> = { q: 0, k: 0, v: 0, o: 0, gate: 0, up: 0, down: 0 };
  for (const p of layerProjections(cfg)) byName[p.name] = p.dIn * p.dOut + (p.bias ? p.dOut : 0);
  const norm = normParams(cfg);
  const total = 2 * norm + PROJECTION_NAMES.reduce((s, n) => s + byName[n], 0);
  return { attnNorm: norm, mlpNorm: norm, ...byName, total };
}

/**
 * Exact parameter count of the model `cfg` describes.
 *
 * Convention: "embedding" parameters are the token embedding, the learned position table
 * (gpt2's wpe) and an untied LM head; everything else (blocks, final norm) is non-embedding.
 * This matches the paper's non-embedding counts (token embedding and LM head excluded) and
 * Kaplan et al.'s convention of also excluding position embeddings, which are not part of
 * any block and are never looped.
 */
export function countParams(cfg: ModelConfig): ParamCount {
  const perLayer = countLayerParams(cfg);
  const tokenEmbedding = cfg.vocabSize * cfg.hiddenSize;
  const breakdown: ParamBreakdown = {
    tokenEmbedding,
    positionEmbedding: cfg.positions === 'learned' ? cfg.maxPositions * cfg.hiddenSize : 0,
    layers: cfg.numLayers * perLayer.total,
    finalNorm: normParams(cfg),
    lmHead: cfg.tieWordEmbeddings ? 0 : tokenEmbedding,
  };
  const embedding = breakdown.tokenEmbedding + breakdown.positionEmbedding + breakdown.lmHead;
  const nonEmbedding = breakdown.layers + breakdown.finalNorm;
  return { total: embedding + nonEmbedding, embedding, nonEmbedding, perLayer, breakdown };
}
