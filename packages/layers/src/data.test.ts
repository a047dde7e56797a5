import { describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ByteTokenizer } from './tokenizers/index.js';
import {
  BatchLoader, TokenSequences, batches, epochOrder, loadTextData, scoredBytes, tokenCacheKey, tokenizeCached, tokenizeFile,
} from './data.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'rrt-data-'));
const range = (n: number) => Int32Array.from({ length: n }, (_, i) => i);

describe('token cache', () => {
  it('tokenises once and then reads the cached ids', () => {
    const dir = tmp();
    let calls = 0;
    const base = new ByteTokenizer();
    const tok = Object.assign(Object.create(base), { encode: (t: string) => (calls++, base.encode(t)) });
    const a = tokenizeCached('hello world', tok, { cacheDir: dir });
    const b = tokenizeCached('hello world', tok, { cacheDir: dir });
    expect(calls).toBe(1);
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(Array.from(a)).toEqual(base.encode('hello world'));
    const files = readdirSync(dir);
    expect(files).toEqual([`tokens-${tokenCacheKey('hello world', tok)}.i32`]);
    // Another text or another tokenizer is another key.
    expect(tokenCacheKey('hello world!', tok)).not.toBe(tokenCacheKey('hello world', tok));
    expect(tokenCacheKey('hello world', new ByteTokenizer(['<x>']))).not.toBe(tokenCacheKey('hello world', tok));
    // A damaged file is rebuilt.
    writeFileSync(join(dir, files[0]), 'abc');
    expect(Array.from(tokenizeCached('hello world', tok, { cacheDir: dir }))).toEqual(Array.from(a));
    expect(calls).toBe(2);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('tokenizeFile keys on the file content; null disables the cache', () => {
    const dir = tmp();
    const file = join(dir, 'a.txt');
    writeFileSync(file, 'abc');
    const tok = new ByteTokenizer();
    expect(Array.from(tokenizeFile(file, tok, { cacheDir: join(dir, 'cache') }))).toEqual([97, 98, 99]);
    writeFileSync(file, 'abd');
    expect(Array.from(tokenizeFile(file, tok, { cacheDir: join(dir, 'cache') }))).toEqual([97, 98, 100]);
    expect(readdirSync(join(dir, 'cache')).length).toBe(2);
    expect(Array.from(tokenizeCached('xy', tok, { cacheDir: null }))).toEqual([120, 121]);
  });
});

describe('TokenSequences', () => {
  it('packs T+1 tokens per sequence, overlapping by one', () => {
    const s = new TokenSequences(range(10), 3);
    expect(s.count).toBe(3);
    expect(Array.from(s.sequence(0))).toEqual([0, 1, 2, 3]);
    expect(Array.from(s.sequence(2))).toEqual([6, 7, 8, 9]);
    expect(s.scoredTokens).toBe(9);
    expect(Array.from(s.scoredIds())).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const b = s.batch([2, 0]);
    expect(b.shape).toEqual([2, 3]);
    expect(Array.from(b.ids)).toEqual([6, 7, 8, 0, 1, 2]);
    expect(Array.from(b.targets)).toEqual([7, 8, 9, 1, 2, 3]);
  });

  it('says how many tokens there are and how many are needed', () => {
    expect(() => new TokenSequences(new Int32Array(0), 8, 'tiny corpus')).toThrow(/tiny corpus is empty: 0 tokens.*needs 9/);
    expect(() => new TokenSequences(range(5), 8, 'tiny corpus')).toThrow(/has 5 tokens.*needs 9/);
    expect(() => new TokenSequences(range(9), 8)).not.toThrow();
  });
});

describe('batches', () => {
  it('shuffles deterministically by seed and covers every sequence once per epoch', () => {
    const s = new TokenSequences(range(101), 4); // 25 sequences
    const a = [...batches(s, { batchSize: 5, seed: 1 })];
    const b = [...batches(s, { batchSize: 5, seed: 1 })];
    const c = [...batches(s, { batchSize: 5, seed: 2 })];
    expect(a.length).toBe(5);
    expect(a.map((x) => Array.from(x.ids))).toEqual(b.map((x) => Array.from(x.ids)));
    expect(a.map((x) => Array.from(x.ids))).not.toEqual(c.map((x) => Array.from(x.ids)));
    const firsts = a.flatMap((x) => Array.from(x.ids).filter((_, i) => i % 4 === 0)).sort((p, q) => p - q);
    expect(firsts).toEqual(Array.from({ length: 25 }, (_, i) => i * 4));
    for (const x of a) for (let i = 0; i < x.ids.length; i++) expect(x.targets[i]).toBe(x.ids[i] + 1);
  });

  it('keeps order and a partial last batch without shuffling', () => {
    const s = new TokenSequences(range(23), 2); // 11 sequences
    const out = [...batches(s, { batchSize: 4, shuffle: false })];
    expect(out.map((b) => b.shape)).toEqual([[4, 2], [4, 2], [3, 2]]);
    expect(Array.from(out[0].ids)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect([...batches(s, { batchSize: 4, shuffle: false, dropLast: true })].length).toBe(2);
    expect([...batches(s, { batchSize: 4, epochs: 3 })].length).toBe(6);
  });

  it('reports a corpus smaller than one batch', () => {
    const s = new TokenSequences(range(9), 4, 'small');
    expect(() => new BatchLoader(s, { batchSize: 3 })).toThrow(/small has 2 sequence\(s\).*fewer than one batch of 3.*at least 13 tokens/);
  });
});

describe('BatchLoader', () => {
  it('loops over epochs, reshuffling, and resumes exactly from its state', () => {
    const s = new TokenSequences(range(41), 4); // 10 sequences
    const loader = new BatchLoader(s, { batchSize: 3, seed: 7 });
    expect(loader.batchesPerEpoch).toBe(3);
    const seen: number[][] = [];
    for (let i = 0; i < 4; i++) seen.push(Array.from(loader.next().ids));
    const state = loader.getState();
    expect(state).toEqual({ seed: 7, epoch: 1, batch: 1 });
    const rest = [0, 1, 2, 3].map(() => Array.from(loader.next().ids));
    const again = new BatchLoader(s, { batchSize: 3, seed: 0 });
    again.setState(JSON.parse(JSON.stringify(state)));
    expect([0, 1, 2, 3].map(() => Array.from(again.next().ids))).toEqual(rest);
    expect(Array.from(epochOrder(10, 7, 0))).not.toEqual(Array.from(epochOrder(10, 7, 1)));
    expect(() => again.setState({ seed: 1 })).toThrow(/invalid state/);
  });
});

describe('loadTextData', () => {
  it('splits by sections, tokenises through the cache and counts scored bytes', () => {
    const dir = tmp();
    const file = join(dir, 'c.txt');
    const text = Array.from({ length: 40 }, (_, i) => `Chapter ${i}\nSome words number ${i}.`).join('\n\n');
    writeFileSync(file, text);
    const tok = new ByteTokenizer();
    const data = loadTextData(file, tok, { seqLen: 16, heldOutFraction: 0.1, cacheDir: join(dir, 'cache') });
    expect(data.validation.tokens.length).toBe(data.validationBytes); // one byte per token
    expect(data.validationScoredBytes).toBe(data.validation.scoredTokens);
    expect(scoredBytes(data.train, tok)).toBe(data.train.scoredTokens);
    expect(tok.decode(Array.from(data.validation.sequence(0)))).toBe('Chapter 9\nSome wo');
    expect(readdirSync(join(dir, 'cache')).length).toBe(2);
    expect(readFileSync(file, 'utf8')).toBe(text);
    writeFileSync(file, '\n \n');
    expect(() => loadTextData(file, tok, { seqLen: 16, cacheDir: null })).toThrow(/corpus is empty/);
    writeFileSync(file, Array.from({ length: 20 }, (_, i) => `s${i}`).join('\n\n'));
    expect(() => loadTextData(file, tok, { seqLen: 16, cacheDir: null })).toThrow(/held-out split\) is too short: it has 4 tokens.*needs 17/);
  });
});
