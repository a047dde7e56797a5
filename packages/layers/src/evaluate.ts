// Held-out evaluation of a language model: mean next-token loss, perplexity and bits per byte.

import { type Tensor, crossEntropy, noGrad, tidy } from '@rrt/tensor';
import type { Batch } from './data.js';
import { IGNORE_INDEX } from './losses.js';

/** Anything that maps token ids [B, T] to logits [B, T, V] (CausalLM, recursive and relaxed LMs). */
export interface LogitsModel {
  forward(ids: ArrayLike<number>, shape: [number, number]): { logits: Tensor };
  train?(flag?: boolean): unknown;
  training?: boolean;
}

export interface EvalOptions {
  /**
   * UTF-8 bytes of the text whose tokens are scored (the targets), for bits per byte. For data
   * from TokenSequences use scoredBytes(seqs, tokenizer) or TextData.validationScoredBytes:
   * the byte length of the decoded target tokens, so the dropped tail of the packing and the
   * unscored first token are not counted.
   */
  bytes?: number;
  /** Stop after this many batches. */
  maxBatches?: number;
}

export interface EvalResult {
  /** Mean next-token cross-entropy in nats per scored token. */
  loss: number;
  /** exp(loss). */
  perplexity: number;
  /** Scored tokens (targets that are not IGNORE_INDEX). */
  tokens: number;
  /** Summed loss in nats. */
  totalNats: number;
  /** totalNats / ln 2 / bytes, when bytes were given. */
  bitsPerByte?: number;
}

/**
 * Scores batches ({ ids, targets: B*T, shape [B, T] }) under noGrad, one tidy() scope per
 * batch, with the model in eval mode (its mode is restored after).
 */
export function evaluateLM(model: LogitsModel, batches: Iterable<Batch>, opts: EvalOptions = {}): EvalResult {
  const wasTraining = model.training;
  model.train?.(false);
  let totalNats = 0;
  let tokens = 0;
  let n = 0;
  try {
    noGrad(() => {
      for (const batch of batches) {
        if (opts.maxBatches !== undefined && n >= opts.maxBatches) break;
        n++;
        totalNats += tidy(() => {
          const { logits } = model.forward(batch.ids, batch.shape);
          return crossEntropy(logits, batch.targets, { ignoreIndex: IGNORE_INDEX, reduction: 'sum' }).item();
        });
        for (let i = 0; i < batch.targets.length; i++) if (batch.targets[i] !== IGNORE_INDEX) tokens++;
      }
    });
  } finally {
    if (wasTraining !== undefined) model.train?.(wasTraining);
  }
  const loss = tokens > 0 ? totalNats / tokens : NaN;
  const result: EvalResult = { loss, perplexity: Math.exp(loss), tokens, totalNats };
  if (opts.bytes !== undefined) result.bitsPerByte = bitsPerByteOf(totalNats, opts.bytes);
  return result;
}

/** exp(mean next-token loss) over the batches. */
export function perplexity(model: LogitsModel, batches: Iterable<Batch>, opts: Omit<EvalOptions, 'bytes'> = {}): number {
  return evaluateLM(model, batches, opts).perplexity;
}

/** Mean next-token loss (nats per token) over the batches. */
export function meanLoss(model: LogitsModel, batches: Iterable<Batch>, opts: Omit<EvalOptions, 'bytes'> = {}): number {
  return evaluateLM(model, batches, opts).loss;
}

/**
 * Bits per UTF-8 byte: the summed next-token loss in bits divided by the bytes of the scored
 * text (see EvalOptions.bytes). Comparable across tokenizers, unlike perplexity.
 */
export function bitsPerByte(model: LogitsModel, batches: Iterable<Batch>, bytes: number, opts: Omit<EvalOptions, 'bytes'> = {}): number {
  return evaluateLM(model, batches, { ...opts, bytes }).bitsPerByte!;
}

/** totalNats / ln 2 / bytes. */
export function bitsPerByteOf(totalNats: number, bytes: number): number {
  return bytes > 0 ? totalNats / Math.LN2 / bytes : NaN;
}
