// One batched call of one block: the rows' inputs, the K/V owed by exited tokens folded in,
// and the logits read at loop ends.

import { RrtError, type Tensor, concat, narrow, reshape } from '@rrt/tensor';
import type { CacheWrites, CausalLM, ForwardContext, LayerKVCache } from '@rrt/layers';
import { type ExitHeadAdapters, exitLogits } from '../exits.js';
import type { HiddenRef, Plan, Residents, Seq } from './residents.js';

/**
 * Runs the plan's block on its rows: [n, T, D]. A decode call also writes the K/V that exited
 * tokens owe at depths that run this block (when `fold`); returns how many entries it wrote.
 */
export function runBlock(model: CausalLM, plan: Plan, residents: Residents, fold: boolean): { out: Tensor; written: number } {
  const { items, T, kind } = plan;
  const n = items.length;
  const depths = new Int32Array(n);
  const positions = new Int32Array(n * T);
  for (let i = 0; i < n; i++) {
    const s = items[i];
    depths[i] = s.depth;
    for (let t = 0; t < T; t++) positions[i * T + t] = kind === 'prefill' ? t : s.position;
  }
  const x = gatherInput(model, items, T, positions);
  const ctx: ForwardContext = { depth: depths, positions, batch: n, seq: T };
  const caches = items.map((s) => s.cache.layers[s.depth]);
  const owed = fold && kind === 'decode' ? takeOwedFills(model, residents, plan.block) : null;
  const out = model.blocks[plan.block].forward(x, ctx, caches, owed?.writes);
  if (!owed) return { out, written: 0 };
  for (const h of owed.refs) h.src.release();
  return { out, written: owed.refs.length };
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

/** The rows' inputs [n, T, D]: embeddings for items at depth 0, else their kept hidden states. */
function gatherInput(model: CausalLM, items: Seq[], T: number, positions: Int32Array): Tensor {
  const n = items.length;
  const D = model.cfg.hiddenSize;
  const fresh: number[] = [];
  for (let i = 0; i < n; i++) if (items[i].depth === 0) fresh.push(i);
  let embedded: Tensor | null = null;
  if (fresh.length > 0) {
    const ids = new Int32Array(fresh.length * T);
    const pos = new Int32Array(fresh.length * T);
    fresh.forEach((i, j) => {
      const s = items[i];
      for (let t = 0; t < T; t++) {
        ids[j * T + t] = s.state === 'prefill' ? s.req.prompt[t] : s.input;
        pos[j * T + t] = positions[i * T + t];
      }
    });
    embedded = model.embedTokens(ids, fresh.length, T, pos);
    if (fresh.length === n) return embedded;
  }
  // Consecutive rows of one source become one slice; a call that continues exactly the
  // previous call's rows reuses its output as is.
  const parts: Tensor[] = [];
  let i = 0, e = 0;
  while (i < n) {
    const s = items[i];
    if (s.depth === 0) {
      let len = 1;
      while (i + len < n && items[i + len].depth === 0) len++;
      parts.push(len === embedded!.shape[0] ? embedded! : narrow(embedded!, 0, e, len));
      e += len;
      i += len;
      continue;
    }
    const ref = s.hidden!;
    let len = 1;
    while (i + len < n && items[i + len].hidden?.src === ref.src && items[i + len].hidden!.row === ref.row + len) len++;
    parts.push(len === ref.src.t.shape[0] ? ref.src.t : narrow(ref.src.t, 0, ref.row, len));
    i += len;
  }
  const x = parts.length === 1 ? parts[0] : concat(parts, 0);
  if (x.shape[0] !== n || x.shape[1] !== T || x.shape[2] !== D) throw new RrtError(`ServingEngine: internal error, input [${x.shape}] for ${n} rows of ${T} tokens`);
  return x;
}

/** A row whose logits are read at a loop end; exit: a hidden-state policy already chose to stop it. */
export interface HeadRow {
  row: number;
  loop: number;
  exit?: boolean;
}

/** The last token's hidden state of each row: out [n, T, D] -> [n, D]. */
export function lastTokens(model: CausalLM, out: Tensor, T: number): Tensor {
  const last = T === 1 ? out : narrow(out, 1, T - 1, 1);
  return reshape(last, [out.shape[0], model.cfg.hiddenSize]);
}

/**
 * Logits of the requested rows (the last token of each), host rows [V]. Without adapters every
 * exit uses the same head: one call for all rows; with them, one call per loop.
 */
export function readLogits(model: CausalLM, adapters: ExitHeadAdapters | undefined, out: Tensor, T: number, heads: readonly HeadRow[]): Float32Array[] {
  const V = model.cfg.vocabSize;
  const flat = lastTokens(model, out, T);
  const result = new Array<Float32Array>(heads.length);
  const groups = new Map<number, number[]>();
  heads.forEach((h, j) => {
    const key = adapters ? h.loop : 0;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = []));
    g.push(j);
  });
  for (const [loop, js] of groups) {
    const h = concatRows(flat, js.map((j) => heads[j].row));
    const logits = exitLogits(model, h, loop, { adapters }).dataSync();
    js.forEach((j, k) => (result[j] = logits.subarray(k * V, (k + 1) * V)));
  }
  return result;
}

/** Rows of x [N, ...] in the given order, as one tensor (runs of consecutive rows are sliced once). */
export function concatRows(x: Tensor, rows: readonly number[]): Tensor {
  const parts: Tensor[] = [];
  let i = 0;
  while (i < rows.length) {
    let len = 1;
    while (i + len < rows.length && rows[i + len] === rows[i] + len) len++;
    parts.push(len === x.shape[0] ? x : narrow(x, 0, rows[i], len));
    i += len;
  }
  return parts.length === 1 ? parts[0] : concat(parts, 0);
}
