import { FormatError, RrtError } from '@rrt/tensor';
import { BYTE_TO_CHAR, bytesToSymbols, concatBytes, symbolsToBytes, utf8Decode, utf8Encode } from './bytes.js';
import { forEachChunk, gpt2Regex } from './pretokenize.js';
import { AddedTokenSplitter } from './special.js';
import type { AddedTokenJSON, Tokenizer } from './types.js';

/** Ids and merge ranks are packed into one number: a * 2^22 + b stays exact in a double. */
export const MAX_VOCAB = 1 << 22;
const PAIR_SHIFT = MAX_VOCAB;
const POS_SHIFT = 2 ** 30;
const CACHE_LIMIT = 1 << 16;
const CACHE_MAX_CHUNK = 256;

export interface AddedToken {
  id: number;
  content: string;
  /** Special tokens are listed in `specialTokens`; all added tokens are matched in text. */
  special: boolean;
}

export interface BpeInit {
  /** Byte-level token string (GPT-2 alphabet) -> id. Must hold all 256 single-byte symbols. */
  vocab: ReadonlyMap<string, number>;
  /** Merges in rank order, as pairs of byte-level token strings. */
  merges: ReadonlyArray<readonly [string, string]>;
  addedTokens?: readonly AddedToken[];
  /** ByteLevel pre-tokenizer options. */
  addPrefixSpace?: boolean;
  useRegex?: boolean;
}

/**
 * Byte-level BPE in the GPT-2 style: UTF-8 bytes mapped to printable characters,
 * a regex split into words, then merges applied by rank within each word.
 */
export class BpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly specialTokens: Record<string, number>;
  readonly addPrefixSpace: boolean;
  readonly useRegex: boolean;

  private readonly tokens: (string | undefined)[];
  private readonly tokenBytes: (Uint8Array | undefined)[];
  private readonly vocab: ReadonlyMap<string, number>;
  private readonly merges: ReadonlyArray<readonly [string, string]>;
  private readonly added: readonly AddedToken[];
  private readonly byteId = new Int32Array(256);
  private readonly mergeRank = new Map<number, number>();
  private readonly mergeTo: Int32Array;
  private readonly splitter: AddedTokenSplitter;
  private readonly re: RegExp;
  private readonly cache = new Map<string, number[]>();

  constructor(init: BpeInit) {
    this.vocab = init.vocab;
    this.merges = init.merges;
    this.added = init.addedTokens ?? [];
    this.addPrefixSpace = init.addPrefixSpace ?? false;
    this.useRegex = init.useRegex ?? true;

    let size = 0;
    for (const id of this.vocab.values()) size = Math.max(size, id + 1);
    for (const t of this.added) size = Math.max(size, t.id + 1);
    if (size > MAX_VOCAB) throw new FormatError(`BPE vocabulary: expected ids below ${MAX_VOCAB}, found id ${size - 1}`);
    this.vocabSize = size;
    this.tokens = new Array(size);
    this.tokenBytes = new Array(size);
    for (const [tok, id] of this.vocab) {
      if (this.tokens[id] !== undefined) {
        throw new FormatError(`BPE vocabulary: id ${id} is used by both ${JSON.stringify(this.tokens[id])} and ${JSON.stringify(tok)}`);
      }
      const bytes = symbolsToBytes(tok);
      if (bytes === null || bytes.length === 0) {
        throw new FormatError(`BPE vocabulary: expected a non-empty byte-level token (GPT-2 alphabet) for id ${id}, found ${JSON.stringify(tok)}`);
      }
      this.tokens[id] = tok;
      this.tokenBytes[id] = bytes;
    }
    for (let b = 0; b < 256; b++) {
      const id = this.vocab.get(BYTE_TO_CHAR[b]!);
      if (id === undefined) throw new FormatError(`BPE vocabulary: expected a token for every byte, byte 0x${b.toString(16).padStart(2, '0')} (${JSON.stringify(BYTE_TO_CHAR[b])}) is missing`);
      this.byteId[b] = id;
    }
    this.mergeTo = new Int32Array(this.merges.length);
    this.merges.forEach(([a, b], rank) => {
      const ia = this.vocab.get(a);
      const ib = this.vocab.get(b);
      const ic = this.vocab.get(a + b);
      if (ia === undefined || ib === undefined || ic === undefined) {
        const missing = ia === undefined ? a : ib === undefined ? b : a + b;
        throw new FormatError(`BPE merges[${rank}] (${JSON.stringify(a)} ${JSON.stringify(b)}): expected ${JSON.stringify(missing)} in the vocabulary, it is not there`);
      }
      const key = ia * PAIR_SHIFT + ib;
      // A repeated merge keeps its first (best) rank, as in the Rust implementation.
      if (!this.mergeRank.has(key)) this.mergeRank.set(key, rank);
      this.mergeTo[rank] = ic;
    });
    this.specialTokens = {};
    for (const t of this.added) {
      if (t.id < 0 || !Number.isInteger(t.id)) throw new FormatError(`added token ${JSON.stringify(t.content)}: expected a non-negative integer id, found ${t.id}`);
      this.tokens[t.id] = t.content;
      this.tokenBytes[t.id] = utf8Encode(t.content);
      if (t.special) defineOwn(this.specialTokens, t.content, t.id);
    }
    this.splitter = new AddedTokenSplitter(this.added);
    this.re = gpt2Regex();
  }

  /** Number of merges (vocabulary entries beyond the byte alphabet and added tokens). */
  get mergeCount(): number {
    return this.merges.length;
  }

  /** Merges in rank order, as byte-level token strings. */
  getMerges(): ReadonlyArray<readonly [string, string]> {
    return this.merges;
  }

  /** Token string for an id: the byte-level form for vocabulary tokens, the content for added tokens. */
  idToToken(id: number): string | undefined {
    return this.tokens[id];
  }

  tokenToId(token: string): number | undefined {
    for (const t of this.added) if (t.content === token) return t.id;
    return this.vocab.get(token);
  }

  encode(text: string): number[] {
    const out: number[] = [];
    this.splitter.split(
      text,
      (piece) => this.encodeOrdinary(piece, out),
      (id) => out.push(id),
    );
    return out;
  }

  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const bytes = Number.isInteger(id) ? this.tokenBytes[id] : undefined;
      if (bytes === undefined) {
        throw new RrtError(`decode: expected token ids in 0..${this.vocabSize - 1} that name a token, found ${id} at index ${i}`);
      }
      parts.push(bytes);
      total += bytes.length;
    }
    return utf8Decode(concatBytes(parts, total));
  }

  toJSON(): object {
    const vocab: Record<string, number> = {};
    const entries = [...this.vocab].sort((x, y) => x[1] - y[1]);
    for (const [tok, id] of entries) defineOwn(vocab, tok, id);
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: this.added.map(addedTokenJSON),
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: this.addPrefixSpace, trim_offsets: true, use_regex: this.useRegex },
      post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        // Byte-level tokens never contain a space, so the legacy "a b" form is unambiguous and read by every version.
        merges: this.merges.map(([a, b]) => `${a} ${b}`),
      },
    };
  }

  private encodeOrdinary(piece: string, out: number[]): void {
    // ByteLevel's add_prefix_space: a leading space unless the piece already starts with whitespace.
    if (this.addPrefixSpace && !/^\p{White_Space}/u.test(piece)) piece = ' ' + piece;
    if (!this.useRegex) {
      for (const id of this.bpe(piece)) out.push(id);
      return;
    }
    forEachChunk(this.re, piece, (chunk) => {
      let ids = this.cache.get(chunk);
      if (ids === undefined) {
        ids = this.bpe(chunk);
        if (chunk.length <= CACHE_MAX_CHUNK) {
          if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
          this.cache.set(chunk, ids);
        }
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]!);
    });
  }

  /**
   * Applies merges to one word: always the lowest-ranked adjacent pair, leftmost first on ties,
   * via a heap over a linked list so long words cost O(n log n) rather than O(n^2).
   */
  private bpe(chunk: string): number[] {
    const bytes = utf8Encode(chunk);
    const n = bytes.length;
    const sym = new Int32Array(n);
    for (let i = 0; i < n; i++) sym[i] = this.byteId[bytes[i]!]!;
    if (n < 2 || this.merges.length === 0) return Array.from(sym);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MinHeap();
    const rankOf = (a: number, b: number) => this.mergeRank.get(a * PAIR_SHIFT + b);
    for (let i = 0; i + 1 < n; i++) {
      const r = rankOf(sym[i]!, sym[i + 1]!);
      if (r !== undefined) heap.push(r * POS_SHIFT + i);
    }
    while (heap.size > 0) {
      const key = heap.pop();
      const rank = Math.floor(key / POS_SHIFT);
      const pos = key - rank * POS_SHIFT;
      if (sym[pos]! < 0) continue;
      const j = next[pos]!;
      if (j < 0 || rankOf(sym[pos]!, sym[j]!) !== rank) continue; // stale entry
      sym[pos] = this.mergeTo[rank]!;
      sym[j] = -1;
      const k = next[j]!;
      next[pos] = k;
      if (k >= 0) prev[k] = pos;
      const p = prev[pos]!;
      if (p >= 0) {
        const r = rankOf(sym[p]!, sym[pos]!);
        if (r !== undefined) heap.push(r * POS_SHIFT + p);
      }
      if (k >= 0) {
        const r = rankOf(sym[pos]!, sym[k]!);
        if (r !== undefined) heap.push(r * POS_SHIFT + pos);
      }
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) out.push(sym[i]!);
    return out;
  }
}

/** Binary min-heap of numbers. */
export class MinHeap {
  private data: number[] = [];
  get size(): number {
    return this.data.length;
  }
  push(x: number): void {
    const d = this.data;
    let i = d.length;
    d.push(x);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (d[p]! <= x) break;
      d[i] = d[p]!;
      i = p;
    }
    d[i] = x;
  }
  pop(): number {
    const d = this.data;
    const top = d[0]!;
    const last = d.pop()!;
    const n = d.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && d[r]! < d[l]! ? r : l;
        if (d[c]! >= last) break;
        d[i] = d[c]!;
        i = c;
      }
      d[i] = last;
    }
    return top;
  }
}

export function addedTokenJSON(t: AddedToken): AddedTokenJSON {
  return { id: t.id, content: t.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: t.special };
}

/** Sets an own enumerable property even for keys like "__proto__". */
export function defineOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Byte-level vocabulary string for an added token's content (so ids stay contiguous in model.vocab). */
export function byteLevelForm(content: string): string {
  return bytesToSymbols(utf8Encode(content));
}
