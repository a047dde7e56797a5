import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer as HfLib } from '@huggingface/tokenizers';
import { RrtError } from '@rrt/tensor';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BYTE_TO_CHAR, utf8Encode } from './bytes.js';
import { BpeTokenizer, loadTokenizer, saveTokenizer, tokenizerFromJSON, trainBpe, trainBpeOnFile } from './index.js';

const KJV = new URL('../../data/kjv.txt', import.meta.url);

describe('byte-to-unicode table', () => {
  it('matches GPT-2: printable bytes map to themselves, space to Ġ, newline to Ċ', () => {
    expect(BYTE_TO_CHAR[0x41]).toBe('A');
    expect(BYTE_TO_CHAR[0x20]).toBe('Ġ');
    expect(BYTE_TO_CHAR[0x0a]).toBe('Ċ');
    expect(BYTE_TO_CHAR[0xad]).toBe('Ń');
    expect(new Set(BYTE_TO_CHAR).size).toBe(256);
  });
});

describe('trainBpe worked examples', () => {
  it('aaabdaaabac: merges aa, then ab (tie broken by smaller pair), then aa+ab', () => {
    // Pair counts: aa 4 -> merge. Then (aa,a) 2 and (a,b) 2 tie; (a,b) has the smaller ids.
    // Then (aa,ab) 2; everything left occurs once, below minFrequency 2.
    const tok = trainBpe('aaabdaaabac', { vocabSize: 300, specialTokens: [] });
    expect(tok.getMerges()).toEqual([
      ['a', 'a'],
      ['a', 'b'],
      ['aa', 'ab'],
    ]);
    expect(tok.vocabSize).toBe(259);
    expect(tok.encode('aaabdaaabac')).toEqual([258, 100, 258, 97, 99]);
    expect(tok.decode([258, 100, 258, 97, 99])).toBe('aaabdaaabac');
  });

  it('"the cat the hat the": words are counted first and merges stay inside words', () => {
    // Words: "the" x1, " the" x2, " cat", " hat". Counts: t-h 3, h-e 3 (tie: h-e has smaller ids),
    // then t-he 3, then Ġ-the 2 and a-t 2 (tie: Ġ is byte 32, smaller), then a-t 2.
    const tok = trainBpe('the cat the hat the', { vocabSize: 1000 });
    expect(tok.getMerges()).toEqual([
      ['h', 'e'],
      ['t', 'he'],
      ['Ġ', 'the'],
      ['a', 't'],
    ]);
    expect(tok.specialTokens).toEqual({ '<|endoftext|>': 256 });
    // he 257, the 258, Ġthe 259, at 260
    expect(tok.encode('the cat')).toEqual([258, 32, 99, 260]);
    expect(tok.encode(' the<|endoftext|>hat')).toEqual([259, 256, 104, 260]);
  });

  it('stops at vocabSize, and respects minFrequency', () => {
    expect(trainBpe('the cat the hat the', { vocabSize: 259 }).getMerges()).toEqual([
      ['h', 'e'],
      ['t', 'he'],
    ]);
    expect(trainBpe('the cat the hat the', { vocabSize: 1000, minFrequency: 3 }).mergeCount).toBe(2);
    expect(trainBpe('the cat the hat the', { vocabSize: 1000, minFrequency: 1 }).mergeCount).toBeGreaterThan(4);
  });

  it('never merges across a special token in the training text', () => {
    const tok = trainBpe('ab<|endoftext|>ab<|endoftext|>ab', { vocabSize: 1000 });
    expect(tok.getMerges()).toEqual([['a', 'b']]);
  });

  it('rejects bad options with RrtError', () => {
    expect(() => trainBpe('x', { vocabSize: 100 })).toThrow(RrtError);
    expect(() => trainBpe('x', { vocabSize: 300, minFrequency: 0 })).toThrow(/minFrequency/);
    expect(() => trainBpe('x', { vocabSize: 300, specialTokens: ['a', 'a'] })).toThrow(/special/);
  });
});

/** GPT-2's original algorithm (merge every occurrence of the best pair, repeat), as a reference. */
function referenceBpe(tok: BpeTokenizer, word: string): number[] {
  const ranks = new Map(tok.getMerges().map(([a, b], i) => [`${a} ${b}`, i]));
  let parts = [...utf8Encode(word)].map((b) => BYTE_TO_CHAR[b]!);
  for (;;) {
    let best = -1;
    let bestRank = Infinity;
    for (let i = 0; i + 1 < parts.length; i++) {
      const r = ranks.get(`${parts[i]} ${parts[i + 1]}`);
      if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
    }
    if (best < 0) break;
    const [a, b] = [parts[best]!, parts[best + 1]!];
    const next: string[] = [];
    for (let i = 0; i < parts.length; i++) {
      if (i + 1 < parts.length && parts[i] === a && parts[i + 1] === b) {
        next.push(a + b);
        i++;
      } else next.push(parts[i]!);
    }
    parts = next;
  }
  return parts.map((p) => tok.tokenToId(p)!);
}

describe('BpeTokenizer trained on the King James Bible', () => {
  let text: string;
  let tok: BpeTokenizer;
  let dir: string;

  beforeAll(() => {
    text = readFileSync(KJV, 'utf8');
    const t0 = performance.now();
    tok = trainBpe(text, { vocabSize: 4096 });
    const ms = performance.now() - t0;
    console.log(`trainBpe(kjv.txt, 4096): ${(ms / 1000).toFixed(2)} s`);
    dir = mkdtempSync(join(tmpdir(), 'rrt-tok-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reaches the vocabulary size and encodes the corpus in seconds at about 4 bytes per token', () => {
    expect(tok.vocabSize).toBe(4096);
    const t0 = performance.now();
    const ids = tok.encode(text);
    const ms = performance.now() - t0;
    const bytesPerToken = Buffer.byteLength(text) / ids.length;
    console.log(`encode(kjv.txt): ${ids.length} tokens in ${(ms / 1000).toFixed(2)} s, ${bytesPerToken.toFixed(3)} bytes/token`);
    expect(bytesPerToken).toBeGreaterThan(3.5);
    expect(ms).toBeLessThan(20_000);
    expect(tok.decode(ids)).toBe(text);
  });

  it('learns the obvious English merges first', () => {
    const merges = tok.getMerges().slice(0, 10).map(([a, b]) => a + b);
    expect(merges).toContain('th');
    expect(merges).toContain('Ġthe');
    expect(merges).toContain('nd');
    expect(tok.encode(' the LORD')).toHaveLength(2);
  });

  it('agrees with the reference (GPT-2) BPE loop on arbitrary words', () => {
    const word = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.constantFrom(...text.slice(0, 20000).split(/\b/)),
      fc.array(fc.constantFrom('e', 'th', ' ', 'a', 'nd', 'LORD', 'ee', 's'), { maxLength: 30 }).map((x) => x.join('')),
    );
    fc.assert(
      fc.property(word, (w) => {
        for (const chunk of w.match(/'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu) ?? []) {
          expect(tok.encode(chunk)).toEqual(referenceBpe(tok, chunk));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('round trips ASCII, unicode and emoji text: decode(encode(s)) === s', () => {
    for (const s of ['', 'In the beginning God created the heaven and the earth.', '  leading and trailing  \n\n\t', 'naïve café — 東京 Ελληνικά', '👨‍👩‍👧 🏳️‍🌈 🤖!', '\u0000\u007f\uffff\u{10ffff}']) {
      expect(tok.decode(tok.encode(s))).toBe(s);
    }
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => tok.decode(tok.encode(s)) === s),
      { numRuns: 500 },
    );
    fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 100 }), (s) => tok.decode(tok.encode(s)) === s));
  });

  it('decodes arbitrary byte sequences leniently (invalid UTF-8 -> U+FFFD), and those strings round trip', () => {
    const byteIds = [...Array(256).keys()].map((b) => tok.tokenToId(BYTE_TO_CHAR[b]!)!);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const s = tok.decode([...bytes].map((b) => byteIds[b]!));
        expect(s).toBe(new TextDecoder().decode(bytes));
        expect(tok.decode(tok.encode(s))).toBe(s);
      }),
    );
    const partialEmoji = [...utf8Encode('😀')].slice(0, 3).map((b) => byteIds[b]!);
    expect(tok.decode(partialEmoji)).toBe('\ufffd');
    // A lone surrogate has no UTF-8 form: it encodes as U+FFFD.
    expect(tok.decode(tok.encode('a\ud800b'))).toBe('a\ufffdb');
  });

  it('throws RrtError for ids outside the vocabulary', () => {
    expect(() => tok.decode([5, 4096])).toThrow(/found 4096 at index 1/);
    expect(() => tok.decode([-1])).toThrow(RrtError);
    expect(() => tok.decode([1.5])).toThrow(RrtError);
  });

  it('handles a long word without spaces in near-linear time', () => {
    const long = 'the'.repeat(100_000);
    const t0 = performance.now();
    const ids = tok.encode(long);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(tok.decode(ids)).toBe(long);
  });

  it('save -> load gives the same encodings, and the file is valid for @huggingface/tokenizers', async () => {
    const path = join(dir, 'tokenizer.json');
    await saveTokenizer(tok, path);
    const loaded = await loadTokenizer(path);
    expect(loaded).toBeInstanceOf(BpeTokenizer);
    expect(loaded.vocabSize).toBe(tok.vocabSize);
    expect(loaded.specialTokens).toEqual(tok.specialTokens);
    expect(loaded.toJSON()).toEqual(tok.toJSON());
    const sample = text.slice(100_000, 160_000);
    expect(loaded.encode(sample)).toEqual(tok.encode(sample));
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 100 }), (s) => {
        expect(loaded.encode(s)).toEqual(tok.encode(s));
      }),
    );

    // The same document run by the Hugging Face JS port gives the same ids.
    const doc = JSON.parse(readFileSync(path, 'utf8'));
    expect(doc.model.type).toBe('BPE');
    expect(doc.model.merges[0]).toBe('t h');
    expect(doc.added_tokens).toEqual([{ id: 256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }]);
    const hf = new HfLib(doc, { clean_up_tokenization_spaces: false });
    const hfIds = (s: string) => hf.encode(s, { add_special_tokens: false }).ids;
    expect(hfIds(sample)).toEqual(tok.encode(sample));
    expect(hfIds('Hello, world! <|endoftext|> 123 ñ 😀')).toEqual(tok.encode('Hello, world! <|endoftext|> 123 ñ 😀'));
    expect(hf.decode(tok.encode(sample))).toBe(sample);
  });

  it('trainBpeOnFile trains the same tokenizer as trainBpe on the text', async () => {
    const path = join(dir, 'small.txt');
    const small = text.slice(0, 50_000);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(path, small);
    const a = await trainBpeOnFile(path, { vocabSize: 400 });
    const b = trainBpe(small, { vocabSize: 400 });
    expect(a.getMerges()).toEqual(b.getMerges());
  });
});

describe('BpeTokenizer with its own JSON', () => {
  it('round trips through tokenizerFromJSON for trained tokenizers with several specials', () => {
    const tok = trainBpe('hello world, hello there. <pad> world', { vocabSize: 300, specialTokens: ['<pad>', '<|endoftext|>'] });
    expect(tok.specialTokens).toEqual({ '<pad>': 256, '<|endoftext|>': 257 });
    const back = tokenizerFromJSON(JSON.parse(JSON.stringify(tok.toJSON())));
    expect(back.encode('hello<pad>world<|endoftext|>')).toEqual(tok.encode('hello<pad>world<|endoftext|>'));
    expect(back.specialTokens).toEqual(tok.specialTokens);
  });

  it('keeps vocabulary tokens named like Object.prototype members', () => {
    const text = 'constructor toString valueOf '.repeat(20);
    const tok = trainBpe(text, { vocabSize: 400 });
    expect(tok.encode('constructor')).toHaveLength(1);
    const back = tokenizerFromJSON(JSON.parse(JSON.stringify(tok.toJSON())));
    expect(back.encode(text)).toEqual(tok.encode(text));
    // "__proto__" from JSON.parse is an own key; it must survive loading and saving.
    const json = JSON.stringify(tok.toJSON()).replace('"vocab":{', '"vocab":{"__proto__":399,');
    const withProto = tokenizerFromJSON(JSON.parse(json));
    expect(withProto.vocabSize).toBe(400);
    expect(Object.hasOwn((withProto.toJSON() as any).model.vocab, '__proto__')).toBe(true);
    expect(withProto.decode([399])).toBe('__proto__');
  });
});
