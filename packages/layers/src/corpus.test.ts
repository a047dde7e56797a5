import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { defaultCorpusPath, splitCorpus } from './corpus.js';

describe('corpus', () => {
  it('defaultCorpusPath points at the shipped kjv.txt', () => {
    const p = defaultCorpusPath();
    expect(p.endsWith('kjv.txt')).toBe(true);
    expect(existsSync(p)).toBe(true);
  });

  it('holds out every 20th chapter of kjv.txt, whole chapters only', () => {
    const text = readFileSync(defaultCorpusPath(), 'utf8');
    const split = splitCorpus(text);
    expect(split.trainSections + split.validationSections).toBe(1189);
    expect(split.validationSections).toBe(59);
    expect(split.validationIndices.slice(0, 3)).toEqual([19, 39, 59]);
    // Chapter 20 of Genesis is the 20th section.
    expect(split.validation.startsWith('Genesis 20\n')).toBe(true);
    const trainLines = new Set(split.train.split('\n'));
    const heldLines = split.validation.split('\n').filter((l) => l.length > 0);
    // Headings differ per chapter; a verse that repeats word for word elsewhere in the Bible may occur in both.
    const shared = heldLines.filter((l) => trainLines.has(l));
    expect(shared.length / heldLines.length).toBeLessThan(0.02);
    const frac = split.validation.length / (split.validation.length + split.train.length);
    expect(frac).toBeGreaterThan(0.03);
    expect(frac).toBeLessThan(0.08);
  });

  it('is deterministic and partitions the sections', () => {
    const text = Array.from({ length: 40 }, (_, i) => `Book ${i}\nline a ${i}\nline b ${i}`).join('\n\n');
    const a = splitCorpus(text, { heldOutFraction: 0.1 });
    const b = splitCorpus(text, { heldOutFraction: 0.1 });
    expect(a).toEqual(b);
    expect(a.validationIndices).toEqual([9, 19, 29, 39]);
    expect(a.trainSections).toBe(36);
    const all = [...a.train.trim().split('\n\n'), ...a.validation.trim().split('\n\n')].sort();
    expect(all).toEqual(text.split('\n\n').sort());
  });

  it('handles CRLF and multiple blank lines, and no held-out part', () => {
    const split = splitCorpus('a\r\nb\r\n\r\n\r\nc\r\n', { heldOutFraction: 0 });
    expect(split.train).toBe('a\nb\n\nc\n');
    expect(split.validation).toBe('');
  });

  it('explains what is wrong with a text too small to split or an empty one', () => {
    expect(() => splitCorpus('one\nsection')).toThrow(/1 section\(s\).*at least 20/);
    expect(() => splitCorpus('  \n\n ')).toThrow(/empty/);
    expect(() => splitCorpus('a', { heldOutFraction: 1 })).toThrow(/\[0, 1\)/);
  });
});
