// Fuzzing the tokenizer.json reader at the file level: truncated and byte-flipped files,
// numbers that JSON turns into Infinity, huge ids and prototype names in the vocabulary. Every
// case loads a tokenizer that round-trips text, or raises a FormatError; nothing hangs, and an id
// of 10^12 allocates nothing. (Structural fuzzing of parsed documents: json.test.ts.)

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FormatError } from '@rrt/tensor';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { gpt2Doc, llamaDoc } from './fixtures.test-util.js';
import { loadTokenizer, tokenizerFromJSON, type Tokenizer } from './index.js';

const RUNS = 150;
const texts = [JSON.stringify(gpt2Doc()), JSON.stringify(llamaDoc())];

/** A loaded tokenizer must work: encode then decode a sample gives ids in range and terminates. */
function usable(tok: Tokenizer): void {
  const ids = tok.encode('In the beginning, 12 € 🙂');
  for (const id of ids) expect(id >= 0 && id < tok.vocabSize).toBe(true);
  expect(typeof tok.decode(ids)).toBe('string');
}

/** Parses text as tokenizer.json the way loadTokenizer does, without touching the disk. */
function fromText(text: string): 'loaded' | 'refused' {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return 'refused'; // loadTokenizer reports this as a FormatError (tested below on files)
  }
  try {
    usable(tokenizerFromJSON(doc));
    return 'loaded';
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    return 'refused';
  }
}

describe('tokenizer.json fuzz (files)', () => {
  it('every truncation of a valid file is refused', () => {
    fc.assert(
      fc.property(fc.nat(texts.length - 1), fc.nat(), (which, cut) => {
        const text = texts[which]!;
        expect(fromText(text.slice(0, cut % text.length))).toBe('refused');
      }),
      { numRuns: RUNS },
    );
  });

  it('byte flips load a working tokenizer or are refused', () => {
    fc.assert(
      fc.property(fc.nat(texts.length - 1), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 32, max: 126 })), { minLength: 1, maxLength: 3 }), (which, flips) => {
        const chars = [...texts[which]!];
        for (const [at, c] of flips) chars[at % chars.length] = String.fromCharCode(c);
        fromText(chars.join(''));
      }),
      { numRuns: RUNS },
    );
  });

  it('ids written as 1e999, 1e12, -1, 1.5 or strings are refused without allocating', () => {
    const before = process.memoryUsage().arrayBuffers;
    for (const literal of ['1e999', '-1e999', '1e12', '4294967296', '-1', '1.5', '"3"', 'null', '[]']) {
      const text = texts[0]!.replace(/("model":\{.*?"vocab":\{"[^"]+":)\d+/, `$1${literal}`);
      expect(text).not.toBe(texts[0]);
      expect(fromText(text), literal).toBe('refused');
      const added = texts[1]!.replace(/("added_tokens":\[\{"id":)\d+/, `$1${literal}`);
      expect(added).not.toBe(texts[1]);
      expect(fromText(added), literal).toBe('refused');
    }
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 << 20);
  });

  it('"__proto__" and other prototype names are ordinary tokens', () => {
    const doc = gpt2Doc();
    const next = Object.keys(doc.model.vocab).length;
    const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty'];
    // As JSON text, so "__proto__" is an own key, the way a file delivers it.
    const extra = names.map((n, i) => `${JSON.stringify(n)}:${next + i}`).join(',');
    const text = JSON.stringify(doc).replace('"vocab":{', `"vocab":{${extra},`);
    const tok = tokenizerFromJSON(JSON.parse(text));
    expect(tok.vocabSize).toBe(next + names.length);
    expect(({} as Record<string, unknown>)['Ġ']).toBeUndefined();
    expect(tok.decode(tok.encode('constructor __proto__'))).toBe('constructor __proto__');
  });

  it('loadTokenizer reports damaged files as FormatError naming the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-tok-fuzz-'));
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), fc.nat(), fc.boolean(), async (junk, cut, truncate) => {
        const path = join(dir, 'tokenizer.json');
        writeFileSync(path, truncate ? texts[1]!.slice(0, cut % texts[1]!.length) : junk);
        await expect(loadTokenizer(path)).rejects.toThrow(FormatError);
        await expect(loadTokenizer(path)).rejects.toThrow(path);
      }),
      { numRuns: 40 },
    );
  });
});
