// One batched call of one block: the rows' inputs, the K/V owed by exited tokens folded in,
// and the logits read at loop ends.

import { RrtError, type Tensor, concat, indexAdd, indexSelect, narrow, reshape } from '@rrt/tensor';
import type { CacheWrites, CausalLM, ForwardContext, LayerKVCache } from '@rrt/layers';
import type { ExitHeadAdapters } from '../exits.js';
import { type HiddenRef, type Plan, type Residents, type Seq, tokensOf } from './residents.js';

/** What a call gave: out [S, 1, D] (one row per token) and where each item's rows start. */
export interface BlockOutput {
  out: Tensor;
  /** starts[i]: item i's first row of out; starts[n] = S. */
  starts: Int32Array;
  /** K/V entries written for exited tokens (folded fills). */
  written: number;
}

/**
 * Runs the plan's block on its items, one row per token: [S, 1, D]. Prompts are packed
 * (ForwardContext.segments), each continuing its own cache, and so are the decode items they
 * share a call with (one-token segments). A call with decode items also writes the K/V that
 * exited tokens owe at depths that run this block (when `fold`).
 */
export function runBlock(model: CausalLM, plan: Plan, residents: Residents, fold: boolean): BlockOutput {
  const { items, kind } = plan;
  const n = items.length;
  const starts = new Int32Array(n + 1);
  for (let i = 0; i < n; i++) starts[i + 1] = starts[i] + tokensOf(items[i]);
  const S = starts[n];
  const depths = new Int32Array(S);
  const positions = new Int32Array(S);
  for (let i = 0; i < n; i++) {
    const s = items[i];
    const prompt = s.state === 'prefill';
    for (let r = starts[i]; r < starts[i + 1]; r++) {
      depths[r] = s.depth;
      positions[r] = prompt ? r - starts[i] : s.position;
    }
  }
  const x = gatherInput(model, items, starts, positions);
  const ctx: ForwardContext = { depth: depths, positions, batch: S, seq: 1, ...(kind !== 'decode' ? { segments: starts.slice(1).map((e, i) => e - starts[i]) } : {}) };
  const caches = items.map((s) => s.cache.layers[s.depth]);
  const owed = fold && kind !== 'prefill' ? takeOwedFills(model, residents, plan.block) : null;
  const out = model.blocks[plan.block].forward(x, ctx, caches, owed?.writes);
  if (!owed) return { out, starts, written: 0 };
  for (const h of owed.refs) h.src.release();
  return { out, starts, written: owed.refs.length };
}

/**
 * The fills every resident request owes at depths of `block`, as cache writes (oldest first, so
 * each cache receives its positions in order); they leave the requests' lists.
 */
function takeOwedFills(model: CausalLM, residents: Residents, block: number): { writes: CacheWrites; refs: HiddenRef[] } | null {
  const refs: HiddenRef[] = [];
  const depth: number[] = [];
  const positions: number[] = [];
  const caches: LayerKVCache[] = [];
  for (const s of residents) {
    if (s.pendingFills.length === 0) continue;
    for (const p of s.pendingFills) {
      for (let k = p.depths.length - 1; k >= 0; k--) {
        const l = p.depths[k];
        if (model.schedule[l] !== block) continue;
        refs.push(p.inputs[k]);
        depth.push(l);
        positions.push(p.position);
        caches.push(s.cache.layers[l]);
        p.depths.splice(k, 1);
        p.inputs.splice(k, 1);
      }
    }
    s.pendingFills = s.pendingFills.filter((p) => p.depths.length > 0);
  }
  if (refs.length === 0) return null;
  const x = gatherRows(refs, model.cfg.hiddenSize);
  return { writes: { x, depth: Int32Array.from(depth), positions: Int32Array.from(positions), caches }, refs };
}

/** Rows of kept tensors as one [F, D] tensor (runs of consecutive rows of a source are sliced once). */
export function gatherRows(refs: readonly HiddenRef[], D: number): Tensor {
  const parts: Tensor[] = [];
  let i = 0;
  while (i < refs.length) {
    const { src, row } = refs[i];
    let len = 1;
    while (i + len < refs.length && refs[i + len].src === src && refs[i + len].row === row + len) len++;
    const t = src.t;
    parts.push(reshape(len === t.shape[0] ? t : narrow(t, 0, row, len), [len, D]));
    i += len;
  }
  return parts.length === 1 ? parts[0] : concat(parts, 0);
}

/** The call's input [S, 1, D]: embeddings for items at depth 0, else their kept hidden states. */
function gatherInput(model: CausalLM, items: Seq[], starts: Int32Array, positions: Int32Array): Tensor {
  const n = items.length;
  const S = starts[n];
  const D = model.cfg.hiddenSize;
  let freshRows = 0;
  for (let i = 0; i < n; i++) if (items[i].depth === 0) freshRows += starts[i + 1] - starts[i];
  let embedded: Tensor | null = null;
  if (freshRows > 0) {
    const ids = new Int32Array(freshRows);
    const pos = new Int32Array(freshRows);
    let j = 0;
    for (let i = 0; i < n; i++) {
      const s = items[i];
      if (s.depth !== 0) continue;
      for (let r = starts[i]; r < starts[i + 1]; r++, j++) {
        ids[j] = s.state === 'prefill' ? s.req.prompt[r - starts[i]] : s.input;
        pos[j] = positions[r];
      }
    }
    embedded = model.embedTokens(ids, freshRows, 1, pos);
    if (freshRows === S) return embedded;
  }
  // Consecutive rows of one source become one slice; a call that continues exactly the
  // previous call's rows reuses its output as is.
  const parts: Tensor[] = [];
  let i = 0, e = 0;
  while (i < n) {
    if (items[i].depth === 0) {
      let j = i + 1;
      while (j < n && items[j].depth === 0) j++;
      const len = starts[j] - starts[i];
      parts.push(len === embedded!.shape[0] ? embedded! : narrow(embedded!, 0, e, len));
      e += len;
      i = j;
      continue;
    }
    const ref = items[i].hidden!;
    let j = i + 1;
    while (j < n && items[j].hidden?.src === ref.src && items[j].hidden!.row === ref.row + (starts[j] - starts[i])) j++;
    const len = starts[j] - starts[i];
    parts.push(ref.row === 0 && len === ref.src.t.shape[0] ? ref.src.t : narrow(ref.src.t, 0, ref.row, len));
    i = j;
  }
  const x = parts.length === 1 ? parts[0] : concat(parts, 0);
  if (x.shape[0] !== S || x.shape[1] !== 1 || x.shape[2] !== D) throw new RrtError(`ServingEngine: internal error, input [${x.shape}] for ${S} token rows`);
  return x;
}

/** An item (row: its index in the call) whose logits are read at a loop end; exit: a hidden-state policy already chose to stop it. */
export interface HeadRow {
  row: number;
  loop: number;
  exit?: boolean;
}

/** The last token's hidden state of each item: out [S, 1, D] -> [n, D]. */
export function lastTokens(model: CausalLM, { out, starts }: BlockOutput): Tensor {
  const n = starts.length - 1;
  const flat = reshape(out, [out.shape[0], model.cfg.hiddenSize]);
  return n === out.shape[0] ? flat : concatRows(flat, Array.from({ length: n }, (_, i) => starts[i + 1] - 1));
}

/**
 * Logits of the requested items from their last tokens' hidden states `last` [n, D], host rows
 * [V]. One head call for all rows; with adapters, rows of adapted exits then add their exit's
 * low-rank delta.
 */
export function readLogits(model: CausalLM, adapters: ExitHeadAdapters | undefined, last: Tensor, heads: readonly HeadRow[]): Float32Array[] {
  const V = model.cfg.vocabSize;
  const normed = model.norm.forward(concatRows(last, heads.map((h) => h.row)));
  let logits = model.headLogits(normed);
  if (adapters) {
    const byLoop = new Map<number, number[]>();
    heads.forEach((h, j) => {
      if (h.loop >= adapters.loops) throw new RrtError(`ServingEngine: loop ${h.loop} is out of range for adapters of ${adapters.loops} exits`);
      if (h.loop >= adapters.adapted) return;
      let g = byLoop.get(h.loop);
      if (!g) byLoop.set(h.loop, (g = []));
      g.push(j);
    });
    for (const [loop, js] of byLoop) logits = indexAdd(logits, js, adapters.delta(concatRows(normed, js), loop));
  }
  const host = logits.dataSync();
  return heads.map((_, j) => host.subarray(j * V, (j + 1) * V));
}

/** Rows of x [N, ...] in the given order, as one tensor: a slice when they are consecutive, else one gather. */
export function concatRows(x: Tensor, rows: readonly number[]): Tensor {
  let run = true;
  for (let i = 1; i < rows.length && run; i++) run = rows[i] === rows[0] + i;
  if (run) return rows.length === x.shape[0] ? x : narrow(x, 0, rows[0], rows.length);
  return indexSelect(x, 0, rows);
}
