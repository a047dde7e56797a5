// RecursiveLM: a CausalLM whose L depth positions run K < L shared blocks, plus what it was made
// from. Fully tied schemes hold K blocks and schedule = depth map. Partially tied schemes (a
// `tie` predicate) hold one block per depth position (identity schedule) whose tied parameters
// are the same Tensor objects as those of the first block of their shared group, so autograd
// sums their gradients over the depths exactly as for fully tied blocks.

import { RrtError, fromValues, getBackend, type Tensor } from '@rrt/tensor';
import { CausalLM, parseHfConfig, toHfConfig, type InitOptions, type ModelConfig } from '@rrt/layers';
import { countRecursiveParams, type RecursiveParamCount } from './params.js';
import { checkDepthMap, depthsOf } from './schemes.js';
import type { NormInit } from './init.js';

/** How a RecursiveLM was made; saved as recursive.json. */
export interface RecursionInfo {
  /** Sharing scheme name ('CYCLE', ...). */
  readonly scheme: string;
  /** Init method name ('stepwise', 'average', ...); 'loaded' or 'custom' when unknown. */
  readonly init: string;
  readonly norms: NormInit;
  /** B. */
  readonly loops: number;
  readonly seed: number;
  /** `[L]`: shared block index run at each depth position. */
  readonly depthMap: readonly number[];
  /** `[L]`: the source model's layer each depth position was converted from. */
  readonly sourceLayers: readonly number[];
  /** Block-relative parameter paths kept per depth position (empty when fully tied). */
  readonly untiedPaths: readonly string[];
  /** Config of the model that was converted (its numLayers may exceed L after layer selection). */
  readonly sourceConfig: ModelConfig;
}

/** Unique (stored) vs total (as run, i.e. unrolled) parameter counts. */
export interface RecursiveParamReport {
  /** Scalars stored: tied tensors once. */
  readonly unique: number;
  /** Scalars of the equivalent unrolled model (each depth position's block counted). */
  readonly total: number;
  /** Stored scalars inside blocks. */
  readonly uniqueBlocks: number;
  /** Block scalars summed over depth positions. */
  readonly totalBlocks: number;
  /** K and L. */
  readonly sharedLayers: number;
  readonly depthPositions: number;
}

/** cfg with numLayers changed, re-read through config.json so every derived field agrees. */
export function withNumLayers(cfg: ModelConfig, numLayers: number): ModelConfig {
  if (cfg.numLayers === numLayers) return cfg;
  return parseHfConfig(toHfConfig({ ...cfg, numLayers }), `config with ${numLayers} layers`);
}

export class RecursiveLM extends CausalLM {
  readonly recursion: RecursionInfo;

  /**
   * An uninitialised recursive model (random weights, as CausalLM) with the block structure
   * `info` describes; toRecursive and loadRecursive fill its weights. cfg.numLayers must equal
   * the depth (info.depthMap.length).
   */
  constructor(cfg: ModelConfig, info: RecursionInfo, opts: InitOptions = {}) {
    const depth = info.depthMap.length;
    if (cfg.numLayers !== depth) {
      throw new RrtError(`RecursiveLM: config has numLayers = ${cfg.numLayers} but the depth map has ${depth} positions; pass withNumLayers(cfg, ${depth})`);
    }
    const k = checkDepthMap(info.depthMap, depth, `RecursiveLM (${info.scheme})`);
    if (info.sourceLayers.length !== depth) throw new RrtError(`RecursiveLM: sourceLayers has ${info.sourceLayers.length} entries, expected ${depth}`);
    const partial = info.untiedPaths.length > 0;
    super(cfg, { ...opts, backend: opts.backend ?? getBackend(), blocks: partial ? depth : k, schedule: partial ? [...Array(depth).keys()] : [...info.depthMap] });
    this.recursion = Object.freeze({ ...info, depthMap: Object.freeze([...info.depthMap]), sourceLayers: Object.freeze([...info.sourceLayers]), untiedPaths: Object.freeze([...info.untiedPaths]) });
    if (partial) this.linkTiedParameters();
  }

  /** Partial tying: each tied parameter of block d becomes the tensor of its group's first block. */
  private linkTiedParameters(): void {
    const untied = new Set(this.recursion.untiedPaths);
    const paths = [...this.blocks[0].namedParameters().keys()];
    for (const p of untied) if (!paths.includes(p)) throw new RrtError(`RecursiveLM: untied path "${p}" is not a block parameter; block parameters: ${paths.join(', ')}`);
    const map = this.recursion.depthMap;
    map.forEach((k, d) => {
      const first = map.indexOf(k);
      if (first === d) return;
      const owner = this.blocks[first].namedParameters();
      for (const p of paths) {
        if (untied.has(p)) continue;
        const [mod, local] = this.blocks[d].resolveParam(p);
        this.blocks[d].namedParameters().get(p)!.dispose();
        mod.setParam(local, owner.get(p)!);
      }
    });
  }

  /** B. */
  get loops(): number {
    return this.recursion.loops;
  }

  /** K: shared blocks (distinct weight sets along the depth map). */
  get sharedLayers(): number {
    return Math.max(...this.recursion.depthMap) + 1;
  }

  /** `[L]`: shared block run at each depth position. */
  get depthMap(): readonly number[] {
    return this.recursion.depthMap;
  }

  /** True when only some block parameters are tied (one block object per depth position). */
  get partiallyTied(): boolean {
    return this.recursion.untiedPaths.length > 0;
  }

  /** The shared block index of a depth position (0 <= depth < L). */
  sharedLayerIndex(depth: number): number {
    if (!Number.isInteger(depth) || depth < 0 || depth >= this.depth) throw new RrtError(`sharedLayerIndex: depth ${depth} is outside [0, ${this.depth})`);
    return this.recursion.depthMap[depth];
  }

  /** Depth positions that run shared block k. */
  depthsOf(k: number): number[] {
    return depthsOf(k, this.recursion.depthMap);
  }

  /** Unique vs total parameters, counted from the tensors this model holds. */
  parameterCounts(): RecursiveParamReport {
    const blockTensors = new Set<Tensor>();
    let totalBlocks = 0;
    for (let d = 0; d < this.depth; d++) {
      for (const t of new Set(this.blockAt(d).namedParameters().values())) {
        totalBlocks += t.size;
        blockTensors.add(t);
      }
    }
    const uniqueBlocks = [...blockTensors].reduce((s, t) => s + t.size, 0);
    const unique = this.numParameters();
    return { unique, total: unique - uniqueBlocks + totalBlocks, uniqueBlocks, totalBlocks, sharedLayers: this.sharedLayers, depthPositions: this.depth };
  }

  /** Config-level accounting (params.ts) of this model's config and depth map; exact for fully tied models. */
  countParams(): RecursiveParamCount {
    return countRecursiveParams(this.cfg, this.recursion.depthMap);
  }
}

/** Overwrites a tensor's values in place (keeps every reference to it, e.g. tied blocks). */
export function writeValues(t: Tensor, values: Float32Array): void {
  if (values.length !== t.size) throw new RrtError(`writeValues: ${values.length} values for a tensor of ${t.size}`);
  const tmp = fromValues(values, t.shape.slice(), t.backend);
  t.backend.kernels.copy(tmp.storage, t.storage);
  tmp.dispose();
}
