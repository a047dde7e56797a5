// A decoder-only causal LM whose blocks run along a depth schedule: depth position l runs
// block schedule[l]. A plain model has the identity schedule; a recursive (layer-tied) model has
// fewer blocks than depth positions. Everything else (embedding, final norm, head, caches, hooks)
// is the same code for both.

import { RrtError, ShapeError, Tensor, affine, add, gather, getBackend, matmul, reshape, fmtShape } from '@rrt/tensor';
import type { ModelConfig } from './config.js';
import { DecoderBlock } from './block.js';
import { LayerKVCache } from './attention.js';
import { Module, type ForwardContext } from './module.js';
import { Embedding, Linear, Norm, type InitOptions } from './nn.js';

/** The KV cache of one sequence: one layer cache per depth position, plus the next position. */
export class KVCache {
  readonly layers: LayerKVCache[];
  /** Number of tokens of this sequence processed so far (the next token's position). */
  position = 0;

  constructor(depths: number, kvHeads: number, headDim: number, capacity = 16) {
    this.layers = Array.from({ length: depths }, () => new LayerKVCache(kvHeads, headDim, capacity));
  }

  /** Bytes held by all layers. */
  get bytes(): number {
    return this.layers.reduce((s, l) => s + l.bytes, 0);
  }

  dispose(): void {
    for (const l of this.layers) l.dispose();
  }
}

export interface ForwardOptions {
  /** One cache per batch row: decode incrementally, appending to each. */
  caches?: KVCache[];
  /** Also return the hidden state after every depth position (before the final norm). */
  hidden?: boolean;
}

export interface ForwardResult {
  /** [B, T, V]. */
  logits: Tensor;
  /** After embedding (index 0) and after each depth position (index l + 1), each [B, T, D]. */
  hidden?: Tensor[];
}

export class CausalLM extends Module {
  readonly cfg: ModelConfig;
  embed: Embedding;
  /** Learned positions (gpt2), else null. */
  pos: Embedding | null;
  /** The distinct blocks; schedule maps depth positions to them. */
  blocks: DecoderBlock[];
  schedule: number[];
  norm: Norm;
  /** Separate LM head, or null when tied to the embedding. */
  head: Linear | null;

  constructor(cfg: ModelConfig, opts: InitOptions & { blocks?: number; schedule?: number[] } = {}) {
    super();
    this.cfg = cfg;
    const o = { ...opts, backend: opts.backend ?? getBackend() };
    this.embed = this.child('embed', new Embedding(cfg.vocabSize, cfg.hiddenSize, o));
    this.pos = cfg.positions === 'learned' ? this.child('pos', new Embedding(cfg.maxPositions, cfg.hiddenSize, o)) : null;
    const numBlocks = opts.blocks ?? cfg.numLayers;
    this.blocks = [];
    for (let i = 0; i < numBlocks; i++) this.blocks.push(this.child(`blocks.${i}`, new DecoderBlock(cfg, o)));
    this.schedule = opts.schedule ?? Array.from({ length: numBlocks }, (_, i) => i);
    checkSchedule(this.schedule, numBlocks);
    this.norm = this.child('norm', new Norm(cfg.norm, cfg.hiddenSize, cfg.normEps, cfg.rmsNormAddOne, o));
    this.head = cfg.tieWordEmbeddings ? null : this.child('head', new Linear(cfg.hiddenSize, cfg.vocabSize, o));
  }

  /** Number of depth positions run per token. */
  get depth(): number {
    return this.schedule.length;
  }

  /** The block run at a depth position. */
  blockAt(depth: number): DecoderBlock {
    return this.blocks[this.schedule[depth]];
  }

  /** A fresh KV cache for one sequence. */
  newCache(capacity = 16): KVCache {
    return new KVCache(this.depth, this.cfg.numKvHeads, this.cfg.headDim, capacity);
  }

  /** Positions of B rows of T tokens, continuing each row's cache (or from 0). */
  positionsFor(B: number, T: number, caches?: KVCache[]): Int32Array {
    const pos = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const start = caches ? caches[b].position : 0;
      if (start + T > this.cfg.maxPositions) {
        throw new RrtError(`sequence of ${start + T} tokens is longer than the model's context (${this.cfg.maxPositions})`);
      }
      for (let t = 0; t < T; t++) pos[b * T + t] = start + t;
    }
    return pos;
  }

  /** Token (+ position) embedding. ids: B*T integers -> [B, T, D]. */
  embedTokens(ids: ArrayLike<number>, B: number, T: number, positions: Int32Array): Tensor {
    if (ids.length !== B * T) throw new ShapeError(`embed: ${ids.length} ids for a batch of [${B}, ${T}]`);
    let h = this.embed.forward(ids, [B, T]);
    if (this.cfg.embeddingScale !== 1) h = affine(h, Math.fround(this.cfg.embeddingScale), 0);
    if (this.pos) h = add(h, reshape(gather(this.pos.weight, positions), [B, T, this.cfg.hiddenSize]));
    return h;
  }

  /** Runs the block of one depth position. h: [B, T, D]. */
  runDepth(h: Tensor, depth: number | Int32Array, ctx: ForwardContext, caches?: KVCache[]): Tensor {
    const d = typeof depth === 'number' ? depth : depth[0];
    return this.blockAt(d).forward(h, { ...ctx, depth }, caches?.map((c) => c.layers[d]));
  }

  /** Final norm and LM head. h: [..., D] -> [..., V]. */
  logitsFrom(h: Tensor): Tensor {
    return this.headLogits(this.norm.forward(h));
  }

  /** The LM head alone, on final-normed states. normed: [..., D] -> [..., V]. */
  headLogits(normed: Tensor): Tensor {
    const flat = reshape(normed, [-1, this.cfg.hiddenSize]);
    const logits = this.head ? this.head.forward(flat) : matmul(flat, this.embed.weight, { transB: true });
    return reshape(logits, [...normed.shape.slice(0, -1), this.cfg.vocabSize]);
  }

  /**
   * ids: B*T token ids (row-major) with shape [B, T] -> logits [B, T, V]. With caches, the tokens
   * continue each row's sequence and the caches grow by T.
   */
  forward(ids: ArrayLike<number>, shape: [number, number], opts: ForwardOptions = {}): ForwardResult {
    const [B, T] = shape;
    if (opts.caches && opts.caches.length !== B) throw new ShapeError(`forward: ${opts.caches.length} caches for a batch of ${B}`);
    for (let i = 0; i < ids.length; i++) {
      if (!(ids[i] >= 0 && ids[i] < this.cfg.vocabSize)) throw new RrtError(`forward: token id ${ids[i]} at position ${i} is out of the vocabulary [0, ${this.cfg.vocabSize})`);
    }
    const positions = this.positionsFor(B, T, opts.caches);
    const ctx: ForwardContext = { depth: 0, positions, batch: B, seq: T };
    let h = this.embedTokens(ids, B, T, positions);
    const hidden = opts.hidden ? [h] : undefined;
    for (let d = 0; d < this.depth; d++) {
      h = this.runDepth(h, d, ctx, opts.caches);
      hidden?.push(h);
    }
    if (opts.caches) for (const c of opts.caches) c.position += T;
    return { logits: this.logitsFrom(h), hidden };
  }
}

function checkSchedule(schedule: number[], blocks: number): void {
  if (schedule.length === 0 || schedule.some((b) => !Number.isInteger(b) || b < 0 || b >= blocks)) {
    throw new RrtError(`depth schedule ${fmtShape(schedule)} must list block indices in [0, ${blocks})`);
  }
}
