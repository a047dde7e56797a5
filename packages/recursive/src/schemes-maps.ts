// Depth maps of the paper's sharing schemes: for each depth position l < L, the index of the
// shared layer it runs. Shared layers are numbered in order of first use, so a map over K
// shared layers uses exactly 0..K-1.

import { RrtError } from '@rrt/tensor';

/** Maps (numLayers L, loops B) to the shared-layer index of each of the L depth positions. */
export type DepthMapFn = (numLayers: number, loops: number) => number[];

function divisors(n: number): number[] {
  const out: number[] = [];
  for (let d = 1; d <= n; d++) if (n % d === 0) out.push(d);
  return out;
}

function checkArgs(scheme: string, numLayers: number, loops: number): void {
  if (!Number.isSafeInteger(numLayers) || numLayers < 1) {
    throw new RrtError(`${scheme}: numLayers must be a positive integer, got ${numLayers}`);
  }
  if (!Number.isSafeInteger(loops) || loops < 1) {
    throw new RrtError(`${scheme}: loops must be a positive integer, got ${loops}`);
  }
}

/** Shared layers for L layers and B loops: K = L / B; throws naming L, B and the valid B. */
function sharedCount(scheme: string, numLayers: number, loops: number): number {
  checkArgs(scheme, numLayers, loops);
  if (numLayers % loops !== 0) {
    throw new RrtError(
      `${scheme}: ${numLayers} layers cannot be split into ${loops} loops (L = ${numLayers} is not divisible by ${loops}); valid loop counts for L = ${numLayers}: ${divisors(numLayers).join(', ')}. Pick source layers first to get a divisible depth`,
    );
  }
  return numLayers / loops;
}

/** The L - 2 tied middle layers for B loops: K = (L - 2) / B. */
function middleSharedCount(scheme: string, numLayers: number, loops: number): number {
  checkArgs(scheme, numLayers, loops);
  const middle = numLayers - 2;
  if (middle < 1) {
    throw new RrtError(`${scheme}: needs at least 3 layers (first and last stay unique, the rest are tied), got L = ${numLayers}`);
  }
  if (middle % loops !== 0) {
    throw new RrtError(
      `${scheme}: the ${middle} middle layers of L = ${numLayers} cannot be split into ${loops} loops (L - 2 = ${middle} is not divisible by ${loops}); valid loop counts for L = ${numLayers}: ${divisors(middle).join(', ')}`,
    );
  }
  return middle / loops;
}

/** CYCLE (the paper's main scheme): s(l) = l mod K. L=6, B=3: 0 1 0 1 0 1. */
export const CYCLE: DepthMapFn = (numLayers, loops) => {
  const k = sharedCount('CYCLE', numLayers, loops);
  return Array.from({ length: numLayers }, (_, l) => l % k);
};

/** SEQUENCE: s(l) = floor(l / B), each shared layer repeated B times in a row. L=6, B=3: 0 0 0 1 1 1. */
export const SEQUENCE: DepthMapFn = (numLayers, loops) => {
  sharedCount('SEQUENCE', numLayers, loops);
  return Array.from({ length: numLayers }, (_, l) => Math.floor(l / loops));
};

/**
 * MIDDLE_CYCLE: the first and last layers stay unique, the L - 2 middle ones are tied
 * CYCLE-wise over K = (L - 2) / B shared layers. L=6, B=2: 0 | 1 2 1 2 | 3.
 */
export const MIDDLE_CYCLE: DepthMapFn = (numLayers, loops) => {
  const k = middleSharedCount('MIDDLE_CYCLE', numLayers, loops);
  return Array.from({ length: numLayers }, (_, l) => (l === 0 ? 0 : l === numLayers - 1 ? k + 1 : 1 + ((l - 1) % k)));
};

/** MIDDLE_SEQUENCE: as MIDDLE_CYCLE with the middle tied SEQUENCE-wise. L=6, B=2: 0 | 1 1 2 2 | 3. */
export const MIDDLE_SEQUENCE: DepthMapFn = (numLayers, loops) => {
  const k = middleSharedCount('MIDDLE_SEQUENCE', numLayers, loops);
  return Array.from({ length: numLayers }, (_, l) => (l === 0 ? 0 : l === numLayers - 1 ? k + 1 : 1 + Math.floor((l - 1) / loops)));
};

/** The loop counts each built-in map accepts for L layers. */
export function validLoopCounts(numLayers: number, scheme: 'CYCLE' | 'SEQUENCE' | 'MIDDLE_CYCLE' | 'MIDDLE_SEQUENCE'): number[] {
  const n = scheme.startsWith('MIDDLE') ? numLayers - 2 : numLayers;
  return n >= 1 ? divisors(n) : [];
}
