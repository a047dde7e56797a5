// The handle of a relaxed model (what relax() and loadAdapters() return): the depth-wise LoRA
// modules and bias deltas attached to a recursive model through one DepthHook per shared Linear,
// their parameters for training, their accounting, and the ways to merge them for serving.

import { Generator, RrtError, ShapeError, type Tensor, clone, fmtShape, noGrad } from '@rrt/tensor';
import { CausalLM, type Trainable } from '@rrt/layers';
import { withNumLayers } from '@rrt/recursive';
import { addToBias, addToWeight } from './adapter.js';
import { type DepthBias, DepthHook, type DepthLora, hasDepthHook } from './depth-hook.js';
import { countRelaxedParams, type LoraTarget, type RelaxedParamCount } from './params.js';
import { linearAt, partRowsCount } from './targets.js';

/** Settings a RelaxedLora was made with (loaded ones: read from adapter_config.json). */
export interface RelaxedInfo {
  readonly init: 'svd' | 'zero' | 'loaded';
  readonly rank: number;
  readonly alpha?: number;
  readonly dropout: number;
  readonly targets: readonly LoraTarget[];
  readonly rankPattern?: { readonly attention?: number; readonly mlp?: number };
  /** Whether SVD init folded norm gain ratios into the residuals (relax's foldNorms). */
  readonly foldNorms?: boolean;
  /** Whether each depth position has its own bias deltas (relax's biases). */
  readonly biases?: boolean;
}

/**
 * Depth-wise LoRA attached to a (recursive) model: the handle relax() and loadAdapters() return.
 * Train `parameters()` together with the model's own (the paper trains both).
 */
export class RelaxedLora {
  private readonly hooks = new Map<string, DepthHook>();
  private removed = false;

  constructor(
    readonly model: CausalLM,
    readonly modules: readonly DepthLora[],
    readonly info: RelaxedInfo,
    seed = 0,
    /** Per-depth bias deltas (relax(..., { biases: true })); empty otherwise. */
    readonly biases: readonly DepthBias[] = [],
  ) {
    const rng = new Generator(seed + 0x5eed);
    const hookFor = (depth: number, block: number, linearPath: string): DepthHook => {
      if (model.schedule[depth] !== block) throw new RrtError(`RelaxedLora: module at depth ${depth} names block ${block}, the schedule runs block ${model.schedule[depth]}`);
      const key = `${block}:${linearPath}`;
      let hook = this.hooks.get(key);
      if (!hook) {
        const lin = linearAt(model.blocks[block], linearPath);
        const where = `blocks.${block}.${linearPath}`;
        if (hasDepthHook(lin)) throw new RrtError(`RelaxedLora: ${where} already has depth-wise LoRA; remove() those adapters first`);
        hook = new DepthHook(lin, where, block, model.schedule, info.dropout, rng);
        this.hooks.set(key, hook);
      }
      return hook;
    };
    for (const m of modules) {
      const hook = hookFor(m.depth, m.block, m.linearPath);
      const list = hook.byDepth.get(m.depth) ?? [];
      if (list.some((o) => o.target === m.target)) throw new RrtError(`RelaxedLora: two modules for ${m.target} at depth ${m.depth}`);
      list.push(m);
      hook.byDepth.set(m.depth, list);
    }
    for (const b of biases) {
      const hook = hookFor(b.depth, b.block, b.linearPath);
      const list = hook.biasByDepth.get(b.depth) ?? [];
      if (list.some((o) => o.target === b.target)) throw new RrtError(`RelaxedLora: two bias deltas for ${b.target} at depth ${b.depth}`);
      const rows = partRowsCount(b.part, hook.linear.outFeatures);
      if (b.bias.shape.length !== 1 || b.bias.size !== rows) throw new ShapeError(`RelaxedLora: the bias delta of ${b.target} at depth ${b.depth} is ${fmtShape(b.bias.shape)}, expected [${rows}]`);
      list.push(b);
      hook.biasByDepth.set(b.depth, list);
    }
    for (const hook of this.hooks.values()) hook.attach();
  }

  /** Every A and B (and per-depth bias delta), for an optimizer. */
  parameters(): Tensor[] {
    return [...this.modules.flatMap((m) => [m.pair.A, m.pair.B]), ...this.biases.map((b) => b.bias)];
  }

  /**
   * The model's parameters plus the adapters', for the layers Trainer (the paper uptrains both);
   * with freezeBase only the adapters. Adapter names: lora.<depth>.<target>.lora_A / lora_B
   * (and lora.<depth>.<target>.bias for per-depth bias deltas).
   */
  trainable(opts: { freezeBase?: boolean } = {}): Trainable {
    const model = this.model;
    const named = (): Map<string, Tensor> => {
      const out = opts.freezeBase ? new Map<string, Tensor>() : model.namedParameters();
      for (const m of this.modules) {
        out.set(`lora.${m.depth}.${m.target}.lora_A`, m.pair.A);
        out.set(`lora.${m.depth}.${m.target}.lora_B`, m.pair.B);
      }
      for (const b of this.biases) out.set(`lora.${b.depth}.${b.target}.bias`, b.bias);
      return out;
    };
    return {
      parameters: () => [...new Set(named().values())],
      namedParameters: named,
      train: (flag?: boolean) => model.train(flag),
    };
  }

  /** Scalar LoRA parameters: sum of rank * (in + out) over modules (bias deltas not included). */
  get numParameters(): number {
    return this.modules.reduce((s, m) => s + m.pair.numParameters, 0);
  }

  /** Scalar parameters of the per-depth bias deltas (0 unless relaxed with biases). */
  get biasParameters(): number {
    return this.biases.reduce((s, b) => s + b.numParameters, 0);
  }

  /** Modules, LoRA parameters in all and per depth position (bias deltas included per depth). */
  get counts(): { modules: number; lora: number; depthBiases: number; perDepth: number[] } {
    const perDepth = new Array<number>(this.model.depth).fill(0);
    for (const m of this.modules) perDepth[m.depth] += m.pair.numParameters;
    for (const b of this.biases) perDepth[b.depth] += b.numParameters;
    return { modules: this.modules.length, lora: this.numParameters, depthBiases: this.biasParameters, perDepth };
  }

  /**
   * The parameter accounting of the configuration (params.ts): recursive model plus LoRA as
   * configured by rank / rankPattern / targets. Equals numParameters for relax() handles.
   */
  paramCount(): RelaxedParamCount {
    const cfg = withNumLayers(this.model.cfg, this.model.depth);
    return countRelaxedParams(cfg, this.model.schedule, { rank: this.info.rank, targets: this.info.targets, rankPattern: this.info.rankPattern, biases: this.info.biases });
  }

  /** The module of a target at a depth position, if any. */
  module(depth: number, target: LoraTarget): DepthLora | undefined {
    return this.modules.find((m) => m.depth === depth && m.target === target);
  }

  /**
   * Folds into the weights every module whose shared block runs at one depth position only
   * (a non-recursive model, or MIDDLE schemes' unique first and last layers), and bias deltas
   * into the biases likewise; those of a block shared by several depths cannot be merged and
   * keep running as hooks. Logits do not change either way. Returns the number of LoRA modules
   * merged (see also mergeUnrolled()).
   */
  merge(): number {
    this.checkLive();
    // Count depth positions per weight tensor: partially tied models share tensors across blocks.
    const uses = new Map<Tensor, number>();
    const paths = new Set(this.modules.map((m) => m.linearPath));
    for (let d = 0; d < this.model.depth; d++) {
      for (const p of paths) {
        const w = linearAt(this.model.blockAt(d), p).weight;
        uses.set(w, (uses.get(w) ?? 0) + 1);
      }
    }
    let merged = 0;
    for (const m of this.modules) {
      const lin = linearAt(this.model.blocks[m.block], m.linearPath);
      if (m.merged || uses.get(lin.weight) !== 1) continue;
      addToWeight(lin, m.part, m.pair.deltaWeight(), 1);
      m.merged = true;
      merged++;
    }
    for (const b of this.biases) {
      const lin = linearAt(this.model.blocks[b.block], b.linearPath);
      if (b.merged || !lin.bias || !this.biasUsedOnce(lin.bias)) continue;
      addToBias(lin, b.part, b.bias, 1);
      b.merged = true;
    }
    this.refreshDepths();
    return merged;
  }

  /** Rebuilds the per-depth weights after the shared weights changed, if mergeDepths() is on. */
  private refreshDepths(): void {
    if (this.depthsMerged) this.mergeDepths();
  }

  /** Whether a bias tensor runs at one depth position only (partial ties may share it). */
  private biasUsedOnce(bias: Tensor): boolean {
    let n = 0;
    const paths = new Set(this.biases.map((b) => b.linearPath));
    for (let d = 0; d < this.model.depth; d++) for (const p of paths) if (linearAt(this.model.blockAt(d), p).bias === bias) n++;
    return n === 1;
  }

  /**
   * The serving form of the relaxed model: every shared Linear gets one weight (and bias) per
   * depth position, W_shared + that depth's deltas, computed through Linear.product, and the hooks
   * stand by. Rows at different depths still share one call of their block (continuous depth-wise
   * batching): all rows run through the majority depth's weights, and the other rows get the
   * rank-2r difference to their own depth (dense where that is not cheaper). The price is memory: a copy of each relaxed weight per depth position,
   * what mergeUnrolled()'s plain model holds. Same logits as the hooks up to float32 rounding.
   * Inference only: a forward in training mode with gradients on throws (gradients would not reach
   * the adapters). The copies are taken now, so call it again after the weights change, and
   * unmergeDepths() to go back to the hooks.
   */
  mergeDepths(): void {
    this.checkLive();
    for (const hook of this.hooks.values()) hook.mergeDepths();
  }

  /** Whether the model runs on per-depth merged weights (mergeDepths). */
  get depthsMerged(): boolean {
    return [...this.hooks.values()].some((h) => h.depthMerged);
  }

  /** Drops the per-depth weights of mergeDepths(): the hooks apply the deltas again. */
  unmergeDepths(): void {
    for (const hook of this.hooks.values()) hook.unmergeDepths();
  }

  /** Takes merged deltas out of the weights again (up to float32 rounding). */
  unmerge(): void {
    for (const m of this.modules) {
      if (!m.merged) continue;
      addToWeight(linearAt(this.model.blocks[m.block], m.linearPath), m.part, m.pair.deltaWeight(), -1);
      m.merged = false;
    }
    for (const b of this.biases) {
      if (!b.merged) continue;
      addToBias(linearAt(this.model.blocks[b.block], b.linearPath), b.part, b.bias, -1);
      b.merged = false;
    }
    this.refreshDepths();
  }

  /**
   * A plain model with one block per depth position (L blocks, identity schedule): block l is a
   * copy of shared block s(l) with depth l's deltas merged into its weights. Same logits as the
   * relaxed model; save it with savePretrained to serve without LoRA.
   */
  mergeUnrolled(): CausalLM {
    this.checkLive();
    const src = this.model;
    const out = new CausalLM(withNumLayers(src.cfg, src.depth), { backend: src.embed.weight.backend, std: 0 });
    const params = src.namedParameters();
    noGrad(() => {
      for (const [path, t] of out.namedParameters()) {
        const m = /^blocks\.(\d+)\.(.+)$/.exec(path);
        const from = m ? `blocks.${src.schedule[Number(m[1])]}.${m[2]}` : path;
        const s = params.get(from);
        if (!s) throw new RrtError(`mergeUnrolled: the model has no parameter "${from}" for "${path}"`);
        const [owner, local] = out.resolveParam(path);
        t.dispose();
        owner.setParam(local, clone(s));
      }
      // Merged modules are already inside the copied shared weight.
      for (const m of this.modules) if (!m.merged) addToWeight(linearAt(out.blocks[m.depth], m.linearPath), m.part, m.pair.deltaWeight(), 1);
      for (const b of this.biases) {
        if (b.merged) continue;
        const lin = linearAt(out.blocks[b.depth], b.linearPath);
        if (!lin.bias) {
          out.dispose();
          throw new RrtError(`mergeUnrolled: depth ${b.depth} has a bias delta on ${b.linearPath}, but the ${src.cfg.family} config gives that Linear no bias; keep the relaxed model (hooks) instead`);
        }
        addToBias(lin, b.part, b.bias, 1);
      }
    });
    return out;
  }

  /** Unmerges, detaches every hook and frees A and B: the model is the plain recursive one again. */
  remove(): void {
    if (this.removed) return;
    this.unmergeDepths();
    this.unmerge();
    for (const hook of this.hooks.values()) hook.detach();
    this.hooks.clear();
    for (const m of this.modules) m.pair.dispose();
    for (const b of this.biases) b.bias.dispose();
    this.removed = true;
  }

  private checkLive(): void {
    if (this.removed) throw new RrtError('RelaxedLora: the adapters were removed');
  }
}

/** new RelaxedLora(...), freeing the modules' tensors if it refuses them. */
export function attachOrDispose(model: CausalLM, modules: DepthLora[], info: RelaxedInfo, seed: number, biases: DepthBias[] = []): RelaxedLora {
  try {
    return new RelaxedLora(model, modules, info, seed, biases);
  } catch (err) {
    for (const m of modules) m.pair.dispose();
    for (const b of biases) b.bias.dispose();
    throw err;
  }
}
