import { RrtError } from '@rrt/tensor';
import { addedTokenJSON, defineOwn, type AddedToken } from './bpe.js';
import { BYTE_TO_CHAR, concatBytes, utf8Decode, utf8Encode } from './bytes.js';
import { AddedTokenSplitter } from './special.js';
import type { Tokenizer } from './types.js';

/** One token per UTF-8 byte (ids 0..255), then the special tokens from 256. */
export class ByteTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly specialTokens: Record<string, number>;
  private readonly added: AddedToken[];
  private readonly addedBytes: Uint8Array[];
  private readonly splitter: AddedTokenSplitter;

  constructor(specialTokens: readonly string[] = ['<|endoftext|>']) {
    if (new Set(specialTokens).size !== specialTokens.length || specialTokens.some((s) => s.length === 0)) {
      throw new RrtError(`ByteTokenizer: expected distinct non-empty special tokens, found ${JSON.stringify(specialTokens)}`);
    }
    this.added = specialTokens.map((content, i) => ({ id: 256 + i, content, special: true }));
    this.addedBytes = this.added.map((t) => utf8Encode(t.content));
    this.vocabSize = 256 + this.added.length;
    this.specialTokens = {};
    for (const t of this.added) defineOwn(this.specialTokens, t.content, t.id);
    this.splitter = new AddedTokenSplitter(this.added);
  }

  encode(text: string): number[] {
    const out: number[] = [];
    this.splitter.split(
      text,
      (piece) => {
        for (const b of utf8Encode(piece)) out.push(b);
      },
      (id) => out.push(id),
    );
    return out;
  }

  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    let run: number[] = [];
    const flush = () => {
      if (run.length) {
        parts.push(Uint8Array.from(run));
        total += run.length;
        run = [];
      }
    };
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (Number.isInteger(id) && id >= 0 && id < 256) {
        run.push(id);
      } else if (Number.isInteger(id) && id >= 256 && id < this.vocabSize) {
        flush();
        const bytes = this.addedBytes[id - 256]!;
        parts.push(bytes);
        total += bytes.length;
      } else {
        throw new RrtError(`decode: expected token ids in 0..${this.vocabSize - 1}, found ${id} at index ${i}`);
      }
    }
    flush();
    return utf8Decode(concatBytes(parts, total));
  }

  /** A byte-level BPE document with no merges: loads back here, and in any HF-compatible reader. */
  toJSON(): object {
    const vocab: Record<string, number> = {};
    for (let b = 0; b < 256; b++) defineOwn(vocab, BYTE_TO_CHAR[b]!, b);
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: this.added.map(addedTokenJSON),
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      post_processor: null,
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
        merges: [],
      },
    };
  }
}
