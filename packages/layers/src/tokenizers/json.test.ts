import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer as HfLib } from '@huggingface/tokenizers';
import { FormatError, RrtError } from '@rrt/tensor';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { BYTE_TO_CHAR } from './bytes.js';
import { LLAMA3_PATTERN, gpt2ByteOrder, gpt2Doc, llamaDoc } from './fixtures.test-util.js';
import { BpeTokenizer, HfTokenizer, loadTokenizer, saveTokenizer, tokenizerFromJSON, type Tokenizer } from './index.js';

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x));

describe('GPT-2 style tokenizer.json (ByteLevel BPE)', () => {
  const tok = tokenizerFromJSON(gpt2Doc());

  it('loads into BpeTokenizer and encodes as worked out by hand', () => {
    expect(tok).toBeInstanceOf(BpeTokenizer);
    expect(tok.vocabSize).toBe(263);
    expect(tok.specialTokens).toEqual({ '<|endoftext|>': 262 });
    // "hello": he, ll, he+ll, hell+o -> hello (261). " the": h+e first, then Ġ+t, then Ġt+he -> Ġthe (259).
    expect(tok.encode('hello the')).toEqual([261, 259]);
    // Byte ids in GPT-2 order: 'H' 39, 'i' 72, 'Ġ' 220.
    expect(tok.encode('Hi hello')).toEqual([39, 72, 220, 261]);
    expect(tok.encode('hell')).toEqual([260]);
    expect(tok.encode('hello<|endoftext|>')).toEqual([261, 262]);
    expect(tok.decode([261, 262, 220, 39])).toBe('hello<|endoftext|> H');
  });

  it('encodes exactly as the Hugging Face JS port does on the same file', () => {
    const hf = new HfLib(gpt2Doc(), { clean_up_tokenization_spaces: false });
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'grapheme', maxLength: 60 }), fc.array(fc.constantFrom('hello', ' the', 'l', ' ', 'he', '<|endoftext|>', 'é', '\n')).map((a) => a.join(''))), (s) => {
        expect(tok.encode(s)).toEqual(hf.encode(s, { add_special_tokens: false }).ids);
      }),
    );
  });

  it('round trips any string', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary' }), (s) => tok.decode(tok.encode(s)) === s));
  });

  it('honours add_prefix_space and use_regex: false', () => {
    const doc = gpt2Doc();
    doc.pre_tokenizer.add_prefix_space = true;
    expect(tokenizerFromJSON(doc).encode('the')).toEqual([259]);
    const noRegex = gpt2Doc();
    noRegex.pre_tokenizer.use_regex = false;
    // Without the word split, 'o' and ' ' stay separate but merges still apply within the whole text.
    expect(tokenizerFromJSON(noRegex).encode('hello the')).toEqual([261, 259]);
  });

  it('accepts merges as [a, b] pairs (tokenizers >= 0.20 format)', () => {
    const doc = gpt2Doc();
    doc.model.merges = doc.model.merges.map((m: string) => m.split(' '));
    expect(tokenizerFromJSON(doc).encode('hello the')).toEqual([261, 259]);
  });

  it('a Pythia-style file (NFC normalizer) runs on @huggingface/tokenizers with the same merges', () => {
    const doc = gpt2Doc();
    doc.normalizer = { type: 'NFC' };
    const t = tokenizerFromJSON(doc);
    expect(t).toBeInstanceOf(HfTokenizer);
    expect(t.encode('hello the')).toEqual([261, 259]);
    expect(t.encode('hello<|endoftext|>')).toEqual([261, 262]);
    // NFC composes e + U+0301 into é (bytes C3 A9 -> GPT-2 ids 130 and 103 here).
    expect(t.encode('e\u0301')).toEqual(t.encode('é'));
    expect(t.decode(t.encode('e\u0301 hello'))).toBe('é hello');
    expect(t.decode([])).toBe('');
    expect(() => t.decode([263])).toThrow(RrtError);
  });
});

describe('Llama / TinyLlama style tokenizer.json (SentencePiece BPE, byte fallback)', () => {
  const tok = tokenizerFromJSON(llamaDoc());

  it('encodes as worked out by hand', () => {
    expect(tok).toBeInstanceOf(HfTokenizer);
    expect(tok.vocabSize).toBe(271);
    expect(tok.specialTokens).toEqual({ '<unk>': 0, '<s>': 1, '</s>': 2 });
    // "▁hi▁hello▁é": ▁h ▁h ll -> ▁hi, then e+ll, ▁h+ell, ▁hell+o; é is not a piece -> <0xC3> <0xA9>.
    expect(tok.encode('hi hello é')).toEqual([266, 270, 259, 3 + 0xc3, 3 + 0xa9]);
    // No BOS is added by encode; a literal <s> in the text is the special token.
    expect(tok.encode('<s>hi')).toEqual([1, 266]);
  });

  it('decodes: ▁ -> space, byte fallback, leading space stripped', () => {
    expect(tok.decode([266, 270, 259, 3 + 0xc3, 3 + 0xa9])).toBe('hi hello é');
    expect(tok.decode([266, 3 + 0xf0, 3 + 0x9f])).toBe('hi\ufffd');
    expect(tok.decode([1, 266, 2])).toBe('<s> hi</s>');
  });

  it('round trips any string of code points without U+2581', () => {
    // SentencePiece writes spaces as U+2581 ('▁') and decodes every '▁' back to a space, so a
    // literal '▁' in the text comes back as a space (as with the reference tokenizers).
    const noMarker = (s: string): boolean => !s.includes('\u2581');
    fc.assert(fc.property(fc.string({ unit: 'binary' }).filter(noMarker), (s) => tok.decode(tok.encode(s)) === s));
    fc.assert(fc.property(fc.string({ unit: 'grapheme' }).filter(noMarker), (s) => tok.decode(tok.encode(s)) === s));
    expect(tok.decode(tok.encode('a\u2581b'))).toBe('a b');
  });

  it('Gemma style: Replace normalizer without the prepended ▁', () => {
    const doc = llamaDoc();
    doc.normalizer = { type: 'Replace', pattern: { String: ' ' }, content: '▁' };
    doc.decoder.decoders.pop(); // no Strip
    const t = tokenizerFromJSON(doc);
    // "hi▁hello": no ▁ before h so 'h' 'i' stay; ▁hello as before.
    expect(t.encode('hi hello')).toEqual([260, 261, 270]);
    expect(t.decode(t.encode(' hi hello'))).toBe(' hi hello');
  });

  it('legacy Llama conversions: Metaspace pre-tokenizer and decoder', () => {
    const doc = llamaDoc();
    doc.normalizer = null;
    doc.pre_tokenizer = { type: 'Metaspace', replacement: '▁', add_prefix_space: true };
    doc.decoder = { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, { type: 'Metaspace', replacement: '▁', add_prefix_space: true }] };
    const t = tokenizerFromJSON(doc);
    expect(t.encode('hi hello')).toEqual([266, 270]);
    expect(t.decode([266, 270])).toBe('hi hello');
  });

  it('saves and loads back with the same encodings and the post-processor kept', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-tok-'));
    try {
      const path = join(dir, 'tokenizer.json');
      await saveTokenizer(tok, path);
      const back = await loadTokenizer(path);
      expect(back.encode('hi hello é <s>')).toEqual(tok.encode('hi hello é <s>'));
      expect((back.toJSON() as any).post_processor.type).toBe('TemplateProcessing');
      expect((back.toJSON() as any).model.merges[0]).toBe('▁ h');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Llama 3 style tokenizer.json (Split regex + ByteLevel)', () => {
  function llama3Doc() {
    const doc = gpt2Doc();
    doc.pre_tokenizer = {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_PATTERN }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    };
    doc.model.ignore_merges = true;
    doc.model.vocab['Ġ1'] = 263;
    doc.model.vocab['123'] = 264;
    doc.model.merges.push('Ġ 1');
    return doc;
  }

  it('splits digits in runs of three apart from the space (GPT-2 would keep " 1")', () => {
    const t = tokenizerFromJSON(llama3Doc());
    expect(t).toBeInstanceOf(HfTokenizer);
    const one = gpt2ByteOrder().indexOf(0x31);
    // "hello 1": chunks "hello", " ", "1" (\s+(?!\S) fails before '1', \s+ takes the space).
    expect(t.encode('hello 1')).toEqual([261, 220, one]);
    // ignore_merges: a chunk that is a whole vocabulary token maps to it directly.
    expect(t.encode('1231')).toEqual([264, one]);
    // Under the plain GPT-2 split the merge Ġ+1 would apply.
    const gpt2 = gpt2Doc();
    gpt2.model.vocab['Ġ1'] = 263;
    gpt2.model.merges.push('Ġ 1');
    expect(tokenizerFromJSON(gpt2).encode('hello 1')).toEqual([261, 263]);
    fc.assert(fc.property(fc.string({ unit: 'binary' }), (s) => t.decode(t.encode(s)) === s));
  });
});

// ------------------------------------------------------------------------------------------
// Malformed input: FormatError, never anything else, never a hang.

function expectFormatError(doc: unknown, message?: RegExp): void {
  let err: unknown;
  try {
    tokenizerFromJSON(doc);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(FormatError);
  if (message) expect((err as Error).message).toMatch(message);
}

/** Either loads (and then works) or throws FormatError. */
function loadsOrFormatError(doc: unknown): void {
  let tok: Tokenizer;
  try {
    tok = tokenizerFromJSON(doc);
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    return;
  }
  const ids = tok.encode('Hello world, hi hello é 😀 <s>');
  for (const id of ids) expect(Number.isInteger(id)).toBe(true);
  try {
    tok.decode(ids);
  } catch (e) {
    if (!(e instanceof RrtError)) throw e;
  }
}

describe('malformed tokenizer.json', () => {
  it('names what was expected, what was found and where', () => {
    expectFormatError(null, /tokenizer.json: expected an object, found null/);
    expectFormatError([], /expected an object, found an array/);
    expectFormatError({}, /model: expected an object, found nothing/);
    expectFormatError({ model: { type: 'WordPiece', vocab: {} } }, /model.type: expected "BPE".*found the string "WordPiece"/);
    expectFormatError({ model: { type: 'BPE', vocab: [] } }, /model.vocab: expected an object, found an array/);
    expectFormatError({ model: { vocab: { a: -1 } } }, /model.vocab\["a"\]: expected an integer in 0\.\./);
    expectFormatError({ model: { vocab: { a: 1.5 } } }, /found number 1.5/);
    expectFormatError({ model: { vocab: { a: 0, b: 0 } } }, /distinct id/);
    expectFormatError({ model: { vocab: { a: 0, b: 1 }, merges: ['a b'] } }, /model.merges\[0\].*"ab" missing/);
    expectFormatError({ model: { vocab: { a: 0, b: 1, ab: 2 }, merges: ['a  b'] } }, /model.merges\[0\]: expected two tokens separated by one space/);
    expectFormatError({ model: { vocab: { a: 0 }, merges: [7] } }, /model.merges\[0\]/);
    expectFormatError({ model: { vocab: { a: 0 }, merges: 'a b' } }, /model.merges: expected an array/);
    expectFormatError({ model: { vocab: { a: 0 }, dropout: 0.1 } }, /model.dropout/);
    expectFormatError({ model: { vocab: { a: 0 }, continuing_subword_prefix: '##' } }, /continuing_subword_prefix/);
    expectFormatError({ model: { vocab: { a: 0 } }, added_tokens: [{ id: 'x', content: 'a' }] }, /added_tokens\[0\].id: expected an integer/);
    expectFormatError({ model: { vocab: { a: 0 } }, added_tokens: [{ id: 1, content: '' }] }, /added_tokens\[0\].content: expected a non-empty string/);
    expectFormatError({ model: { vocab: { a: 0 } }, added_tokens: {} }, /added_tokens: expected an array/);
    expectFormatError({ model: { vocab: { a: 0 } }, normalizer: { type: 'Precompiled' } }, /normalizer.type: expected one of NFC/);
    expectFormatError({ model: { vocab: { a: 0 } }, normalizer: { type: 'Sequence', normalizers: [null] } }, /normalizer.normalizers\[0\]: expected a normalizer/);
    expectFormatError({ model: { vocab: { a: 0 } }, pre_tokenizer: { type: 'Whitespace' } }, /pre_tokenizer.type/);
    expectFormatError({ model: { vocab: { a: 0 } }, pre_tokenizer: { type: 'Split', pattern: { Regex: ' ' }, behavior: 'MergedWithPrevious' } }, /behavior/);
    expectFormatError({ model: { vocab: { a: 0 } }, pre_tokenizer: { type: 'Split', pattern: {}, behavior: 'Isolated' } }, /pre_tokenizer.pattern: expected an object with one string field/);
    expectFormatError({ model: { vocab: { a: 0 } }, decoder: { type: 'Strip', content: 'ab', start: 1, stop: 0 } }, /decoder.content: expected a single character/);
    expectFormatError({ model: { vocab: { a: 0 } }, decoder: { type: 'Strip', content: ' ', start: -1 } }, /decoder.start/);
    expectFormatError({ model: { vocab: { a: 0 }, unk_token: '<unk>' }, normalizer: { type: 'NFC' } }, /model.unk_token: expected a token of model.vocab, found "<unk>"/);
    const unkOnlyAdded = llamaDoc();
    delete unkOnlyAdded.model.vocab['<unk>'];
    expectFormatError(unkOnlyAdded, /model.unk_token/);
    expectFormatError({ model: { vocab: { a: 0 } }, post_processor: { type: 7 } }, /post_processor.type: expected a string/);
    expectFormatError({ model: { vocab: { a: 0 } }, added_tokens: [{ id: 1, content: 'x', single_word: true }] }, /single_word/);
  });

  it('rejects byte-level documents whose ids or merges do not fit', () => {
    const doc = gpt2Doc();
    doc.model.vocab['Ġthe'] = 2 ** 30;
    expectFormatError(doc, /Ġthe.*expected an integer in 0\.\./);
    const merges = gpt2Doc();
    merges.model.merges.push('x yz');
    expectFormatError(merges, /model.merges\[6\].*"yz" missing/);
  });

  it('rejects dangerous or unknown regexes before anything compiles them', () => {
    const withSplit = (regex: string) => {
      const doc = llamaDoc();
      doc.pre_tokenizer = { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false };
      return doc;
    };
    expectFormatError(withSplit('(a+)+$'), /pre_tokenizer.pattern.Regex.*nested quantifiers/);
    expectFormatError(withSplit('(a|aa)*b'), /alternation/);
    expectFormatError(withSplit('(a)\\1'), /backreferences/);
    expectFormatError(withSplit('a*a*a*b'), /at most 2 unbounded/);
    expectFormatError(withSplit('[a-'), /expected '\]'/);
    expectFormatError(withSplit('(?P<x>a)'), /unsupported group syntax/);
    expectFormatError(withSplit('a'.repeat(5000)), /at most 4096 characters/);
    // Passes the guard but is not a valid regex for the JS translation: FormatError from the build step.
    expectFormatError(withSplit('\\p{NoSuchProperty}'), /tokenizer.json/);
    const replace = llamaDoc();
    replace.normalizer = { type: 'Replace', pattern: { Regex: '(\\s*)*x' }, content: '' };
    expectFormatError(replace, /normalizer.pattern.Regex/);
  });

  it('rejects deep nesting, and invalid JSON files', async () => {
    let deep: any = { type: 'NFC' };
    for (let i = 0; i < 20; i++) deep = { type: 'Sequence', normalizers: [deep] };
    expectFormatError({ model: { vocab: { a: 0 } }, normalizer: deep }, /nesting/);
    const dir = mkdtempSync(join(tmpdir(), 'rrt-tok-'));
    try {
      const path = join(dir, 'bad.json');
      writeFileSync(path, JSON.stringify(gpt2Doc()).slice(0, 500));
      await expect(loadTokenizer(path)).rejects.toThrow(FormatError);
      await expect(loadTokenizer(path)).rejects.toThrow(/bad\.json: expected a JSON tokenizer.json document/);
      writeFileSync(path, '{"model": {"vocab": {"a": "zero"}}}');
      await expect(loadTokenizer(path)).rejects.toThrow(/bad\.json: tokenizer.json model.vocab\["a"\]: expected an integer/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fuzz: random JSON values raise FormatError', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => expectFormatError(v)), { numRuns: 300 });
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom('model', 'added_tokens', 'normalizer', 'pre_tokenizer', 'decoder', 'post_processor'), fc.jsonValue()), (v) => loadsOrFormatError(v)),
      { numRuns: 300 },
    );
  });

  it('fuzz: valid documents with a field removed or replaced by a wrong-typed value load or raise FormatError', () => {
    const paths = (doc: any): string[][] => {
      const out: string[][] = [];
      const walk = (x: any, path: string[], depth: number) => {
        if (depth > 5 || x === null || typeof x !== 'object') return;
        const keys = Object.keys(x);
        // Sample big maps (vocab) rather than enumerating them.
        for (const k of keys.length > 20 ? [keys[0]!, keys[keys.length - 1]!, keys[keys.length >> 1]!] : keys) {
          out.push([...path, k]);
          walk(x[k], [...path, k], depth + 1);
        }
      };
      walk(doc, [], 0);
      return out;
    };
    const docs = [gpt2Doc(), llamaDoc()];
    const mutation = fc.record({
      which: fc.nat(docs.length - 1),
      pick: fc.nat(),
      replacement: fc.oneof(fc.constant(undefined), fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(-1, 1e12, 0.5, '', 'Sequence', [], {}, null, true)),
    });
    fc.assert(
      fc.property(mutation, ({ which, pick, replacement }) => {
        const doc = clone(docs[which]!);
        const all = paths(doc);
        const path = all[pick % all.length]!;
        let parent: any = doc;
        for (const k of path.slice(0, -1)) parent = parent[k];
        const key = path[path.length - 1]!;
        if (replacement === undefined) {
          if (Array.isArray(parent)) parent.splice(Number(key), 1);
          else delete parent[key];
        } else parent[key] = replacement;
        loadsOrFormatError(doc);
      }),
      { numRuns: 1000 },
    );
  });

  it('non-JSON inputs (cycles, functions, throwing getters) raise FormatError', () => {
    const cyclic: any = gpt2Doc();
    cyclic.post_processor.self = cyclic.post_processor;
    expectFormatError(cyclic);
    const getter = gpt2Doc();
    Object.defineProperty(getter.model, 'vocab', {
      get() {
        throw new Error('boom');
      },
    });
    expectFormatError(getter, /boom/);
    expectFormatError({ model: { vocab: { a: () => 0 } } });
  });

  it('a byte-level vocabulary without all 256 bytes is left to the JS port (which skips unknown bytes)', () => {
    const doc = gpt2Doc();
    delete doc.model.vocab[BYTE_TO_CHAR[0xff]!];
    loadsOrFormatError(doc);
  });
});
