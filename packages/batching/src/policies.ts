// Exit policies: after each loop but the last, decide from that exit's logits whether the token
// stops there. A policy is a small object; users add their own by implementing ExitPolicy.

import { RrtError } from '@rrt/tensor';
import type { ExitPolicy } from './exit-policy.js';
import { type ExitRouter, routerExit } from './router.js';

export type { ExitPolicy } from './exit-policy.js';

/** Index of the largest entry (the first on ties). logits: [V]. */
export function argmaxRow(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** Largest softmax probability of a logits row [V]. */
export function maxProbability(logits: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > m) m = logits[i];
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i] - m);
  return 1 / z;
}

/** Entropy in nats of softmax(logits), logits: [V]. */
export function entropy(logits: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > m) m = logits[i];
  let z = 0, zl = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = Math.exp(logits[i] - m);
    z += e;
    zl += e * (logits[i] - m);
  }
  // H = log z - E[l - m]
  return Math.log(z) - zl / z;
}

/** Exit when the largest softmax probability reaches `threshold` (in (0, 1]). */
export function maxProbExit(threshold: number): ExitPolicy {
  if (!(threshold > 0 && threshold <= 1)) throw new RrtError(`maxProbExit: threshold must be in (0, 1], got ${threshold}`);
  return { name: `max-prob:${threshold}`, shouldExit: (logits) => maxProbability(logits) >= threshold };
}

/** Exit when the entropy of the prediction (nats) is at most `threshold` (>= 0). */
export function entropyExit(threshold: number): ExitPolicy {
  if (!(threshold >= 0) || !Number.isFinite(threshold)) throw new RrtError(`entropyExit: threshold must be a finite number >= 0 nats, got ${threshold}`);
  return { name: `entropy:${threshold}`, shouldExit: (logits) => entropy(logits) <= threshold };
}

/**
 * Exit when the top logit leads the runner-up by at least `threshold` (a logit gap, >= 0). The
 * gap between the two best candidates says more about whether a deeper loop would change the
 * argmax than the top probability does, which a flat tail of many small logits dilutes.
 */
export function marginExit(threshold: number): ExitPolicy {
  if (!(threshold >= 0) || !Number.isFinite(threshold)) throw new RrtError(`marginExit: threshold must be a finite logit gap >= 0, got ${threshold}`);
  return { name: `margin:${threshold}`, shouldExit: (logits) => topMargin(logits) >= threshold };
}

/** The largest logit minus the second largest, logits: [V] (0 for a single logit). */
export function topMargin(logits: Float32Array): number {
  let first = -Infinity, second = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) {
      second = v;
    }
  }
  return logits.length < 2 ? 0 : first - second;
}

/** Every token runs exactly `loopsToRun` loops (1..loops; more than the model has means all). */
export function fixedDepthExit(loopsToRun: number): ExitPolicy {
  if (!Number.isInteger(loopsToRun) || loopsToRun < 1) throw new RrtError(`fixedDepthExit: loopsToRun must be an integer >= 1, got ${loopsToRun}`);
  return { name: `fixed:${loopsToRun}`, shouldExit: (_logits, loop) => loop + 1 >= loopsToRun };
}

/** No early exit: every token runs all loops. */
export function neverExit(): ExitPolicy {
  return { name: 'never', shouldExit: () => false };
}

/**
 * For analysis: the first loop whose argmax equals the final loop's argmax. Needs every loop's
 * logits, so the token runs all loops and the engine reports the depth it would have exited at.
 */
export function oracleExit(): ExitPolicy {
  return {
    name: 'oracle',
    shouldExit: () => false,
    hindsight(perLoop) {
      const last = argmaxRow(perLoop[perLoop.length - 1]);
      for (let b = 0; b < perLoop.length - 1; b++) if (argmaxRow(perLoop[b]) === last) return b;
      return perLoop.length - 1;
    },
  };
}

/**
 * A policy from a short spec (for command lines): 'never', 'oracle', 'max-prob:0.9',
 * 'entropy:0.5', 'margin:2', 'fixed:1'; 'router:0.5' needs the router it thresholds.
 */
export function parseExitPolicy(spec: string, router?: ExitRouter): ExitPolicy {
  const [kind, arg] = spec.split(':', 2);
  const num = (): number => {
    const v = Number(arg);
    if (arg === undefined || arg === '' || !Number.isFinite(v)) throw new RrtError(`exit policy '${spec}': expected a number after '${kind}:'`);
    return v;
  };
  switch (kind) {
    case 'never': return neverExit();
    case 'oracle': return oracleExit();
    case 'max-prob': return maxProbExit(num());
    case 'entropy': return entropyExit(num());
    case 'margin': return marginExit(num());
    case 'fixed': return fixedDepthExit(num());
    case 'router':
      if (!router) throw new RrtError(`exit policy '${spec}' needs a trained exit router (trainExitRouter), and none was given`);
      return routerExit(router, num());
    default: throw new RrtError(`unknown exit policy '${spec}'; expected never, oracle, max-prob:P, entropy:H, margin:G, router:P or fixed:N`);
  }
}
