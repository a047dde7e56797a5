// Choosing a token from one logits row on the host: greedy, or temperature with top-k.

import { Generator } from '@rrt/tensor';
import { argmaxRow } from './policies.js';

/**
 * A token from logits [V]: argmax when temperature is 0 or absent, else a draw from
 * softmax(logits / temperature) restricted to the topK largest logits (0 or absent = all).
 */
export function sampleToken(logits: Float32Array, temperature: number | undefined, topK: number | undefined, rng: Generator | null): number {
  if (!temperature || !rng) return argmaxRow(logits);
  const V = logits.length;
  let floor = -Infinity;
  if (topK && topK > 0 && topK < V) {
    const sorted = Float32Array.from(logits).sort();
    floor = sorted[V - topK];
  }
  let m = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] > m) m = logits[i];
  let z = 0;
  for (let i = 0; i < V; i++) if (logits[i] >= floor) z += Math.exp((logits[i] - m) / temperature);
  let u = rng.next() * z;
  let last = 0;
  for (let i = 0; i < V; i++) {
    if (logits[i] < floor) continue;
    last = i;
    u -= Math.exp((logits[i] - m) / temperature);
    if (u < 0) return i;
  }
  return last;
}

/** The sampling stream of a request: its seed, else one derived from its id. */
export function requestRng(id: string | number, seed: number | undefined): Generator {
  if (seed !== undefined) return new Generator(seed);
  const s = String(id);
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
  return new Generator(h);
}
