/** A text <-> token id mapping. */
export interface Tokenizer {
  /** One past the largest token id (ids are 0..vocabSize-1). */
  readonly vocabSize: number;
  /** Text -> ids. Special-token strings that occur in the text encode to their ids. No BOS/EOS is added. */
  encode(text: string): number[];
  /** Ids -> text. Byte sequences that are not valid UTF-8 decode to U+FFFD. Throws RrtError on an id outside the vocabulary. */
  decode(ids: readonly number[]): string;
  /** Special tokens by content, e.g. { '<|endoftext|>': 256 }. */
  readonly specialTokens: Record<string, number>;
  /** A Hugging Face tokenizer.json document (JSON.stringify-able). */
  toJSON(): object;
}

/** An entry of tokenizer.json's `added_tokens`. */
export interface AddedTokenJSON {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}
