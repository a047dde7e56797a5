// Where a LoRA target sits in a block: which Linear, and which of its output rows (q, k and v of
// a fused qkv each own a third of the output axis, laid out as the family stores them).

import { RrtError, ShapeError, type Tensor, add, concat, fmtShape, pad, reshape, transpose } from '@rrt/tensor';
import { type CausalLM, type DecoderBlock, Linear } from '@rrt/layers';
import { DEFAULT_LORA_TARGETS, type LoraTarget } from './params.js';

/**
 * The output rows of a Linear that one LoRA writes:
 * - full: all of them;
 * - slice: rows [start, start + length) (gpt2's c_attn is [q | k | v]);
 * - per-head: part `index` of a [heads, parts, headDim] output axis (gpt_neox's query_key_value
 *   is [heads, 3, headDim]).
 */
export type OutputPart =
  | { readonly kind: 'full' }
  | { readonly kind: 'slice'; readonly start: number; readonly length: number }
  | { readonly kind: 'per-head'; readonly heads: number; readonly parts: number; readonly index: number; readonly headDim: number };

const FULL: OutputPart = { kind: 'full' };

/** One target projection of a block. */
export interface TargetSlot {
  readonly target: LoraTarget;
  /** Block-relative path of the Linear ('attn.q', 'attn.qkv', 'mlp.down'). */
  readonly linearPath: string;
  readonly part: OutputPart;
  /** Input features of the Linear. */
  readonly dIn: number;
  /** Output rows the target owns (all of the Linear's unless fused). */
  readonly dOut: number;
  readonly group: 'attention' | 'mlp';
}

/** Number of output rows a part covers, given the Linear's output size. */
export function partRowsCount(part: OutputPart, outFeatures: number): number {
  switch (part.kind) {
    case 'full': return outFeatures;
    case 'slice': return part.length;
    case 'per-head': return part.heads * part.headDim;
  }
}

/** The Linear's output rows a part covers, in the order of the part's own rows: [partRows]. */
export function partRows(part: OutputPart, outFeatures: number): Int32Array {
  const n = partRowsCount(part, outFeatures);
  const rows = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    if (part.kind === 'full') rows[i] = i;
    else if (part.kind === 'slice') rows[i] = part.start + i;
    else {
      const h = Math.floor(i / part.headDim), j = i % part.headDim;
      rows[i] = (h * part.parts + part.index) * part.headDim + j;
    }
  }
  return rows;
}

/**
 * Places a part's values into the full output axis, zeros elsewhere (differentiable).
 * delta: [N, partRows] -> [N, outFeatures].
 */
export function placePart(delta: Tensor, part: OutputPart, outFeatures: number): Tensor {
  const [n, len] = delta.shape;
  if (len !== partRowsCount(part, outFeatures)) throw new ShapeError(`placePart: ${fmtShape(delta.shape)} does not match a part of ${partRowsCount(part, outFeatures)} rows`);
  switch (part.kind) {
    case 'full': return delta;
    case 'slice': return pad(delta, [[0, 0], [part.start, outFeatures - part.start - part.length]]);
    case 'per-head': {
      const perHead = reshape(delta, [n, part.heads, 1, part.headDim]);
      const placed = pad(perHead, [[0, 0], [0, 0], [part.index, part.parts - part.index - 1], [0, 0]]);
      return reshape(placed, [n, outFeatures]);
    }
  }
}

/** A part's rows of a weight-shaped tensor placed in the full output axis: [partRows, k] -> [outFeatures, k], zeros elsewhere. */
export function placeRows(rows: Tensor, part: OutputPart, outFeatures: number): Tensor {
  return part.kind === 'full' ? rows : transpose(placePart(transpose(rows), part, outFeatures));
}

/**
 * Sums several parts' values into the full output axis: deltas[i] [N, partRows_i] ->
 * [N, outFeatures]. When the parts tile a fused qkv exactly this is one concat, not three pads.
 */
export function placeParts(deltas: readonly Tensor[], parts: readonly OutputPart[], outFeatures: number): Tensor {
  if (deltas.length === 0 || deltas.length !== parts.length) throw new ShapeError(`placeParts: ${deltas.length} deltas for ${parts.length} parts`);
  if (deltas.length > 1 && parts.every((p) => p.kind === 'slice')) {
    const order = parts.map((p, i) => [(p as { start: number }).start, i] as const).sort((a, b) => a[0] - b[0]);
    let next = 0;
    const tiles = order.every(([start, i]) => {
      const ok = start === next;
      next = start + (parts[i] as { length: number }).length;
      return ok;
    });
    if (tiles && next === outFeatures) return concat(order.map(([, i]) => deltas[i]), 1);
  }
  if (deltas.length > 1 && parts.every((p) => p.kind === 'per-head')) {
    const ph = parts as readonly Extract<OutputPart, { kind: 'per-head' }>[];
    const order = ph.map((p, i) => [p.index, i] as const).sort((a, b) => a[0] - b[0]);
    if (order.length === ph[0].parts && order.every(([index], j) => index === j)) {
      const rows = deltas[0].shape[0];
      const pieces = order.map(([, i]) => reshape(deltas[i], [rows, ph[0].heads, 1, ph[0].headDim]));
      return reshape(concat(pieces, 2), [rows, outFeatures]);
    }
  }
  let sum = placePart(deltas[0], parts[0], outFeatures);
  for (let i = 1; i < deltas.length; i++) sum = add(sum, placePart(deltas[i], parts[i], outFeatures));
  return sum;
}

/** Every target a block of this model offers, in the paper's order (no gate without a gated MLP). */
export function availableTargets(model: CausalLM): LoraTarget[] {
  return DEFAULT_LORA_TARGETS.filter((t) => t !== 'gate' || model.cfg.gatedMlp);
}

/**
 * The slots of the requested targets (default: all available) in one block of the model.
 * Throws naming the targets that do not exist or repeat.
 */
export function targetSlots(model: CausalLM, targets?: readonly LoraTarget[]): TargetSlot[] {
  const available = availableTargets(model);
  let chosen: readonly LoraTarget[];
  if (targets === undefined) chosen = available;
  else {
    if (!Array.isArray(targets)) throw new RrtError(`LoRA targets: expected an array of projection names, got ${JSON.stringify(targets)}`);
    const missing = targets.filter((t) => !available.includes(t));
    if (missing.length > 0) {
      throw new RrtError(`LoRA targets: ${missing.map((t) => JSON.stringify(t)).join(', ')} not in a ${model.cfg.family} block; available: ${available.join(', ')}`);
    }
    if (new Set(targets).size !== targets.length) throw new RrtError(`LoRA targets: a projection is listed twice: ${targets.join(', ')}`);
    chosen = targets;
  }
  const block = model.blocks[0];
  const attn = block.attn;
  const hd = attn.headDim, H = attn.numHeads, KV = attn.numKvHeads;
  const out: TargetSlot[] = [];
  for (const target of available) {
    if (!chosen.includes(target)) continue;
    if (target === 'q' || target === 'k' || target === 'v') {
      const index = target === 'q' ? 0 : target === 'k' ? 1 : 2;
      const rowsOut = target === 'q' ? H * hd : KV * hd;
      if (attn.layout === 'separate') {
        out.push({ target, linearPath: `attn.${target}`, part: FULL, dIn: model.cfg.hiddenSize, dOut: rowsOut, group: 'attention' });
      } else if (attn.layout === 'fused') {
        const start = index === 0 ? 0 : index === 1 ? H * hd : (H + KV) * hd;
        out.push({ target, linearPath: 'attn.qkv', part: { kind: 'slice', start, length: rowsOut }, dIn: model.cfg.hiddenSize, dOut: rowsOut, group: 'attention' });
      } else {
        if (KV !== H) throw new RrtError(`LoRA targets: a per-head fused qkv needs as many KV heads as heads, got ${KV} and ${H}`);
        out.push({
          target, linearPath: 'attn.qkv', part: { kind: 'per-head', heads: H, parts: 3, index, headDim: hd }, dIn: model.cfg.hiddenSize, dOut: rowsOut, group: 'attention',
        });
      }
    } else {
      const path = target === 'o' ? 'attn.o' : `mlp.${target}`;
      const lin = linearAt(block, path);
      out.push({ target, linearPath: path, part: FULL, dIn: lin.inFeatures, dOut: lin.outFeatures, group: target === 'o' ? 'attention' : 'mlp' });
    }
  }
  return out;
}

/** The Linear at a block-relative path ('attn.q', 'attn.qkv', 'attn.o', 'mlp.gate', 'mlp.up', 'mlp.down'). */
export function linearAt(block: DecoderBlock, path: string): Linear {
  const [owner, name] = path.split('.');
  const parent = owner === 'attn' ? block.attn : owner === 'mlp' ? block.mlp : null;
  const lin = parent ? (parent as unknown as Record<string, unknown>)[name] : undefined;
  if (!(lin instanceof Linear)) throw new RrtError(`no Linear at block path "${path}"`);
  return lin;
}
