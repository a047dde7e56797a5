// What a client gives the serving engine and what it gets back.

import type { ModelConfig } from '@rrt/layers';

/** One generation request. Token ids are plain integers. */
export interface GenerationRequest {
  /** Unique among the requests an engine holds. */
  id: string | number;
  prompt: readonly number[];
  /** Tokens to generate, >= 1. */
  maxNewTokens: number;
  /** 0 or absent: greedy. */
  temperature?: number;
  /** Sample among the topK largest logits (0 or absent: all). */
  topK?: number;
  /** Seeds sampling (default: derived from the id). */
  seed?: number;
  /** Token ids that end generation (the stop token is kept in the output). */
  stop?: readonly number[];
}

/** length: maxNewTokens reached; stop: a stop token; context: the model's context is full. */
export type FinishReason = 'length' | 'stop' | 'context' | 'cancelled' | 'error';

export interface GenerationResult {
  id: string | number;
  tokens: number[];
  finishReason: FinishReason;
  /** Why the request was refused (finishReason 'error'). */
  error?: string;
  /**
   * Per generated token, the 0-based loop after which it exited (loops - 1 = full depth). For
   * a hindsight policy (oracle) the loop it would have exited at; the token ran all loops.
   */
  exitLoops: number[];
  /** Engine clock, ms. firstTokenAt is NaN when no token was generated. */
  submittedAt: number;
  firstTokenAt: number;
  finishedAt: number;
  /** finishedAt - submittedAt. */
  latencyMs: number;
}

/** Why the model cannot serve `req`, or null. */
export function requestProblem(cfg: ModelConfig, req: GenerationRequest): string | null {
  const { vocabSize, maxPositions } = cfg;
  if (!Array.isArray(req.prompt) && !ArrayBuffer.isView(req.prompt)) return 'prompt must be an array of token ids';
  if (req.prompt.length === 0) return 'prompt is empty; give at least one token id';
  if (req.prompt.length > maxPositions) return `prompt has ${req.prompt.length} tokens, longer than the model's context (${maxPositions})`;
  for (let i = 0; i < req.prompt.length; i++) {
    const t = req.prompt[i];
    if (!Number.isInteger(t) || t < 0 || t >= vocabSize) return `prompt token ${JSON.stringify(t)} at position ${i} is not a token id in [0, ${vocabSize})`;
  }
  if (!Number.isInteger(req.maxNewTokens) || req.maxNewTokens < 1) return `maxNewTokens must be an integer >= 1, got ${JSON.stringify(req.maxNewTokens)}`;
  if (req.temperature !== undefined && !(req.temperature >= 0 && Number.isFinite(req.temperature))) return `temperature must be a finite number >= 0, got ${req.temperature}`;
  if (req.topK !== undefined && !(Number.isInteger(req.topK) && req.topK >= 0)) return `topK must be an integer >= 0, got ${req.topK}`;
  if (req.stop !== undefined && !req.stop.every((t) => Number.isInteger(t) && t >= 0 && t < vocabSize)) return `stop must list token ids in [0, ${vocabSize})`;
  return null;
}
