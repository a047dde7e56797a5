import { RrtError } from '@rrt/tensor';
import type { StepKind } from '../scheduler.js';

/**
 * Time of one batched call of the looped block (or of the whole model when it is not looped).
 * batchSize: the number of token positions in the call (decode: items in the batch;
 * prefill: the summed prefix tokens of the requests being prefilled). Returns seconds, > 0.
 */
export interface CostModel {
  readonly name: string;
  timePerStep(batchSize: number, kind: StepKind): number;
}

/** Two measured points of a model: per-token time at batch 1 and at its largest batch. */
export interface MeasuredTimes {
  /** Seconds per token at batch 1 (= the time of one call at batch 1). */
  perTokenAtBatch1: number;
  /** Seconds per token at the largest batch (call time divided by the batch). */
  perTokenAtMaxBatch: number;
  /** The largest batch that fits (KV-cache memory bound). */
  maxBatch: number;
}

function checkMeasured(m: MeasuredTimes, where: string): void {
  if (!(m.perTokenAtBatch1 > 0) || !(m.perTokenAtMaxBatch > 0) || !Number.isFinite(m.perTokenAtBatch1) || !Number.isFinite(m.perTokenAtMaxBatch)) {
    throw new RrtError(`${where}: per-token times must be finite and > 0, got ${m.perTokenAtBatch1} and ${m.perTokenAtMaxBatch}`);
  }
  if (!Number.isInteger(m.maxBatch) || m.maxBatch < 2) {
    throw new RrtError(`${where}: maxBatch must be an integer >= 2 to interpolate, got ${m.maxBatch}`);
  }
}

function checkBatch(batchSize: number, where: string): void {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RrtError(`${where}: batchSize must be a positive integer, got ${batchSize}`);
  }
}

/**
 * Step time linear in the batch size through the two measured points (the default model):
 *
 *     t(1) = perTokenAtBatch1,  t(B) = perTokenAtMaxBatch * B   (B = maxBatch)
 *     t(b) = t(1) + (t(B) - t(1)) * (b - 1) / (B - 1)
 *
 * Decoding is memory-bound, so a call costs a fixed weight read plus a small per-token
 * term; this is that model. Prefill uses the same line extrapolated to the prefix token
 * count (for Gemma 2B this gives ~24 ms for 512 tokens, the right order for an A100).
 */
export function linearStepCost(m: MeasuredTimes): CostModel {
  checkMeasured(m, 'linearStepCost');
  const t1 = m.perTokenAtBatch1;
  const slope = (m.perTokenAtMaxBatch * m.maxBatch - t1) / (m.maxBatch - 1);
  return {
    name: 'linear-step',
    timePerStep(batchSize: number): number {
      checkBatch(batchSize, 'linearStepCost');
      // A negative slope (max-batch call faster than batch 1) would make big prefills free.
      return Math.max(t1 + slope * (batchSize - 1), m.perTokenAtMaxBatch);
    },
  };
}

/**
 * The other reading of "interpolate the per-token time": per-token time linear in b,
 *
 *     p(b) = p(1) + (p(B) - p(1)) * (b - 1) / (B - 1),  t(b) = b * p(b),
 *
 * with p held at p(B) beyond B (prefill). Its step time peaks mid-range (for Gemma 2B
 * t(56) is ~0.64 s against ~0.023 s at b = 111), which is not physical; it is kept only
 * as a sensitivity check, because it punishes partly filled batches very hard.
 */
export function linearPerTokenCost(m: MeasuredTimes): CostModel {
  checkMeasured(m, 'linearPerTokenCost');
  const p1 = m.perTokenAtBatch1;
  const pB = m.perTokenAtMaxBatch;
  return {
    name: 'linear-per-token',
    timePerStep(batchSize: number): number {
      checkBatch(batchSize, 'linearPerTokenCost');
      if (batchSize >= m.maxBatch) return batchSize * pB;
      return batchSize * (p1 + ((pB - p1) * (batchSize - 1)) / (m.maxBatch - 1));
    },
  };
}

/** Every call costs the same (decode and prefill may differ); for hand-checked cases. */
export function constantCost(decodeSeconds: number, prefillSeconds = decodeSeconds): CostModel {
  if (!(decodeSeconds > 0) || !(prefillSeconds > 0) || !Number.isFinite(decodeSeconds) || !Number.isFinite(prefillSeconds)) {
    throw new RrtError(`constantCost: times must be finite and > 0, got ${decodeSeconds} and ${prefillSeconds}`);
  }
  return {
    name: 'constant',
    timePerStep(batchSize: number, kind: StepKind): number {
      checkBatch(batchSize, 'constantCost');
      return kind === 'prefill' ? prefillSeconds : decodeSeconds;
    },
  };
}

/** Every call of `base` times `factor` (a looped model's per-token times read as whole tokens: factor 1 / loops). */
export function scaledCost(base: CostModel, factor: number): CostModel {
  if (!(factor > 0) || !Number.isFinite(factor)) throw new RrtError(`scaledCost: factor must be finite and > 0, got ${factor}`);
  return { name: `${base.name} x ${+factor.toFixed(4)}`, timePerStep: (b, kind) => base.timePerStep(b, kind) * factor };
}
