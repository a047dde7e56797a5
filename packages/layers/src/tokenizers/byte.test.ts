import { RrtError } from '@rrt/tensor';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ByteTokenizer, tokenizerFromJSON } from './index.js';

describe('ByteTokenizer', () => {
  const tok = new ByteTokenizer();

  it('maps UTF-8 bytes to ids 0..255 and specials from 256', () => {
    expect(tok.vocabSize).toBe(257);
    expect(tok.specialTokens).toEqual({ '<|endoftext|>': 256 });
    expect(tok.encode('Hi!')).toEqual([72, 105, 33]);
    expect(tok.encode('é')).toEqual([0xc3, 0xa9]);
    expect(tok.encode('😀')).toEqual([0xf0, 0x9f, 0x98, 0x80]);
    expect(tok.encode('a<|endoftext|>b')).toEqual([97, 256, 98]);
    expect(tok.decode([97, 256, 98])).toBe('a<|endoftext|>b');
  });

  it('round trips any string of code points', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary' }), (s) => tok.decode(tok.encode(s)) === s));
    fc.assert(fc.property(fc.string({ unit: 'grapheme' }), (s) => tok.decode(tok.encode(s)) === s));
  });

  it('decodes partial or invalid UTF-8 to U+FFFD like TextDecoder', () => {
    expect(tok.decode([0xf0, 0x9f])).toBe('\ufffd');
    expect(tok.decode([0x61, 0xc3])).toBe('a\ufffd');
    fc.assert(
      fc.property(fc.uint8Array(), (bytes) => {
        const s = tok.decode([...bytes]);
        expect(s).toBe(new TextDecoder().decode(bytes));
        expect(tok.decode(tok.encode(s))).toBe(s);
      }),
    );
  });

  it('rejects ids outside the vocabulary with RrtError', () => {
    expect(() => tok.decode([257])).toThrow(RrtError);
    expect(() => tok.decode([0, -1])).toThrow(/found -1 at index 1/);
  });

  it('supports custom specials, and none', () => {
    const t = new ByteTokenizer(['<s>', '</s>', '<pad>']);
    expect(t.specialTokens).toEqual({ '<s>': 256, '</s>': 257, '<pad>': 258 });
    expect(t.encode('<s>x</s>')).toEqual([256, 120, 257]);
    expect(new ByteTokenizer([]).encode('<s>')).toEqual([60, 115, 62]);
    expect(() => new ByteTokenizer(['a', 'a'])).toThrow(RrtError);
  });

  it('saves as a byte-level tokenizer.json and loads back as a ByteTokenizer', () => {
    const t = new ByteTokenizer(['<s>', '</s>']);
    const doc = JSON.parse(JSON.stringify(t.toJSON()));
    expect(doc.model.type).toBe('BPE');
    expect(Object.keys(doc.model.vocab)).toHaveLength(256);
    expect(doc.model.vocab['Ġ']).toBe(32);
    const back = tokenizerFromJSON(doc);
    expect(back).toBeInstanceOf(ByteTokenizer);
    expect(back.specialTokens).toEqual(t.specialTokens);
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        expect(back.encode(s)).toEqual(t.encode(s));
      }),
    );
  });
});
