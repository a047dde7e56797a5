import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RrtError } from '@rrt/tensor';
import { countParams, defineConfig, parseHfConfig, type ModelConfig } from '@rrt/layers';
import { CYCLE, MIDDLE_CYCLE, countRecursiveParams } from '@rrt/recursive';
import { countRelaxedParams, DEFAULT_LORA_TARGETS, loraParams } from './params.js';

function fixture(name: string): ModelConfig {
  const path = new URL(`../test/fixtures/${name}.config.json`, import.meta.url);
  return parseHfConfig(JSON.parse(readFileSync(path, 'utf8')), `${name}.config.json`);
}

const GEMMA = fixture('gemma-2b');
const TINYLLAMA = fixture('tinyllama-1.1b');
const PYTHIA = fixture('pythia-1b');

/** Billions in hundredths, rounded: 0.9909e9 -> 99. Integers, so sums compare exactly. */
const hundredths = (n: number) => Math.round(n / 1e7);

// PAPER.md section 2 (non-embedding parameters, billions).
const RANKS = [64, 128, 256, 512] as const;
const TABLE = [
  { name: 'Gemma 2B, 2 loops', cfg: GEMMA, loops: 2, full: 1.99, recursive: 0.99, relaxed: [1.07, 1.15, 1.3, 1.6] },
  { name: 'Gemma 2B, 3 loops', cfg: GEMMA, loops: 3, full: 1.99, recursive: 0.66, relaxed: [0.74, 0.82, 0.97, 1.27] },
  { name: 'TinyLlama 1.1B, 2 loops', cfg: TINYLLAMA, loops: 2, full: 0.97, recursive: 0.48, relaxed: [0.53, 0.58, 0.68, 0.86] },
  { name: 'Pythia 1B, 2 loops', cfg: PYTHIA, loops: 2, full: 0.81, recursive: 0.4, relaxed: [0.44, 0.48, 0.55, 0.7] },
];

describe("the paper's parameter table", () => {
  it('fixtures hold the published sizes', () => {
    expect(GEMMA).toMatchObject({ numLayers: 18, hiddenSize: 2048, numHeads: 8, numKvHeads: 1, headDim: 256, intermediateSize: 16384, vocabSize: 256000 });
    expect(TINYLLAMA).toMatchObject({ numLayers: 22, hiddenSize: 2048, numHeads: 32, numKvHeads: 4, intermediateSize: 5632, vocabSize: 32000 });
    expect(PYTHIA).toMatchObject({ numLayers: 16, hiddenSize: 2048, numHeads: 8, intermediateSize: 8192, vocabSize: 50304, rotaryPct: 0.25, parallelResidual: true });
  });

  it.each(TABLE)('$name: recursive model', ({ cfg, loops, recursive }) => {
    const r = countRecursiveParams(cfg, CYCLE(cfg.numLayers, loops));
    expect(hundredths(r.nonEmbedding)).toBe(Math.round(recursive * 100));
  });

  it.each(TABLE)('$name: relaxed, r = 64..512, as round(recursive) + round(LoRA)', ({ cfg, loops, relaxed }) => {
    const got = RANKS.map((rank) => {
      const c = countRelaxedParams(cfg, CYCLE(cfg.numLayers, loops), { rank });
      return hundredths(c.recursive.nonEmbedding) + hundredths(c.lora);
    });
    expect(got).toEqual(relaxed.map((v) => Math.round(v * 100)));
  });

  it('rounding the exact sum instead misses TinyLlama r = 128 and r = 256 by 0.01', () => {
    const misses: string[] = [];
    for (const row of TABLE) {
      RANKS.forEach((rank, i) => {
        const c = countRelaxedParams(row.cfg, CYCLE(row.cfg.numLayers, row.loops), { rank });
        if (hundredths(c.nonEmbedding) !== Math.round(row.relaxed[i]! * 100)) misses.push(`${row.name} r=${rank}: ${(c.nonEmbedding / 1e9).toFixed(4)}`);
      });
    }
    // Exact: 0.4845B recursive + 0.1009B / 0.2018B LoRA; the table says 0.58 and 0.68.
    expect(misses).toEqual(['TinyLlama 1.1B, 2 loops r=128: 0.5854', 'TinyLlama 1.1B, 2 loops r=256: 0.6863']);
  });

  it('full sizes match (TinyLlama ~0.97, Pythia ~0.81)', () => {
    expect(hundredths(countParams(TINYLLAMA).nonEmbedding)).toBe(97);
    expect(hundredths(countParams(PYTHIA).nonEmbedding)).toBe(81);
  });

  it('Gemma 2B full size: exact count is 1.98B, the table says 1.99B (unmatched)', () => {
    // 18 x 110,104,576 + 2,048 = 1,981,884,416, the Gemma report's non-embedding figure. No
    // sensible convention gives 1.99 (it would need 3-13M more parameters): the table is off
    // by 0.01 here, and the recursive and relaxed Gemma entries agree with 1.98B.
    const full = countParams(GEMMA).nonEmbedding;
    expect(full).toBe(1_981_884_416);
    expect(hundredths(full)).toBe(198);
    expect(hundredths(full)).not.toBe(199);
  });

  it('the convention is what makes r = 512 match: capped ranks, q/k/v separate, L modules', () => {
    // Uncapped k/v at r = 512 would give Gemma 1.62 and TinyLlama 0.88 (table: 1.60, 0.86).
    const gemma = countRelaxedParams(GEMMA, CYCLE(18, 2), { rank: 512 });
    expect(gemma.modules.find((m) => m.target === 'k')).toMatchObject({ requestedRank: 512, rank: 256, params: 256 * (2048 + 256) });
    const uncapped = gemma.lora + 18 * 2 * 256 * (2048 + 256);
    expect(hundredths(gemma.recursive.nonEmbedding) + hundredths(uncapped)).toBe(162);
    // One rank-r module on Pythia's fused [6144 x 2048] qkv would give 0.47 at r = 128 (table: 0.48).
    const pythia = countRelaxedParams(PYTHIA, CYCLE(16, 2), { rank: 128 });
    const fused = pythia.lora - 16 * 3 * loraParams(2048, 2048, 128) + 16 * loraParams(2048, 6144, 128);
    expect(hundredths(pythia.recursive.nonEmbedding) + hundredths(fused)).toBe(47);
    expect(hundredths(pythia.recursive.nonEmbedding) + hundredths(pythia.lora)).toBe(48);
  });
});

describe('countRelaxedParams', () => {
  it('puts one module per depth position on every projection', () => {
    const c = countRelaxedParams(GEMMA, CYCLE(18, 2), { rank: 64 });
    expect(c.depthPositions).toBe(18);
    expect(c.modules.map((m) => [m.target, m.dIn, m.dOut, m.rank, m.params])).toEqual([
      ['q', 2048, 2048, 64, 64 * 4096],
      ['k', 2048, 256, 64, 64 * 2304],
      ['v', 2048, 256, 64, 64 * 2304],
      ['o', 2048, 2048, 64, 64 * 4096],
      ['gate', 2048, 16384, 64, 64 * 18432],
      ['up', 2048, 16384, 64, 64 * 18432],
      ['down', 16384, 2048, 64, 64 * 18432],
    ]);
    expect(c.loraPerDepth).toBe(4_358_144);
    expect(c.lora).toBe(18 * 4_358_144);
    expect(c.nonEmbedding).toBe(c.recursive.nonEmbedding + c.lora);
    expect(c.total).toBe(c.recursive.total + c.lora);
    expect(c.embedding).toBe(c.recursive.embedding);
  });

  it('rank 0 is the plain recursive model', () => {
    const c = countRelaxedParams(TINYLLAMA, CYCLE(22, 2), { rank: 0 });
    expect(c.lora).toBe(0);
    expect(c.total).toBe(countRecursiveParams(TINYLLAMA, CYCLE(22, 2)).total);
  });

  it('per-depth bias deltas: L x the rows of targets with a bias or a LayerNorm input; none for llama and gemma', () => {
    const off = countRelaxedParams(PYTHIA, CYCLE(16, 2), { rank: 64 });
    const on = countRelaxedParams(PYTHIA, CYCLE(16, 2), { rank: 64, biases: true });
    expect(off.depthBiases).toBe(0);
    // q, k, v (3 x 2048), o (2048), up (8192), down (2048) at each of 16 depth positions.
    expect(on.depthBiases).toBe(16 * (3 * 2048 + 2048 + 8192 + 2048));
    expect(on.nonEmbedding - off.nonEmbedding).toBe(on.depthBiases);
    expect(on.total - off.total).toBe(on.depthBiases);
    expect(countRelaxedParams(PYTHIA, CYCLE(16, 2), { rank: 64, biases: true, targets: ['q', 'down'] }).depthBiases).toBe(16 * (2048 + 2048));
    expect(countRelaxedParams(TINYLLAMA, CYCLE(22, 2), { rank: 64, biases: true }).depthBiases).toBe(0);
    expect(countRelaxedParams(GEMMA, CYCLE(18, 2), { rank: 64, biases: true }).depthBiases).toBe(0);
  });

  it('skips gate where the MLP is not gated and refuses it when asked for', () => {
    const c = countRelaxedParams(PYTHIA, CYCLE(16, 2), { rank: 8 });
    expect(c.modules.map((m) => m.target)).toEqual(['q', 'k', 'v', 'o', 'up', 'down']);
    expect(() => countRelaxedParams(PYTHIA, CYCLE(16, 2), { rank: 8, targets: ['q', 'gate'] })).toThrow(
      /target\(s\) gate do not exist in a gpt_neox block \(its MLP is not gated\); available: q, k, v, o, up, down/,
    );
    expect(() => countRelaxedParams(PYTHIA, CYCLE(16, 2), { rank: 8, targets: ['q', 'q'] })).toThrow(/twice/);
    expect(DEFAULT_LORA_TARGETS).toEqual(['q', 'k', 'v', 'o', 'gate', 'up', 'down']);
  });

  it('counts only the chosen targets', () => {
    const c = countRelaxedParams(TINYLLAMA, CYCLE(22, 2), { rank: 16, targets: ['q', 'v'] });
    expect(c.loraPerDepth).toBe(16 * 4096 + 16 * 2304);
  });

  it('applies separate attention and MLP ranks', () => {
    const c = countRelaxedParams(GEMMA, CYCLE(18, 2), { rank: 64, rankPattern: { mlp: 8 } });
    expect(c.modules.map((m) => m.rank)).toEqual([64, 64, 64, 64, 8, 8, 8]);
    const d = countRelaxedParams(GEMMA, CYCLE(18, 2), { rank: 64, rankPattern: { attention: 512, mlp: 0 } });
    expect(d.modules.map((m) => m.rank)).toEqual([512, 256, 256, 512, 0, 0, 0]);
    expect(d.loraPerDepth).toBe(512 * 4096 * 2 + 256 * 2304 * 2);
  });

  it('caps rank at min(dIn, dOut) per matrix', () => {
    expect(loraParams(2048, 256, 512)).toBe(256 * 2304);
    expect(loraParams(10, 20, 3)).toBe(90);
    const tiny = defineConfig('llama', { hiddenSize: 16, numHeads: 2, numKvHeads: 1, intermediateSize: 32, numLayers: 2 });
    // At a rank beyond every dimension the module is full rank: min(dIn, dOut) * (dIn + dOut).
    const c = countRelaxedParams(tiny, CYCLE(2, 2), { rank: 10_000 });
    expect(c.modules.map((m) => m.rank)).toEqual([16, 8, 8, 16, 16, 16, 16]);
  });

  it('works with any depth map', () => {
    const c = countRelaxedParams(GEMMA, MIDDLE_CYCLE(18, 2), { rank: 64 });
    expect(c.recursive.sharedLayers).toBe(10);
    expect(c.lora).toBe(18 * 4_358_144);
  });

  it('rejects bad ranks', () => {
    expect(() => countRelaxedParams(GEMMA, CYCLE(18, 2), { rank: -1 })).toThrow(/rank must be a non-negative integer, got -1/);
    expect(() => countRelaxedParams(GEMMA, CYCLE(18, 2), { rank: 1.5 })).toThrow(RrtError);
    expect(() => countRelaxedParams(GEMMA, CYCLE(18, 2), { rank: 8, rankPattern: { mlp: Number.NaN } })).toThrow(/rankPattern\.mlp/);
  });

  it('LoRA grows linearly in rank below the caps (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 256 }), fc.integer({ min: 1, max: 3 }), (rank, loops) => {
        const cfg = defineConfig('gpt_neox', { hiddenSize: 256, numHeads: 4, intermediateSize: 1024, numLayers: 6 });
        const c = countRelaxedParams(cfg, CYCLE(6, loops), { rank });
        // q, k, v, o: 256 -> 256; up 256 -> 1024; down 1024 -> 256.
        expect(c.lora).toBe(6 * rank * (4 * 512 + 2 * 1280));
      }),
    );
  });
});
