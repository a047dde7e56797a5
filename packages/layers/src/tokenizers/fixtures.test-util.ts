// Hand-written tokenizer.json documents for the tests (not part of the public API).
import { BYTE_TO_CHAR } from './bytes.js';

/** Bytes in GPT-2's id order: the printable ones first ('!' = 0), then the rest ('Ġ' = 220). */
export function gpt2ByteOrder(): number[] {
  const printable: number[] = [];
  const rest: number[] = [];
  for (let b = 0; b < 256; b++) {
    const p = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    (p ? printable : rest).push(b);
  }
  return [...printable, ...rest];
}

/**
 * A miniature GPT-2 tokenizer.json: the 256 byte tokens in GPT-2 order (so 'H' = 39, 'i' = 72,
 * 'Ġ' = 220 as in the real file), six merges and <|endoftext|>.
 * Merge ids: he 256, ll 257, Ġt 258, Ġthe 259, hell 260, hello 261; <|endoftext|> 262.
 */
export function gpt2Doc(): Record<string, any> {
  const vocab: Record<string, number> = {};
  gpt2ByteOrder().forEach((b, id) => (vocab[BYTE_TO_CHAR[b]!] = id));
  const merges = ['h e', 'l l', 'Ġ t', 'Ġt he', 'he ll', 'hell o'];
  let id = 256;
  for (const m of merges) vocab[m.replace(' ', '')] = id++;
  vocab['<|endoftext|>'] = 262;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: 262, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      vocab,
      merges,
    },
  };
}

/**
 * A miniature Llama/TinyLlama tokenizer.json (SentencePiece BPE as converted by transformers):
 * <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF> 3..258, then
 * ▁ 259, h 260, i 261, e 262, l 263, o 264, ▁h 265, ▁hi 266, ll 267, ell 268, ▁hell 269, ▁hello 270.
 */
export function llamaDoc(): Record<string, any> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  const pieces = ['▁', 'h', 'i', 'e', 'l', 'o', '▁h', '▁hi', 'll', 'ell', '▁hell', '▁hello'];
  pieces.forEach((p, i) => (vocab[p] = 259 + i));
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges: ['▁ h', '▁h i', 'l l', 'e ll', '▁h ell', '▁hell o'],
    },
  };
}

export const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
