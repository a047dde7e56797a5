// One request at a time through the model's own forward pass with its own KV cache: the oracle
// the batched schedulers must match exactly when early exit is off.

import { narrow, noGrad, tidy } from '@rrt/tensor';
import type { CausalLM } from '@rrt/layers';
import type { GenerationRequest } from './engine/index.js';
import { requestRng, sampleToken } from './sampling.js';

/**
 * Generates for one request with full depth and no batching: prefill the prompt, then one
 * token per forward call (CausalLM.forward with a KVCache). Same sampling and stop rules as
 * ServingEngine. Returns the generated token ids. Throws on a malformed request.
 */
export function referenceGenerate(model: CausalLM, req: GenerationRequest): number[] {
  const P = req.prompt.length;
  const cache = model.newCache(Math.min(P + req.maxNewTokens, model.cfg.maxPositions));
  const rng = req.temperature ? requestRng(req.id, req.seed) : null;
  const stop = new Set(req.stop ?? []);
  const out: number[] = [];
  try {
    let logits = noGrad(() => tidy(() => {
      const l = model.forward(req.prompt, [1, P], { caches: [cache] }).logits;
      return narrow(l, 1, P - 1, 1).dataSync();
    }));
    for (;;) {
      const token = sampleToken(logits, req.temperature, req.topK, rng);
      out.push(token);
      if (stop.has(token) || out.length >= req.maxNewTokens || P + out.length > model.cfg.maxPositions) return out;
      logits = noGrad(() => tidy(() => model.forward([token], [1, 1], { caches: [cache] }).logits.dataSync()));
    }
  } finally {
    cache.dispose();
  }
}
