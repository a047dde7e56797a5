// Parameter accounting behind `rrt params`: pure functions of a config, loaded only when the
// command runs (it needs @rrt/recursive and @rrt/lora).

import { RrtError } from '@rrt/tensor';
import { countParams, layerProjections, type ModelConfig } from '@rrt/layers';
import { SCHEMES as LIBRARY_SCHEMES, countRecursiveParams, type SharingScheme } from '@rrt/recursive';
import { countRelaxedParams, type LoraModuleCount, type LoraTarget } from '@rrt/lora';
import { UsageError } from '../errors.js';
import { formatInt, formatParamCount, formatTable, paramUnit } from '../ui/format.js';

/** The library's sharing schemes under command-line names: CYCLE -> cycle, MIDDLE_CYCLE -> middle-cycle. */
export const SCHEMES: Readonly<Record<string, SharingScheme>> = Object.fromEntries(
  Object.entries(LIBRARY_SCHEMES).map(([name, scheme]) => [name.toLowerCase().replace(/_/g, '-'), scheme]),
);

const TARGETS: readonly LoraTarget[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

/** A parsed model config and where it came from (for messages and the JSON document). */
export interface ModelSource {
  config: ModelConfig;
  source: string;
}

/** The recursive model's depth map; a loop count the scheme cannot split the model into is bad usage. */
function depthMap(scheme: string, cfg: ModelConfig, loops: number): number[] {
  const fn = SCHEMES[scheme];
  if (!fn) throw new UsageError(`--scheme: unknown scheme '${scheme}'; expected one of ${Object.keys(SCHEMES).join(', ')}`);
  try {
    return fn(cfg.numLayers, loops);
  } catch (err) {
    if (err instanceof RrtError) throw new UsageError(`--loops ${loops}: ${err.message}`);
    throw err;
  }
}

export interface ParamsReport {
  config: string;
  model: Pick<ModelConfig, 'family' | 'architecture' | 'numLayers' | 'hiddenSize' | 'numHeads' | 'numKvHeads' | 'headDim' | 'intermediateSize' | 'vocabSize' | 'tieWordEmbeddings'>;
  scheme: string;
  loops: number;
  sharedLayers: number;
  depthPositions: number;
  depthMap: number[];
  full: { total: number; embedding: number; nonEmbedding: number };
  recursive: { total: number; embedding: number; nonEmbedding: number };
  lora: null | {
    rank: number;
    targets: string[];
    perDepth: number;
    total: number;
    modules: { target: string; dIn: number; dOut: number; requestedRank: number; rank: number; params: number }[];
  };
  relaxed: null | { total: number; embedding: number; nonEmbedding: number };
}

/** Counts for one model, scheme, loop count and LoRA setting: pure, so tests and other commands reuse it. */
export function paramsReport(
  model: ModelSource,
  opts: { loops: number; scheme: string; rank: number; attnRank?: number; mlpRank?: number; targets?: readonly LoraTarget[] },
): ParamsReport {
  const cfg = model.config;
  const map = depthMap(opts.scheme, cfg, opts.loops);
  const full = countParams(cfg);
  const rec = countRecursiveParams(cfg, map);
  const relaxedWanted = opts.rank > 0 || (opts.attnRank ?? 0) > 0 || (opts.mlpRank ?? 0) > 0;
  let lora: ParamsReport['lora'] = null;
  let relaxed: ParamsReport['relaxed'] = null;
  if (relaxedWanted) {
    const available = layerProjections(cfg).map((p) => p.name);
    const targets = opts.targets ?? TARGETS.filter((t) => available.includes(t));
    const missing = targets.filter((t) => !available.includes(t));
    if (missing.length > 0) {
      throw new UsageError(`--targets: ${missing.join(', ')} not in a ${cfg.family} block${cfg.gatedMlp ? '' : ' (its MLP is not gated)'}; available: ${available.join(', ')}`);
    }
    const rankPattern = opts.attnRank !== undefined || opts.mlpRank !== undefined ? { attention: opts.attnRank, mlp: opts.mlpRank } : undefined;
    const c = countRelaxedParams(cfg, map, { rank: opts.rank, targets, ...(rankPattern ? { rankPattern } : {}) });
    lora = { rank: opts.rank, targets: [...targets], perDepth: c.loraPerDepth, total: c.lora, modules: c.modules.map((m: LoraModuleCount) => ({ ...m })) };
    relaxed = { total: c.total, embedding: c.embedding, nonEmbedding: c.nonEmbedding };
  }
  return {
    config: model.source,
    model: {
      family: cfg.family,
      architecture: cfg.architecture,
      numLayers: cfg.numLayers,
      hiddenSize: cfg.hiddenSize,
      numHeads: cfg.numHeads,
      numKvHeads: cfg.numKvHeads,
      headDim: cfg.headDim,
      intermediateSize: cfg.intermediateSize,
      vocabSize: cfg.vocabSize,
      tieWordEmbeddings: cfg.tieWordEmbeddings,
    },
    scheme: opts.scheme,
    loops: opts.loops,
    sharedLayers: rec.sharedLayers,
    depthPositions: rec.depthPositions,
    depthMap: map,
    full: { total: full.total, embedding: full.embedding, nonEmbedding: full.nonEmbedding },
    recursive: { total: rec.total, embedding: rec.embedding, nonEmbedding: rec.nonEmbedding },
    lora,
    relaxed,
  };
}

/** The human-readable form of a report. */
export function paramsLines(r: ParamsReport): string[] {
  const m = r.model;
  const lines = [
    `model: ${m.family} (${m.architecture}) from ${r.config}: ${m.numLayers} layers, hidden ${m.hiddenSize}, ${m.numHeads} heads / ${m.numKvHeads} kv of ${m.headDim}, ffn ${m.intermediateSize}, vocab ${m.vocabSize}`,
    `sharing: ${r.scheme.toUpperCase()}, ${r.loops} loop${r.loops === 1 ? '' : 's'}: ${r.sharedLayers} shared layers run at ${r.depthPositions} depth positions`,
  ];
  if (r.lora) {
    const capped = r.lora.modules.filter((x) => x.rank < x.requestedRank).map((x) => `${x.target} at ${x.rank}`);
    const ranks = [...new Set(r.lora.modules.map((x) => x.requestedRank))];
    lines.push(
      `LoRA: rank ${ranks.join('/')} on ${r.lora.targets.join(', ')} at each of ${r.depthPositions} depth positions, ${formatInt(r.lora.perDepth)} per position${capped.length > 0 ? ` (capped by the matrix size: ${capped.join(', ')})` : ''}`,
    );
  }
  // One unit for the table, the full model's (the paper's billions for its models), so rows compare at a glance.
  const unit = paramUnit(r.full.total);
  const fmt = (n: number) => formatParamCount(n, unit);
  const rows: string[][] = [[`full (${m.numLayers} layers)`, fmt(r.full.nonEmbedding), fmt(r.full.total)]];
  if (r.loops > 1 || r.scheme !== 'cycle') rows.push([`recursive (${r.sharedLayers} shared)`, fmt(r.recursive.nonEmbedding), fmt(r.recursive.total)]);
  if (r.lora && r.relaxed) {
    rows.push([`+ LoRA r=${r.lora.rank}`, fmt(r.lora.total), '']);
    rows.push(['relaxed', fmt(r.relaxed.nonEmbedding), fmt(r.relaxed.total)]);
  }
  lines.push('', ...formatTable(['parameters', 'non-embedding', 'total'], rows, ['l', 'r', 'r']));
  return lines;
}

