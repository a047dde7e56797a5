// Bad input is refused with a clear error before any work starts: empty or too-short corpora,
// a tokenizer whose vocabulary does not fit the model, and damaged trainer checkpoints.
// (Loops that do not divide the layers: packages/recursive/src/convert.test.ts.)

import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FormatError, Generator, RrtError, backendByName } from '@rrt/tensor';
import { defineConfig } from './config.js';
import { CausalLM } from './lm.js';
import { BatchLoader, TokenSequences, checkVocabulary, loadTextData, type Batch } from './data.js';
import { nextTokenLoss } from './losses.js';
import { ByteTokenizer } from './tokenizers/index.js';
import { Trainer, latestCheckpoint } from './train.js';

const backend = backendByName('ref');
const tmp = () => mkdtempSync(join(tmpdir(), 'rrt-bad-input-'));
const bytes = new ByteTokenizer();

function textFile(text: string): string {
  const path = join(tmp(), 'corpus.txt');
  writeFileSync(path, text);
  return path;
}

function trainerFor(vocabSize: number, tokens: Int32Array, checkpointDir?: string) {
  const cfg = defineConfig('llama', { vocabSize, hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 32, maxPositions: 16 });
  const model = new CausalLM(cfg, { backend, rng: new Generator(1) });
  let lossCalls = 0;
  const make = () =>
    new Trainer<Batch>({
      model, steps: 3, checkpointDir,
      data: new BatchLoader(new TokenSequences(tokens, 4), { batchSize: 1 }),
      loss: (b) => {
        lossCalls++;
        return nextTokenLoss(model.forward(b.ids, b.shape).logits, b.targets);
      },
    });
  return { model, make, lossCalls: () => lossCalls };
}

describe('corpora', () => {
  it('an empty or blank corpus is refused, naming the file', () => {
    for (const text of ['', '\n\n  \n\t\n']) {
      const path = textFile(text);
      expect(() => loadTextData(path, bytes, { seqLen: 8, cacheDir: null })).toThrow(new RegExp(`${path}: the corpus is empty`));
    }
    expect(() => new TokenSequences(new Int32Array(0), 8, 'my corpus')).toThrow(/my corpus is empty: 0 tokens; one sequence of length 8 needs 9 tokens/);
  });

  it('a corpus shorter than one sequence says how many tokens it has and needs', () => {
    // 30 chapters so the split holds one out; each split is far shorter than 4096 + 1 tokens.
    const text = Array.from({ length: 30 }, (_, i) => `Chapter ${i}\nverse`).join('\n\n');
    const path = textFile(text);
    expect(() => loadTextData(path, bytes, { seqLen: 4096, cacheDir: null })).toThrow(/\(training split\) is too short: it has \d+ tokens, one sequence of length 4096 needs 4097/);
    expect(() => new TokenSequences(new Int32Array(5), 8)).toThrow(/corpus is too short: it has 5 tokens, one sequence of length 8 needs 9 \(T \+ 1\)/);
    expect(() => new BatchLoader(new TokenSequences(new Int32Array(20), 8), { batchSize: 4 })).toThrow(/fewer than one batch of 4; it needs at least 33 tokens/);
    expect(() => loadTextData(path, bytes, { seqLen: 0, cacheDir: null })).toThrow(/sequence length must be a positive integer, got 0/);
  });
});

describe('vocabulary mismatch between model and tokenizer', () => {
  it('checkVocabulary and loadTextData refuse a tokenizer larger than the model vocabulary', () => {
    // 256 bytes plus the end-of-text special token.
    expect(bytes.vocabSize).toBe(257);
    expect(() => checkVocabulary(bytes, 257)).not.toThrow();
    expect(() => checkVocabulary(bytes, 256, 'model kjv')).toThrow(/tokenizer has 257 tokens but model kjv has a vocabulary of 256/);
    // Refused before the file is even read: the path does not exist.
    expect(() => loadTextData('/nonexistent/corpus.txt', bytes, { seqLen: 8, vocabSize: 100 })).toThrow(/vocabulary mismatch: the tokenizer has 257 tokens/);
  });

  it('the Trainer refuses data with ids past the model vocabulary before the first step', () => {
    const tokens = Int32Array.from({ length: 64 }, (_, i) => (i === 1 ? 255 : i % 32));
    const small = trainerFor(32, tokens);
    expect(() => small.make()).toThrow(RrtError);
    expect(() => small.make()).toThrow(/data holds token id 255 but the model's vocabulary has 32 tokens \(ids 0\.\.31\)/);
    expect(small.lossCalls()).toBe(0);
    small.model.dispose();
    const fits = trainerFor(256, tokens);
    expect(fits.make().trainStep().skipped).toBe(false);
    fits.model.dispose();
  });
});

describe('damaged trainer checkpoints', () => {
  const tokens = Int32Array.from({ length: 64 }, (_, i) => i % 32);

  function saved(): { dir: string; sidecar: string; json: Record<string, unknown> } {
    const dir = tmp();
    const r = trainerFor(32, tokens, dir);
    const t = r.make();
    t.trainStep();
    const sidecar = t.saveCheckpoint();
    r.model.dispose();
    return { dir, sidecar, json: JSON.parse(readFileSync(sidecar, 'utf8')) };
  }

  it('a sidecar cannot point its weights outside its folder', () => {
    const { dir, sidecar, json } = saved();
    for (const weights of ['../step-00000001.safetensors', '/etc/passwd', 'sub/x.safetensors', 'step-00000001.json', 42]) {
      writeFileSync(sidecar, JSON.stringify({ ...json, weights }));
      const r = trainerFor(32, tokens, dir);
      expect(() => r.make().loadCheckpoint(), String(weights)).toThrow(FormatError);
      expect(() => r.make().loadCheckpoint(), String(weights)).toThrow(/checkpoint field "weights": expected the name of a \.safetensors file in the same folder/);
      r.model.dispose();
    }
  });

  it('wrongly typed fields are FormatErrors naming the field, and the trainer is left untouched', () => {
    const { dir, sidecar, json } = saved();
    const cases: [string, unknown][] = [['step', -1], ['step', '3'], ['paramNames', 'x'], ['optimizer', null], ['rng', { global: [1, 2], trainer: null }], ['tokens', 1.5], ['evals', {}]];
    for (const [field, value] of cases) {
      writeFileSync(sidecar, JSON.stringify({ ...json, [field]: value }));
      const r = trainerFor(32, tokens, dir);
      const t = r.make();
      const before = Array.from(r.model.parameters()[0]!.dataSync());
      expect(() => t.loadCheckpoint(), field).toThrow(new RegExp(`checkpoint field "${field}"`));
      expect(t.step).toBe(0);
      expect(Array.from(r.model.parameters()[0]!.dataSync())).toEqual(before);
      r.model.dispose();
    }
    writeFileSync(sidecar, '{"format": "rrt-trainer-checkpoint", ');
    const r = trainerFor(32, tokens, dir);
    expect(() => r.make().loadCheckpoint()).toThrow(/cannot read the checkpoint sidecar/);
    r.model.dispose();
    expect(latestCheckpoint(dir)).toBe(sidecar);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});
