// How much early exit (and each way of filling exited tokens' K/V) costs in quality:
// teacher-forced perplexity and top-1 agreement with the full-depth model, and agreement of
// greedy generations with full-depth greedy generations.

import { RrtError, type Tensor, argmax, crossEntropy, indexSelect, noGrad, reshape, tidy } from '@rrt/tensor';
import type { CausalLM, ForwardContext } from '@rrt/layers';
import { type ExitHeadAdapters, exitLogits, resolveLayout } from './exits.js';
import { type ExitedToken, type KvFill, ServingKVCache, checkKvFill, fillExitedKV, kvFillName } from './kv-fill.js';
import { type LoopLayout, type LoopLayoutOptions, loopEndingAt } from './loops.js';
import { type ExitPolicy, argmaxRow } from './policies.js';
import { ServingEngine } from './engine/index.js';

export interface ExitEvalOptions {
  policy: ExitPolicy;
  /** A mode or a fitted StatePredictor (default 'propagate'). */
  kvFill?: KvFill;
  layout?: LoopLayout | LoopLayoutOptions;
  adapters?: ExitHeadAdapters;
  /** Sequences decoded side by side (default 8). */
  batch?: number;
}

export interface ExitEvalResult {
  policy: string;
  /** kvFillName of the fill. */
  kvFill: string;
  /** Positions scored. */
  tokens: number;
  /** Mean next-token NLL (nats) and perplexity with early exit. */
  nll: number;
  perplexity: number;
  /** The same without early exit (full depth, no cache). */
  fullNll: number;
  fullPerplexity: number;
  /** Fraction of positions whose exit argmax equals the full-depth argmax. */
  agreement: number;
  /** Loops run per token (a hindsight policy runs all of them). */
  meanLoops: number;
  exitsPerLoop: number[];
}

/**
 * Teacher-forced evaluation of early exit: each sequence is decoded token by token with the
 * policy deciding exits and kvFill filling exited tokens' deeper K/V, so later positions see
 * the cache serving would build. sequences: token ids, each of length >= 2; every position but
 * the last is scored against the next token.
 */
export function evaluateExits(model: CausalLM, sequences: readonly (readonly number[])[], opts: ExitEvalOptions): ExitEvalResult {
  const layout = resolveLayout(model, opts.layout);
  const kvFill = opts.kvFill ?? 'propagate';
  checkKvFill(model, kvFill, 'evaluateExits');
  const batch = opts.batch ?? 8;
  if (sequences.length === 0) throw new RrtError('evaluateExits: no sequences given');
  for (const s of sequences) {
    if (s.length < 2) throw new RrtError(`evaluateExits: every sequence needs >= 2 tokens, got one of ${s.length}`);
    if (s.length > model.cfg.maxPositions) throw new RrtError(`evaluateExits: a sequence of ${s.length} tokens is longer than the context (${model.cfg.maxPositions})`);
  }
  const acc = { tokens: 0, nll: 0, fullNll: 0, agree: 0, loops: 0, exits: new Array<number>(layout.loops).fill(0) };
  // Equal lengths decode in lockstep.
  const byLength = new Map<number, (readonly number[])[]>();
  for (const s of sequences) {
    const g = byLength.get(s.length);
    if (g) g.push(s);
    else byLength.set(s.length, [s]);
  }
  for (const group of byLength.values()) {
    for (let i = 0; i < group.length; i += batch) evalChunk(model, layout, group.slice(i, i + batch), opts, kvFill, acc);
  }
  return {
    policy: opts.policy.name,
    kvFill: kvFillName(kvFill),
    tokens: acc.tokens,
    nll: acc.nll / acc.tokens,
    perplexity: Math.exp(acc.nll / acc.tokens),
    fullNll: acc.fullNll / acc.tokens,
    fullPerplexity: Math.exp(acc.fullNll / acc.tokens),
    agreement: acc.agree / acc.tokens,
    meanLoops: acc.loops / acc.tokens,
    exitsPerLoop: acc.exits,
  };
}

interface Acc {
  tokens: number;
  nll: number;
  fullNll: number;
  agree: number;
  loops: number;
  exits: number[];
}

function evalChunk(model: CausalLM, layout: LoopLayout, seqs: (readonly number[])[], opts: ExitEvalOptions, kvFill: KvFill, acc: Acc): void {
  const B = seqs.length, T = seqs[0].length, L = layout.depth, V = model.cfg.vocabSize, D = model.cfg.hiddenSize;
  const ids = new Int32Array(B * T);
  seqs.forEach((s, b) => ids.set(s, b * T));
  const targets = new Int32Array(B * T).fill(-100);
  for (let b = 0; b < B; b++) for (let t = 0; t + 1 < T; t++) targets[b * T + t] = ids[b * T + t + 1];
  // Full-depth reference: one batched forward, no cache.
  const full = noGrad(() => tidy(() => {
    const logits = model.forward(ids, [B, T]).logits;
    const nll = crossEntropy(logits, targets, { reduction: 'none' }).dataSync();
    const top = argmax(logits, -1).dataSync();
    return { nll: Float64Array.from(nll), top: Int32Array.from(top) };
  }));
  const loopAt = loopEndingAt(layout);
  const policy = opts.policy;
  const canExit = layout.loops > 1 && policy.name !== 'never';
  const caches = seqs.map(() => new ServingKVCache(model, T));
  try {
    for (let t = 0; t + 1 < T; t++) {
      noGrad(() => tidy(() => {
        let rows = Array.from({ length: B }, (_, b) => b);
        const perLoop: Float32Array[][] = rows.map(() => []);
        let h: Tensor = model.embedTokens(rows.map((b) => ids[b * T + t]), B, 1, new Int32Array(B).fill(t));
        for (let l = 0; l < L && rows.length > 0; l++) {
          const n = rows.length;
          const ctx: ForwardContext = { depth: l, positions: new Int32Array(n).fill(t), batch: n, seq: 1 };
          h = model.blocks[model.schedule[l]].forward(h, ctx, rows.map((b) => caches[b].layers[l]));
          const loop = loopAt[l];
          const last = l === L - 1;
          if (loop < 0 || (!last && !canExit && !policy.hindsight)) continue;
          const logits = exitLogits(model, h, loop, { adapters: opts.adapters }).dataSync();
          const flags = !last && canExit && !policy.hindsight && policy.exitFromHidden
            ? policy.exitFromHidden(model.norm.forward(reshape(h, [n, D])), loop, layout.loops)
            : null;
          const keep: number[] = [];
          const exited: ExitedToken[] = [];
          rows.forEach((b, i) => {
            const row = logits.subarray(i * V, (i + 1) * V);
            let done = last;
            let exitLoop = loop;
            let scored = row;
            if (policy.hindsight) {
              perLoop[b].push(row);
              if (last) {
                exitLoop = policy.hindsight(perLoop[b]);
                scored = perLoop[b][exitLoop];
              }
            } else if (!last && (flags ? flags[i] : policy.shouldExit(row, loop, layout.loops))) {
              done = true;
              exited.push({ cache: caches[b], exitDepth: l + 1, position: t, row: i });
            }
            if (!done) {
              keep.push(i);
              return;
            }
            const target = ids[b * T + t + 1];
            acc.nll += nllOf(scored, target);
            acc.fullNll += full.nll[b * T + t];
            if (argmaxRow(scored) === full.top[b * T + t]) acc.agree++;
            acc.tokens++;
            // Loops actually run (a hindsight policy runs all; its exitsPerLoop say where it would have stopped).
            acc.loops += loop + 1;
            acc.exits[exitLoop]++;
          });
          const flat = reshape(h, [n, D]);
          if (exited.length > 0) fillExitedKV(model, kvFill, flat, exited);
          if (keep.length === n) continue;
          rows = keep.map((i) => rows[i]);
          if (rows.length > 0) h = reshape(pick(flat, keep), [keep.length, 1, D]);
        }
      }));
    }
  } finally {
    for (const c of caches) c.dispose();
  }
}

/** Rows of x [N, D] in order. */
function pick(x: Tensor, rows: number[]): Tensor {
  return indexSelect(x, 0, rows);
}

/** -log softmax(logits)[target], in float64. */
function nllOf(logits: Float32Array, target: number): number {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > m) m = logits[i];
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i] - m);
  return Math.log(z) + m - logits[target];
}

export interface GenerationAgreement {
  policy: string;
  /** kvFillName of the fill. */
  kvFill: string;
  /** Generated positions compared (the shorter of the two outputs per prompt). */
  tokens: number;
  /** Fraction of positions with the same token. */
  agreement: number;
  /** Fraction of prompts whose whole output is identical. */
  identical: number;
  /** Mean length of the common prefix, as a fraction of the output length. */
  prefixFraction: number;
  meanLoops: number;
  exitsPerLoop: number[];
}

/**
 * Greedy generation with early exit against greedy generation at full depth, both through the
 * depth-wise engine. prompts: token ids; maxNewTokens per prompt.
 */
export function generationAgreement(
  model: CausalLM,
  prompts: readonly (readonly number[])[],
  opts: { policy: ExitPolicy; kvFill?: KvFill; maxNewTokens: number; maxBatch?: number; layout?: LoopLayout | LoopLayoutOptions; adapters?: ExitHeadAdapters },
): GenerationAgreement {
  const kvFill = opts.kvFill ?? 'propagate';
  const reqs = prompts.map((prompt, id) => ({ id, prompt, maxNewTokens: opts.maxNewTokens }));
  const base = { scheduler: 'depthwise' as const, maxBatch: opts.maxBatch ?? 16, layout: opts.layout, adapters: opts.adapters };
  const fullEngine = new ServingEngine(model, base);
  const full = fullEngine.serve(reqs);
  const exitEngine = new ServingEngine(model, { ...base, exitPolicy: opts.policy, kvFill });
  const early = exitEngine.serve(reqs);
  fullEngine.dispose();
  let tokens = 0, same = 0, identical = 0, prefix = 0;
  full.forEach((f, i) => {
    const e = early[i];
    const n = Math.min(f.tokens.length, e.tokens.length);
    let p = 0;
    while (p < n && f.tokens[p] === e.tokens[p]) p++;
    for (let j = 0; j < n; j++) if (f.tokens[j] === e.tokens[j]) same++;
    tokens += n;
    prefix += n > 0 ? p / n : 1;
    if (f.tokens.join() === e.tokens.join()) identical++;
  });
  const st = exitEngine.stats();
  exitEngine.dispose();
  return {
    policy: opts.policy.name,
    kvFill: kvFillName(kvFill),
    tokens,
    agreement: tokens ? same / tokens : 1,
    identical: identical / prompts.length,
    prefixFraction: prefix / prompts.length,
    meanLoops: st.meanLoopsPerToken,
    exitsPerLoop: st.exitsPerLoop,
  };
}

/**
 * Mean negative log-likelihood (nats per token) that `scorer` at full depth gives each result's
 * generated tokens after its request's prompt: how a judge model (the full-depth model itself,
 * or the teacher) rates served text. results[i] answers requests[i].
 */
export function servedTextNll(
  scorer: CausalLM,
  requests: readonly { prompt: readonly number[] }[],
  results: readonly { tokens: readonly number[] }[],
): number {
  if (results.length !== requests.length) throw new RrtError(`servedTextNll: ${results.length} results for ${requests.length} requests`);
  let nll = 0, n = 0;
  results.forEach((r, i) => {
    const prompt = requests[i]!.prompt;
    if (r.tokens.length === 0) return;
    if (prompt.length === 0) throw new RrtError(`servedTextNll: request ${i} has an empty prompt`);
    const ids = [...prompt, ...r.tokens];
    // Position t predicts ids[t + 1]: score the generated ones only.
    const targets = new Int32Array(ids.length).fill(-100);
    for (let t = prompt.length - 1; t + 1 < ids.length; t++) targets[t] = ids[t + 1]!;
    noGrad(() => tidy(() => {
      const losses = crossEntropy(scorer.forward(ids, [1, ids.length]).logits, targets, { reduction: 'none' }).dataSync();
      for (let t = prompt.length - 1; t + 1 < ids.length; t++) nll += losses[t]!;
    }));
    n += r.tokens.length;
  });
  if (n === 0) throw new RrtError('servedTextNll: no generated tokens to score');
  return nll / n;
}
