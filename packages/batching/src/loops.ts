// Where a model's loops end: the depth positions after which an early exit can read a prediction.

import { RrtError } from '@rrt/tensor';
import type { CausalLM } from '@rrt/layers';

/** The loops of a model: `ends[b]` is the depth position where loop b ends (exclusive). */
export interface LoopLayout {
  /** Number of loops, i.e. of exits (the last one is the model's normal output). */
  readonly loops: number;
  /** Depth positions run per token (L). */
  readonly depth: number;
  /** Ascending exclusive ends, one per loop; the last equals `depth`. */
  readonly ends: readonly number[];
}

export interface LoopLayoutOptions {
  /** Split the depth into this many equal loops (must divide it). */
  loops?: number;
  /** Explicit exclusive loop ends (ascending, last = depth): any grouping of a plain model's layers. */
  ends?: readonly number[];
}

/**
 * The loop layout of a model. In order: explicit `ends`, explicit `loops`, the model's own
 * `loops` property (RecursiveLM), depth / numBlocks when the depth schedule repeats its blocks
 * (a looped model: loop b covers depth positions [b*K, (b+1)*K)), else one loop (a plain model
 * has only its final exit unless told how to group its layers).
 */
export function loopLayout(model: CausalLM, opts: LoopLayoutOptions | LoopLayout = {}): LoopLayout {
  const depth = model.depth;
  if (opts.ends !== undefined) return checkedLayout(depth, [...opts.ends]);
  let loops = opts.loops;
  if (loops === undefined) {
    const own = (model as unknown as { loops?: unknown }).loops;
    if (typeof own === 'number' && Number.isInteger(own) && own >= 1 && depth % own === 0) loops = own;
  }
  if (loops === undefined) {
    const k = model.blocks.length;
    loops = k < depth && depth % k === 0 ? depth / k : 1;
  }
  if (!Number.isInteger(loops) || loops < 1 || depth % loops !== 0) {
    throw new RrtError(`loopLayout: ${loops} loops do not split the model's ${depth} depth positions evenly; pass explicit 'ends'`);
  }
  const per = depth / loops;
  return checkedLayout(depth, Array.from({ length: loops }, (_, b) => (b + 1) * per));
}

function checkedLayout(depth: number, ends: number[]): LoopLayout {
  if (ends.length === 0) throw new RrtError('loopLayout: ends must list at least one loop end');
  let prev = 0;
  for (const e of ends) {
    if (!Number.isInteger(e) || e <= prev || e > depth) {
      throw new RrtError(`loopLayout: ends [${ends.join(', ')}] must be ascending integers in (0, ${depth}]`);
    }
    prev = e;
  }
  if (prev !== depth) throw new RrtError(`loopLayout: the last loop end is ${prev}, expected the model depth ${depth}`);
  return Object.freeze({ loops: ends.length, depth, ends: Object.freeze(ends) });
}

/** Per depth position, the loop that ends right after it, or -1 (an Int32Array of length depth). */
export function loopEndingAt(layout: LoopLayout): Int32Array {
  const out = new Int32Array(layout.depth).fill(-1);
  layout.ends.forEach((e, b) => (out[e - 1] = b));
  return out;
}
