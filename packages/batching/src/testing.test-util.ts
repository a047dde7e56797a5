// Helpers for this package's tests (not part of the public API).
import { Generator, backendByName, reshape, type Backend, type Tensor } from '@rrt/tensor';
import { CausalLM, defineConfig } from '@rrt/layers';
import type { GenerationRequest } from './engine/index.js';
import type { ServingKVCache } from './kv-fill.js';

/** The float64-accumulating oracle: batched and single-row calls give bit-identical rows. */
export function exactBackend(): Backend {
  return backendByName('ref');
}

/** A tied llama-style model with 2 blocks run 2 loops (schedule 0 1 0 1), random weights. */
export function tinyLooped(opts: { seed?: number; maxPositions?: number; backend?: Backend; schedule?: number[]; blocks?: number } = {}): CausalLM {
  const cfg = defineConfig('llama', {
    vocabSize: 48, hiddenSize: 32, numLayers: 4, numHeads: 4, numKvHeads: 2, intermediateSize: 64,
    maxPositions: opts.maxPositions ?? 64, tieWordEmbeddings: true,
  });
  // std 0.3: logits differ clearly, so greedy decoding is not a chain of near-ties.
  const model = new CausalLM(cfg, { backend: opts.backend ?? exactBackend(), rng: new Generator(opts.seed ?? 5), std: 0.3, blocks: opts.blocks ?? 2, schedule: opts.schedule ?? [0, 1, 0, 1] });
  model.eval();
  return model;
}

/** n requests with prompts of 1..maxPrompt tokens and 1..maxNew new tokens, seeded. */
export function mixedRequests(n: number, vocab: number, opts: { seed?: number; maxPrompt?: number; maxNew?: number } = {}): GenerationRequest[] {
  const rng = new Generator(opts.seed ?? 9);
  return Array.from({ length: n }, (_, id) => ({
    id,
    prompt: Array.from({ length: rng.int(1, (opts.maxPrompt ?? 12) + 1) }, () => rng.int(0, vocab)),
    maxNewTokens: rng.int(1, (opts.maxNew ?? 12) + 1),
  }));
}

/** Runs one token through depths 0..exitDepth-1 of `model`, appending to `cache`; returns its hidden state [1, D]. */
export function runTo(model: CausalLM, cache: ServingKVCache, token: number, position: number, exitDepth: number): Tensor {
  let h = model.embedTokens([token], 1, 1, Int32Array.of(position));
  for (let l = 0; l < exitDepth; l++) {
    h = model.blocks[model.schedule[l]].forward(h, { depth: l, positions: Int32Array.of(position), batch: 1, seq: 1 }, [cache.layers[l]]);
  }
  return reshape(h, [1, model.cfg.hiddenSize]);
}
