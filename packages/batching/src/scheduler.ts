// Schedulers: when requests join and leave the resident set, and when a request whose token has
// finished (at an exit or the last loop) may start its next one. The serving engine and the
// simulator both drive these objects, so a new scheduling policy is one more Scheduler.
//
// The words both use are here too: a schedule is a list of calls (TraceStep), each holding the
// items (request, token, loop) that shared it.

import { RrtError } from '@rrt/tensor';

/** The names of the three shipped schedulers. */
export type SchedulerKind = 'static' | 'sequence' | 'depthwise';

export interface Scheduler {
  /** Shown in stats, traces and reports. */
  readonly name: string;
  /**
   * May queued requests take free slots before the next call? resident: requests holding a
   * slot (padding rows included); boundary: no resident token is mid-way through its loops.
   */
  admits(resident: number, boundary: boolean): boolean;
  /**
   * When a request whose token finished starts its next token: 'now' (at depth 0 in the next
   * call) or at the 'boundary', once every resident token has finished (iteration-level).
   */
  readonly nextToken: 'now' | 'boundary';
  /** Finished requests keep their slot and compute as padding rows until the whole batch is done. */
  readonly pads: boolean;
}

/** Vanilla static batching: a batch forms when nothing is resident and runs until all of it is done, padded. */
export const STATIC: Scheduler = { name: 'static', admits: (resident, boundary) => boundary && resident === 0, nextToken: 'boundary', pads: true };

/** Continuous sequence-wise (iteration-level) batching: requests join and leave only between tokens. */
export const SEQUENCE: Scheduler = { name: 'sequence', admits: (_resident, boundary) => boundary, nextToken: 'boundary', pads: false };

/**
 * Continuous depth-wise batching: freed slots are refilled before every call and a finished
 * token's request starts its next token at once, so items at any loop depth share calls.
 */
export const DEPTHWISE: Scheduler = { name: 'depthwise', admits: () => true, nextToken: 'now', pads: false };

export const SCHEDULERS: Readonly<Record<SchedulerKind, Scheduler>> = { static: STATIC, sequence: SEQUENCE, depthwise: DEPTHWISE };

/** The scheduler named by `s`, or `s` itself when it is a Scheduler. */
export function resolveScheduler(s: SchedulerKind | Scheduler, who: string): Scheduler {
  if (typeof s === 'object' && s !== null) {
    if (typeof s.admits !== 'function' || (s.nextToken !== 'now' && s.nextToken !== 'boundary') || typeof s.name !== 'string') {
      throw new RrtError(`${who}: a scheduler needs a name, admits(resident, boundary) and nextToken 'now' or 'boundary'`);
    }
    return s;
  }
  const found = Object.hasOwn(SCHEDULERS, s) ? SCHEDULERS[s as SchedulerKind] : undefined;
  if (!found) throw new RrtError(`${who}: unknown scheduler '${String(s)}'; expected static, sequence, depthwise or a Scheduler object`);
  return found;
}

/** 'decode': one token per item; 'prefill': a prompt's tokens; 'mixed': both (prompt items have token -1). */
export type StepKind = 'decode' | 'prefill' | 'mixed';

/** One item of a call: which request, which of its tokens (-1 for prefill), at which depth. */
export interface TraceItem {
  request: number;
  token: number;
  /** 0-based loop index being computed in this call. */
  depth: number;
  /** KV-cache slot the request occupies (0..maxBatch-1); stable while it is resident. */
  slot: number;
}

/** One batched call. */
export interface TraceStep {
  step: number;
  /** Start time in seconds. */
  time: number;
  duration: number;
  kind: StepKind;
  items: TraceItem[];
}

export interface ScheduleTrace {
  /** The scheduler's name. */
  scheduler: string;
  loops: number;
  maxBatch: number;
  steps: TraceStep[];
  /** Calls in the whole run, traced or not. */
  totalSteps: number;
  truncated: boolean;
}
