import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { FormatError, RrtError } from '@rrt/tensor';
import { defineOwn, type AddedToken } from './bpe.js';
import type { Tokenizer } from './types.js';

/**
 * A validated tokenizer.json document run by @huggingface/tokenizers (pure JS port of HF
 * tokenizers). Built only by tokenizerFromJSON, which checks and rebuilds the document first.
 */
export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly specialTokens: Record<string, number>;
  private readonly inner: HfLibTokenizer;
  private readonly known: Uint8Array;

  /** @internal */
  constructor(
    sanitized: { model: { vocab: Record<string, number> } },
    private readonly doc: object,
    added: readonly AddedToken[],
  ) {
    let size = 0;
    for (const id of Object.values(sanitized.model.vocab)) size = Math.max(size, id + 1);
    for (const t of added) size = Math.max(size, t.id + 1);
    this.vocabSize = size;
    this.known = new Uint8Array(size);
    for (const id of Object.values(sanitized.model.vocab)) this.known[id] = 1;
    this.specialTokens = {};
    for (const t of added) {
      this.known[t.id] = 1;
      if (t.special) defineOwn(this.specialTokens, t.content, t.id);
    }
    try {
      // clean_up_tokenization_spaces would rewrite " ." to "." on decode and break round trips.
      this.inner = new HfLibTokenizer(sanitized, { clean_up_tokenization_spaces: false });
    } catch (e) {
      throw new FormatError(`tokenizer.json: expected a document @huggingface/tokenizers can build, it failed with ${String(e)}`);
    }
  }

  encode(text: string): number[] {
    let ids: number[];
    try {
      ids = this.inner.encode(text, { add_special_tokens: false }).ids;
    } catch (e) {
      throw new RrtError(`encode: the tokenizer failed on a text of ${text.length} characters: ${String(e)}`);
    }
    for (let i = 0; i < ids.length; i++) {
      if (!Number.isInteger(ids[i])) throw new RrtError(`encode: expected a token id at position ${i}, found ${String(ids[i])} (text not covered by the vocabulary and no unk_token)`);
    }
    return ids;
  }

  decode(ids: readonly number[]): string {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || !this.known[id]) {
        throw new RrtError(`decode: expected token ids in 0..${this.vocabSize - 1} that name a token, found ${id} at index ${i}`);
      }
    }
    if (ids.length === 0) return '';
    try {
      return this.inner.decode([...ids], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    } catch (e) {
      throw new RrtError(`decode: the tokenizer failed on ${ids.length} ids: ${String(e)}`);
    }
  }

  toJSON(): object {
    return JSON.parse(JSON.stringify(this.doc));
  }
}
