// Text generation with a KV cache: the prompt is prefilled in one forward pass, then one token
// at a time. Greedy at temperature 0, else seeded sampling with top-k / top-p.

import { Generator, RrtError, type Tensor, globalGenerator, narrow, noGrad, tidy } from '@rrt/tensor';
import type { KVCache } from './lm.js';
import type { Tokenizer } from './tokenizers/index.js';

/** What generate() needs of a model: cached forward passes (CausalLM and the recursive LMs). */
export interface GenerativeModel {
  readonly cfg: { readonly vocabSize: number; readonly maxPositions: number };
  newCache(capacity?: number): KVCache;
  forward(ids: ArrayLike<number>, shape: [number, number], opts: { caches?: KVCache[] }): { logits: Tensor };
  train?(flag?: boolean): unknown;
  training?: boolean;
}

export interface GenerateOptions {
  /** Prompt token ids, or text when a tokenizer is given. Must not be empty. */
  prompt: readonly number[] | Int32Array | string;
  /** Tokens to generate at most (default 64). */
  maxNewTokens?: number;
  /** 0 = greedy (argmax); otherwise logits are divided by it before sampling (default 1). */
  temperature?: number;
  /** Sample among the k most likely tokens only (0 = all; default 0). */
  topK?: number;
  /** Sample from the smallest set of tokens whose probability reaches p (1 = all; default 1). */
  topP?: number;
  /** Seed of the sampler (default: drawn from the global generator, so manualSeed() fixes it). */
  seed?: number;
  /** Generation stops after emitting one of these (it is included in the output). */
  stopTokens?: readonly number[];
  /** Called with each new token id as it is produced. */
  onToken?: (id: number) => void;
}

export interface GenerateResult {
  /** The new token ids (not the prompt). */
  tokens: number[];
  /** The new tokens decoded, when a tokenizer was given. */
  text?: string;
  /** 'stop': a stop token was produced; 'length': maxNewTokens reached; 'context': the model's context is full. */
  finishReason: 'stop' | 'length' | 'context';
}

/**
 * Generates up to maxNewTokens tokens after the prompt for one sequence. Runs under noGrad with
 * the model in eval mode (restored after); the KV cache is freed before returning.
 */
export function generate(model: GenerativeModel, tokenizer: Tokenizer | null, opts: GenerateOptions): GenerateResult {
  const prompt = typeof opts.prompt === 'string' ? encodePrompt(tokenizer, opts.prompt) : Array.from(opts.prompt);
  if (prompt.length === 0) throw new RrtError('generate: the prompt is empty; give at least one token');
  const maxNew = opts.maxNewTokens ?? 64;
  if (!Number.isInteger(maxNew) || maxNew < 0) throw new RrtError(`generate: maxNewTokens must be a non-negative integer, got ${maxNew}`);
  const temperature = opts.temperature ?? 1;
  if (!(temperature >= 0)) throw new RrtError(`generate: temperature must be >= 0, got ${temperature}`);
  const topP = opts.topP ?? 1;
  if (!(topP > 0 && topP <= 1)) throw new RrtError(`generate: topP must be in (0, 1], got ${topP}`);
  const topK = opts.topK ?? 0;
  if (!Number.isInteger(topK) || topK < 0) throw new RrtError(`generate: topK must be a non-negative integer, got ${topK}`);
  const ctx = model.cfg.maxPositions;
  if (prompt.length > ctx) throw new RrtError(`generate: the prompt has ${prompt.length} tokens, the model's context is ${ctx}`);
  const rng = new Generator(opts.seed ?? globalGenerator().nextU32());
  const stops = new Set(opts.stopTokens ?? []);
  const wasTraining = model.training;
  model.train?.(false);
  const cache = model.newCache(Math.min(ctx, prompt.length + maxNew));
  const tokens: number[] = [];
  let finishReason: GenerateResult['finishReason'] = 'length';
  try {
    noGrad(() => {
      let next = prompt;
      for (let i = 0; i < maxNew; i++) {
        if (cache.position + next.length > ctx) {
          finishReason = 'context';
          break;
        }
        const row = tidy(() => {
          const { logits } = model.forward(next, [1, next.length], { caches: [cache] });
          return narrow(logits, 1, next.length - 1, 1).dataSync();
        });
        const id = temperature === 0 ? argmaxOf(row) : sample(row, temperature, topK, topP, rng);
        tokens.push(id);
        opts.onToken?.(id);
        if (stops.has(id)) {
          finishReason = 'stop';
          break;
        }
        next = [id];
      }
    });
  } finally {
    cache.dispose();
    if (wasTraining !== undefined) model.train?.(wasTraining);
  }
  const result: GenerateResult = { tokens, finishReason };
  if (tokenizer) result.text = tokenizer.decode(tokens);
  return result;
}

function encodePrompt(tokenizer: Tokenizer | null, text: string): number[] {
  if (!tokenizer) throw new RrtError('generate: a text prompt needs a tokenizer; pass token ids or a tokenizer');
  return tokenizer.encode(text);
}

/** Index of the largest value (the first on ties). */
export function argmaxOf(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/**
 * Draws a token from logits [V] at a temperature, restricted to the topK most likely
 * (0 = no limit) and then to the smallest prefix whose probability reaches topP.
 */
export function sample(logits: ArrayLike<number>, temperature: number, topK: number, topP: number, rng: Generator): number {
  const V = logits.length;
  let order = Array.from({ length: V }, (_, i) => i);
  // Sorting is only needed when a filter applies.
  const filtered = (topK > 0 && topK < V) || topP < 1;
  if (filtered) {
    order.sort((a, b) => logits[b] - logits[a] || a - b);
    if (topK > 0 && topK < V) order = order.slice(0, topK);
  }
  let max = -Infinity;
  for (const i of order) if (logits[i] > max) max = logits[i];
  const probs = new Float64Array(order.length);
  let total = 0;
  for (let j = 0; j < order.length; j++) {
    probs[j] = Math.exp((logits[order[j]] - max) / temperature);
    total += probs[j];
  }
  let n = order.length;
  if (topP < 1) {
    let acc = 0;
    for (let j = 0; j < order.length; j++) {
      acc += probs[j] / total;
      if (acc >= topP) {
        n = j + 1;
        break;
      }
    }
    total = 0;
    for (let j = 0; j < n; j++) total += probs[j];
  }
  let u = rng.next() * total;
  for (let j = 0; j < n; j++) {
    u -= probs[j];
    if (u < 0) return order[j];
  }
  return order[n - 1];
}
