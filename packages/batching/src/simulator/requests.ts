import { RrtError } from '@rrt/tensor';
import { SimRng, streamSeed } from './rng.js';

/** One generation request: a prefix to prefill, then decodeLength tokens to generate. */
export interface RequestSpec {
  id: number;
  /** Arrival time in seconds. */
  arrival: number;
  prefixLength: number;
  decodeLength: number;
}

/**
 * How requests arrive: all at t = 0 (an offline batch job), a Poisson process with
 * `rate` requests per second starting at t = 0, or explicit times.
 */
export type ArrivalModel =
  | { kind: 'all-at-once' }
  | { kind: 'poisson'; rate: number }
  | { kind: 'times'; times: readonly number[] };

/** A decode length: fixed, or uniform over an inclusive integer range. */
export type LengthModel = number | { min: number; max: number };

export interface RequestStreamOptions {
  count: number;
  prefixLength: number;
  decodeLength: LengthModel;
  arrival?: ArrivalModel;
  /** Seeds the arrival and length streams (separately, so changing one leaves the other). */
  seed?: number;
}

/** Builds `count` requests with ids 0..count-1 in arrival order. */
export function makeRequests(opts: RequestStreamOptions): RequestSpec[] {
  const { count, prefixLength } = opts;
  const arrival = opts.arrival ?? { kind: 'all-at-once' };
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(count) || count < 0) throw new RrtError(`makeRequests: count must be a non-negative integer, got ${count}`);
  if (!Number.isInteger(prefixLength) || prefixLength < 0) {
    throw new RrtError(`makeRequests: prefixLength must be a non-negative integer, got ${prefixLength}`);
  }
  const lengthRng = new SimRng(streamSeed(seed, 1));
  const arrivalRng = new SimRng(streamSeed(seed, 2));
  const drawLength = lengthSampler(opts.decodeLength, lengthRng);
  if (arrival.kind === 'poisson' && !(arrival.rate > 0 && Number.isFinite(arrival.rate))) {
    throw new RrtError(`makeRequests: poisson rate must be finite and > 0 requests/s, got ${arrival.rate}`);
  }
  if (arrival.kind === 'times' && arrival.times.length !== count) {
    throw new RrtError(`makeRequests: ${arrival.times.length} arrival times given for ${count} requests`);
  }
  const out: RequestSpec[] = [];
  let clock = 0;
  for (let id = 0; id < count; id++) {
    let at = 0;
    if (arrival.kind === 'poisson') {
      clock += arrivalRng.exponential(arrival.rate);
      at = clock;
    } else if (arrival.kind === 'times') {
      at = arrival.times[id];
    }
    out.push({ id, arrival: at, prefixLength, decodeLength: drawLength() });
  }
  return out;
}

function lengthSampler(model: LengthModel, rng: SimRng): () => number {
  if (typeof model === 'number') {
    if (!Number.isInteger(model) || model < 1) throw new RrtError(`makeRequests: decodeLength must be an integer >= 1, got ${model}`);
    return () => model;
  }
  const { min, max } = model;
  if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1 || max < min) {
    throw new RrtError(`makeRequests: decodeLength range must be integers with 1 <= min <= max, got {min: ${min}, max: ${max}}`);
  }
  return () => rng.int(min, max);
}

/**
 * Exit-depth distribution over a model with `loops` loops: entry b-1 is the probability that
 * a token leaves after loop b (b = 1..loops). Entries are >= 0 and sum to 1.
 */
export type ExitDistribution = readonly number[];

/** Every token runs all loops. */
export function noEarlyExit(loops: number): number[] {
  checkLoops(loops, 'noEarlyExit');
  const d = new Array<number>(loops).fill(0);
  d[loops - 1] = 1;
  return d;
}

/**
 * After each loop but the last, a still-running token exits with probability p
 * (a truncated geometric law): P(exit after b) = (1-p)^(b-1) p for b < loops, the rest at the last.
 */
export function geometricExit(loops: number, p: number): number[] {
  checkLoops(loops, 'geometricExit');
  if (!(p >= 0 && p <= 1)) throw new RrtError(`geometricExit: p must be in [0, 1], got ${p}`);
  const d: number[] = [];
  let survive = 1;
  for (let b = 1; b < loops; b++) {
    d.push(survive * p);
    survive *= 1 - p;
  }
  d.push(survive);
  return d;
}

/** Mean number of loops a token runs under the distribution. */
export function meanExitLoops(dist: ExitDistribution): number {
  return dist.reduce((acc, p, i) => acc + p * (i + 1), 0);
}

/** Throws unless dist is a valid exit distribution for `loops` loops. */
export function checkExitDistribution(dist: ExitDistribution, loops: number): void {
  if (dist.length !== loops) {
    throw new RrtError(`exit distribution has ${dist.length} entries, expected one per loop (${loops})`);
  }
  let sum = 0;
  for (const p of dist) {
    if (!(p >= 0) || !Number.isFinite(p)) throw new RrtError(`exit distribution entries must be finite and >= 0, got [${dist.join(', ')}]`);
    sum += p;
  }
  if (Math.abs(sum - 1) > 1e-9) throw new RrtError(`exit distribution must sum to 1, got ${sum} for [${dist.join(', ')}]`);
}

/** Samples the loop (1..loops) after which a token exits. */
export function exitSampler(dist: ExitDistribution, rng: SimRng): () => number {
  const cdf: number[] = [];
  let acc = 0;
  for (const p of dist) cdf.push((acc += p));
  const loops = dist.length;
  return () => {
    const u = rng.next();
    for (let b = 0; b < loops - 1; b++) if (u < cdf[b]) return b + 1;
    return loops;
  };
}

function checkLoops(loops: number, where: string): void {
  if (!Number.isInteger(loops) || loops < 1) throw new RrtError(`${where}: loops must be an integer >= 1, got ${loops}`);
}
