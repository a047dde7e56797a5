// Language-model data: tokenise a text once (cached on disk), pack the ids into fixed-length
// sequences, and serve shuffled batches whose order is a pure function of (seed, epoch), so a
// run resumes exactly from (epoch, cursor).

import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Generator, RrtError } from '@rrt/tensor';
import type { Tokenizer } from './tokenizers/index.js';
import { splitCorpus } from './corpus.js';

/** One batch of next-token prediction: row-major ids and targets, each B*T, with shape [B, T]. */
export interface Batch {
  ids: Int32Array;
  targets: Int32Array;
  shape: [number, number];
}

/** A stream of training items the Trainer pulls from; state makes resume exact. */
export interface DataSource<B> {
  next(): B;
  /** A JSON-serialisable position in the stream. */
  getState?(): unknown;
  setState?(state: unknown): void;
  /** The largest token id the stream can yield, so a trainer can check it against the model before any step. */
  maxTokenId?(): number;
}

/**
 * Throws before any work starts when a tokenizer's ids do not all fit a model's vocabulary
 * (ids >= modelVocabSize would index past the embedding). `where` names the model in the message.
 */
export function checkVocabulary(tokenizer: Pick<Tokenizer, 'vocabSize'>, modelVocabSize: number, where = 'the model'): void {
  if (!Number.isSafeInteger(modelVocabSize) || modelVocabSize < 1) throw new RrtError(`checkVocabulary: expected a positive vocabulary size for ${where}, got ${modelVocabSize}`);
  if (tokenizer.vocabSize > modelVocabSize) {
    throw new RrtError(
      `vocabulary mismatch: the tokenizer has ${tokenizer.vocabSize} tokens but ${where} has a vocabulary of ${modelVocabSize}, ` +
        'so some token ids have no embedding; use the tokenizer the model was trained with, or build the model with vocabSize >= the tokenizer\'s',
    );
  }
}

export interface TokenCacheOptions {
  /** Folder for cached token ids; default `.rrt-cache/` in the current directory; null disables caching. */
  cacheDir?: string | null;
}

const CACHE_VERSION = 'rrt-token-cache-v1';

/** The cache key of a text under a tokenizer: sha256 of both (hex). */
export function tokenCacheKey(text: string, tokenizer: Tokenizer): string {
  const h = createHash('sha256');
  h.update(CACHE_VERSION + '\0');
  h.update(JSON.stringify(tokenizer.toJSON()));
  h.update('\0');
  h.update(text);
  return h.digest('hex');
}

let tempCounter = 0;

/**
 * Writes bytes to path through a temporary file in the same folder, fsync and rename, then
 * fsyncs the folder (best effort) so the rename itself survives a power cut. A crash at any
 * moment leaves either the old file or the complete new one, never a partial file.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.${process.pid}.${Date.now()}.${tempCounter++}.tmp`;
  let fd: number;
  try {
    fd = openSync(tmp, 'wx');
  } catch (e) {
    throw new RrtError(`writing ${path}: cannot create the temporary file ${tmp}: ${(e as Error).message}`);
  }
  try {
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // the write error matters more
    }
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  try {
    const dfd = openSync(dirname(resolve(path)), 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Not every platform can fsync a folder.
  }
}

/**
 * text -> token ids (Int32Array), encoded once per (text, tokenizer) and cached as raw
 * little-endian int32 in `<cacheDir>/tokens-<sha256>.i32`. A damaged cache file is re-created.
 */
export function tokenizeCached(text: string, tokenizer: Tokenizer, opts: TokenCacheOptions = {}): Int32Array {
  const cacheDir = opts.cacheDir === undefined ? resolve('.rrt-cache') : opts.cacheDir;
  const encode = () => Int32Array.from(tokenizer.encode(text));
  if (cacheDir === null) return encode();
  const path = join(cacheDir, `tokens-${tokenCacheKey(text, tokenizer)}.i32`);
  try {
    const size = statSync(path).size;
    if (size % 4 === 0) {
      const buf = readFileSync(path);
      const ids = new Int32Array(size / 4);
      new Uint8Array(ids.buffer).set(buf);
      if (ids.every((id) => id >= 0 && id < tokenizer.vocabSize)) return ids;
    }
  } catch {
    // no cache yet
  }
  const ids = encode();
  mkdirSync(cacheDir, { recursive: true });
  writeFileAtomic(path, new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength));
  return ids;
}

/** Reads a UTF-8 text file and tokenises it through the cache (key: file content + tokenizer JSON). */
export function tokenizeFile(path: string, tokenizer: Tokenizer, opts: TokenCacheOptions = {}): Int32Array {
  return tokenizeCached(readFileSync(path, 'utf8'), tokenizer, opts);
}

/**
 * A token stream cut into `count` sequences of seqLen + 1 tokens: sequence i is
 * tokens[i*T, i*T + T] inclusive (inputs are the first T, targets the last T), so consecutive
 * sequences overlap by one token and every token but the first is a target exactly once. The
 * tail that does not fill a sequence is dropped.
 */
export class TokenSequences {
  readonly count: number;

  /** tokens: the ids; seqLen: T; what: a name for error messages ("training split"). */
  constructor(readonly tokens: Int32Array, readonly seqLen: number, readonly what = 'corpus') {
    if (!Number.isInteger(seqLen) || seqLen < 1) throw new RrtError(`${what}: sequence length must be a positive integer, got ${seqLen}`);
    if (tokens.length === 0) throw new RrtError(`${what} is empty: 0 tokens; one sequence of length ${seqLen} needs ${seqLen + 1} tokens`);
    if (tokens.length < seqLen + 1) {
      throw new RrtError(`${what} is too short: it has ${tokens.length} tokens, one sequence of length ${seqLen} needs ${seqLen + 1} (T + 1)`);
    }
    this.count = Math.floor((tokens.length - 1) / seqLen);
  }

  private maxId = -1;

  /** The largest id among the tokens that batches can use (computed once). */
  maxTokenId(): number {
    if (this.maxId < 0) {
      let m = 0;
      const used = this.tokens.subarray(0, this.count * this.seqLen + 1);
      for (let i = 0; i < used.length; i++) if (used[i]! > m) m = used[i]!;
      this.maxId = m;
    }
    return this.maxId;
  }

  /** The T + 1 ids of sequence i (a view). */
  sequence(i: number): Int32Array {
    if (!(Number.isInteger(i) && i >= 0 && i < this.count)) throw new RrtError(`${this.what}: sequence ${i} out of range [0, ${this.count})`);
    return this.tokens.subarray(i * this.seqLen, i * this.seqLen + this.seqLen + 1);
  }

  /** Number of target tokens over all sequences: count * T. */
  get scoredTokens(): number {
    return this.count * this.seqLen;
  }

  /** The ids that are predicted (targets), in order: tokens[1, count*T]. */
  scoredIds(): Int32Array {
    return this.tokens.subarray(1, 1 + this.scoredTokens);
  }

  /** A batch of the given sequence indices: ids and targets [B*T], shape [B, T]. */
  batch(indices: ArrayLike<number>): Batch {
    const T = this.seqLen, B = indices.length;
    const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const seq = this.sequence(indices[b]);
      ids.set(seq.subarray(0, T), b * T);
      targets.set(seq.subarray(1), b * T);
    }
    return { ids, targets, shape: [B, T] };
  }
}

/** The UTF-8 byte count of the scored (target) tokens' text: the denominator of bits per byte. */
export function scoredBytes(seqs: TokenSequences, tokenizer: Tokenizer): number {
  return Buffer.byteLength(tokenizer.decode(Array.from(seqs.scoredIds())), 'utf8');
}

export interface BatchOptions {
  batchSize: number;
  /** Shuffle the order of sequences each epoch (default true). */
  shuffle?: boolean;
  /** Seed of the shuffle (default 0). */
  seed?: number;
  /** Drop a last batch smaller than batchSize (default true when shuffling, false otherwise). */
  dropLast?: boolean;
  /** Passes over the data (default 1; Infinity loops forever, reshuffling each epoch). */
  epochs?: number;
}

/** The order of sequences in an epoch: a Fisher-Yates shuffle seeded by (seed, epoch). */
export function epochOrder(count: number, seed: number, epoch: number, shuffle = true): Int32Array {
  const order = new Int32Array(count);
  for (let i = 0; i < count; i++) order[i] = i;
  if (!shuffle) return order;
  const rng = new Generator((seed >>> 0) ^ Math.imul(epoch + 1, 0x9e3779b9));
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

/** Batches of seqs: yields { ids, targets: Int32Array (B*T), shape: [B, T] } (the last may have fewer rows unless dropLast). */
export function* batches(seqs: TokenSequences, opts: BatchOptions): IterableIterator<Batch> {
  const B = checkBatchSize(opts.batchSize);
  const shuffle = opts.shuffle ?? true;
  const dropLast = opts.dropLast ?? shuffle;
  const epochs = opts.epochs ?? 1;
  if (dropLast && seqs.count < B) throw tooFew(seqs, B);
  for (let e = 0; e < epochs; e++) {
    const order = epochOrder(seqs.count, opts.seed ?? 0, e, shuffle);
    for (let start = 0; start < order.length; start += B) {
      const end = Math.min(start + B, order.length);
      if (end - start < B && dropLast) break;
      yield seqs.batch(order.subarray(start, end));
    }
  }
}

/** Where a BatchLoader is: the epoch and the index of its next batch within the epoch. */
export interface LoaderState {
  seed: number;
  epoch: number;
  batch: number;
}

/**
 * An endless training stream of full batches [B, T], reshuffled every epoch. Its state is
 * (seed, epoch, batch), so a checkpoint resumes on the exact next batch.
 */
export class BatchLoader implements DataSource<Batch> {
  readonly batchSize: number;
  readonly batchesPerEpoch: number;
  private seed: number;
  private epoch = 0;
  private cursor = 0;
  private order: Int32Array | null = null;
  private readonly shuffle: boolean;

  constructor(readonly seqs: TokenSequences, opts: { batchSize: number; seed?: number; shuffle?: boolean }) {
    this.batchSize = checkBatchSize(opts.batchSize);
    if (seqs.count < this.batchSize) throw tooFew(seqs, this.batchSize);
    this.batchesPerEpoch = Math.floor(seqs.count / this.batchSize);
    this.seed = opts.seed ?? 0;
    this.shuffle = opts.shuffle ?? true;
  }

  /** The next batch: ids, targets [B*T], shape [B, T]. */
  next(): Batch {
    if (this.cursor >= this.batchesPerEpoch) {
      this.epoch++;
      this.cursor = 0;
      this.order = null;
    }
    this.order ??= epochOrder(this.seqs.count, this.seed, this.epoch, this.shuffle);
    const start = this.cursor * this.batchSize;
    this.cursor++;
    return this.seqs.batch(this.order.subarray(start, start + this.batchSize));
  }

  /** Fractional epochs consumed so far. */
  get epochsDone(): number {
    return this.epoch + this.cursor / this.batchesPerEpoch;
  }

  getState(): LoaderState {
    return { seed: this.seed, epoch: this.epoch, batch: this.cursor };
  }

  /** The largest token id in the sequences. */
  maxTokenId(): number {
    return this.seqs.maxTokenId();
  }

  setState(state: unknown): void {
    const s = state as Partial<LoaderState> | null;
    if (!s || !Number.isInteger(s.seed) || !Number.isInteger(s.epoch) || !Number.isInteger(s.batch) || s.batch! < 0 || s.batch! > this.batchesPerEpoch) {
      throw new RrtError(`BatchLoader: invalid state ${JSON.stringify(state)} (expected { seed, epoch, batch } with batch in [0, ${this.batchesPerEpoch}])`);
    }
    this.seed = s.seed!;
    this.epoch = s.epoch!;
    this.cursor = s.batch!;
    this.order = null;
  }
}

function checkBatchSize(b: number): number {
  if (!Number.isInteger(b) || b < 1) throw new RrtError(`batch size must be a positive integer, got ${b}`);
  return b;
}

function tooFew(seqs: TokenSequences, B: number): RrtError {
  return new RrtError(
    `${seqs.what} has ${seqs.count} sequence(s) of ${seqs.seqLen + 1} tokens (${seqs.tokens.length} tokens), fewer than one batch of ${B}; ` +
      `it needs at least ${B * seqs.seqLen + 1} tokens. Lower the batch size or the sequence length.`,
  );
}

export interface TextDataOptions extends TokenCacheOptions {
  /** Tokens per training sequence (T). */
  seqLen: number;
  /** Held-out fraction for splitCorpus (default 0.05). */
  heldOutFraction?: number;
  /** The model's vocabulary size: when given, a tokenizer with more tokens is refused before the file is read. */
  vocabSize?: number;
}

/** A text file tokenised and split into training and held-out sequences. */
export interface TextData {
  train: TokenSequences;
  validation: TokenSequences;
  /** UTF-8 bytes of each split's text (before packing). */
  trainBytes: number;
  validationBytes: number;
  /** UTF-8 bytes of the held-out tokens that are scored (the bits-per-byte denominator). */
  validationScoredBytes: number;
}

/**
 * Reads a text file, splits it with splitCorpus (whole sections, so no verse is in both parts),
 * tokenises each part through the cache and packs both into sequences of seqLen + 1 tokens.
 */
export function loadTextData(path: string, tokenizer: Tokenizer, opts: TextDataOptions): TextData {
  if (opts.vocabSize !== undefined) checkVocabulary(tokenizer, opts.vocabSize);
  if (!Number.isInteger(opts.seqLen) || opts.seqLen < 1) throw new RrtError(`loadTextData: sequence length must be a positive integer, got ${opts.seqLen}`);
  const text = readFileSync(path, 'utf8');
  if (text.trim().length === 0) throw new RrtError(`${path}: the corpus is empty (0 non-blank characters)`);
  const split = splitCorpus(text, { heldOutFraction: opts.heldOutFraction });
  const train = new TokenSequences(tokenizeCached(split.train, tokenizer, opts), opts.seqLen, `${path} (training split)`);
  const validation = new TokenSequences(tokenizeCached(split.validation, tokenizer, opts), opts.seqLen, `${path} (held-out split)`);
  return {
    train,
    validation,
    trainBytes: Buffer.byteLength(split.train, 'utf8'),
    validationBytes: Buffer.byteLength(split.validation, 'utf8'),
    validationScoredBytes: scoredBytes(validation, tokenizer),
  };
}
