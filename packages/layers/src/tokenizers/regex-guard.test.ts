import { FormatError } from '@rrt/tensor';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LLAMA3_PATTERN, gpt2Doc } from './fixtures.test-util.js';
import { checkRegex, tokenizerFromJSON } from './index.js';

// Split patterns of published tokenizer.json files.
const KNOWN = {
  gpt2: "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
  llama3: LLAMA3_PATTERN,
  gpt4o:
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  digits: '\\p{N}{1,3}',
  posix: '[[:alpha:]]+|[^[:alpha:]]',
  named: '(?<word>\\w+)|\\x{2581}|\\u2581|\\x41',
};

describe('checkRegex', () => {
  it('accepts the split patterns of real tokenizers', () => {
    for (const [name, re] of Object.entries(KNOWN)) expect(() => checkRegex(re, name), name).not.toThrow();
  });

  it.each([
    ['(a+)+$', /nested quantifiers/],
    ['(a*)*', /nested quantifiers/],
    ['(?:\\s?)+x', /nested quantifiers/],
    ['(a|aa)+b', /alternation/],
    ['(a|b){1,100}', /alternation/],
    ['a{2}+', /stacked/],
    ['a**', /stacked|nothing to repeat/],
    ['\\s*\\s*\\s*x', /at most 2 unbounded/],
    ['x{0,1000}y{0,1000}z{0,1000}', /at most 2 unbounded/],
    ['(a)\\1', /backreferences/],
    ['(?<n>a)\\k<n>', /backreferences/],
    ['\\g<1>', /backreferences/],
    ['(?(1)a|b)', /unsupported group/],
    ['(?=a)*', /repeated anchor or lookaround/],
    ['^*', /repeated anchor/],
    ['*a', /nothing to repeat/],
    ['(a', /expected '\)'/],
    ['a)', /unmatched/],
    ['[a', /expected '\]'/],
    ['[]a]', /ambiguous/],
    ['\\', /trailing backslash/],
    ['\\p{L', /\\p\{Name\}/],
    ['\\R', /unsupported escape/],
  ])('rejects %s', (re, message) => {
    expect(() => checkRegex(re, 'test')).toThrow(FormatError);
    expect(() => checkRegex(re, 'test')).toThrow(message);
  });

  it('rejects too-deep nesting and too-long patterns', () => {
    expect(() => checkRegex('('.repeat(100) + ')'.repeat(100), 't')).toThrow(/nested groups/);
    expect(() => checkRegex('a'.repeat(4097), 't')).toThrow(/4096/);
  });

  it('fuzz: any string is accepted or rejected with FormatError, quickly', () => {
    const alphabet = fc.constantFrom('a', 'b', '(', ')', '|', '*', '+', '?', '{', '}', ',', '1', '2', '[', ']', '^', '\\', 'p', 's', '-', '?:', '?=', '?<', '>', ':');
    fc.assert(
      fc.property(fc.array(alphabet, { maxLength: 40 }).map((x) => x.join('')), (re) => {
        try {
          checkRegex(re, 'fuzz');
        } catch (e) {
          expect(e).toBeInstanceOf(FormatError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('an accepted Llama 3 split stays fast on adversarial whitespace and punctuation', () => {
    const doc = gpt2Doc();
    doc.pre_tokenizer = {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_PATTERN }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    };
    const tok = tokenizerFromJSON(doc);
    for (const text of [' '.repeat(50_000) + 'x', ' \t'.repeat(25_000) + '\n', '!'.repeat(50_000), "'".repeat(50_000) + 'a']) {
      const t0 = performance.now();
      const ids = tok.encode(text);
      expect(performance.now() - t0).toBeLessThan(5000);
      expect(tok.decode(ids)).toBe(text);
    }
  });
});
