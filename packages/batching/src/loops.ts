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
 * The loop layout of a model. In order: explicit `ends`; explicit `loops` (equal loops); the
 * loops of the model's depth map (a RecursiveLM's `depthMap`, else its block `schedule`), where
 * loop b ends once every repeated block has run b + 1 times (loopEndsOfDepthMap: CYCLE 0 1 2 0 1 2
 * gives [3, 6], SEQUENCE 0 0 1 1 2 2 gives [5, 6], MIDDLE_CYCLE 0 1 2 1 2 3 gives [3, 6]); else one
 * loop (a plain model has only its final exit unless told how to group its layers).
 */
export function loopLayout(model: CausalLM, opts: LoopLayoutOptions | LoopLayout = {}): LoopLayout {
  const depth = model.depth;
  if (opts.ends !== undefined) return checkedLayout(depth, [...opts.ends]);
  if (opts.loops !== undefined) return evenLayout(depth, opts.loops);
  const own = (model as unknown as { loops?: unknown }).loops;
  const depthMap = (model as unknown as { depthMap?: readonly number[] }).depthMap ?? model.schedule;
  const loops = typeof own === 'number' ? own : undefined;
  const ends = depthMap.length === depth ? loopEndsOfDepthMap(depthMap, loops) : null;
  if (ends) return checkedLayout(depth, ends);
  return loops !== undefined && Number.isInteger(loops) && loops >= 1 && depth % loops === 0 ? evenLayout(depth, loops) : checkedLayout(depth, [depth]);
}

/**
 * Where the loops of a depth map end (exclusive ends, the last = the depth), or null when the
 * map does not loop. The repeated blocks are those run more than once; each must run the same
 * number of times B (`loops` when given), and loop b < B - 1 ends right after the depth position
 * where the last of them completes its (b + 1)-th run. Unique layers before the loop (MIDDLE_*
 * schemes) belong to loop 0, unique layers after it to the last loop, whose exit is the model's
 * output.
 */
export function loopEndsOfDepthMap(depthMap: readonly number[], loops?: number): number[] | null {
  const runs = new Map<number, number[]>();
  depthMap.forEach((block, d) => {
    const at = runs.get(block);
    if (at) at.push(d);
    else runs.set(block, [d]);
  });
  const repeated = [...runs.values()].filter((at) => at.length > 1);
  if (repeated.length === 0) return null;
  const b = repeated[0]!.length;
  if (repeated.some((at) => at.length !== b) || (loops !== undefined && loops !== b)) return null;
  const ends = Array.from({ length: b - 1 }, (_, i) => Math.max(...repeated.map((at) => at[i]!)) + 1);
  return [...ends, depthMap.length];
}

function evenLayout(depth: number, loops: number): LoopLayout {
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
