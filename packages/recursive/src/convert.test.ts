import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RrtError, crossEntropy, reshape, tidy } from '@rrt/tensor';
import { loadPretrained, type CausalLM } from '@rrt/layers';
import { CYCLE, MIDDLE_CYCLE, SEQUENCE, withTie } from './schemes.js';
import { average, lower } from './init.js';
import { toRecursive } from './convert.js';
import { RecursiveLM } from './model.js';
import { exportUnrolled } from './io.js';
import { countRecursiveParams } from './params.js';
import { FAMILIES, blockValues, depthValues, loadFixture, logitsOf, maxAbsDiff, randomModel, someIds } from './testing.test-util.js';

const tmp = (name: string) => mkdtempSync(join(tmpdir(), `rrt-recursive-${name}-`));

describe.each(FAMILIES)('%s fixture', (family) => {
  const src = loadFixture(family);
  const ids = someIds(2, 5, src.cfg.vocabSize);

  it('1 loop reproduces the original logits exactly', () => {
    const { model } = toRecursive(src, { loops: 1 });
    expect(model.blocks).toHaveLength(src.depth);
    expect(logitsOf(model, ids, [2, 5])).toEqual(logitsOf(src, ids, [2, 5]));
    model.dispose();
  });

  it('2 loops: one shared block, residuals, unrolled export reloads with identical logits', () => {
    const { model, residuals } = toRecursive(src, { loops: 2, init: average });
    expect(model).toBeInstanceOf(RecursiveLM);
    expect(model.blocks).toHaveLength(1);
    expect(model.schedule).toEqual([0, 0]);
    expect(model.recursion).toMatchObject({ scheme: 'CYCLE', init: 'average', loops: 2, depthMap: [0, 0], sourceLayers: [0, 1] });
    expect(model.recursion.sourceConfig).toBe(src.cfg);
    const counts = model.parameterCounts();
    expect(counts.total).toBe(src.numParameters());
    expect(counts.unique).toBe(src.numParameters() - counts.uniqueBlocks);
    expect(counts.unique).toBe(countRecursiveParams(model.cfg, model.depthMap).total);
    // W_shared + R(depth) = W_original(depth), for every block parameter.
    for (const path of src.blocks[0].namedParameters().keys()) {
      for (let d = 0; d < 2; d++) {
        const r = residuals(d, path);
        const shared = depthValues(model, d, path);
        const orig = blockValues(src, d, path);
        expect(r.shape).toEqual(src.blocks[d].namedParameters().get(path)!.shape);
        expect(maxAbsDiff(shared.map((v, i) => v + r.data[i]), orig)).toBeLessThan(1e-6);
      }
    }
    const dir = tmp(family);
    exportUnrolled(model, dir);
    const again = loadPretrained(dir, { backend: src.embed.weight.backend });
    expect(again.depth).toBe(2);
    expect(again.blocks).toHaveLength(2);
    expect(logitsOf(again, ids, [2, 5])).toEqual(logitsOf(model, ids, [2, 5]));
    again.dispose();
    model.dispose();
  });
});

describe('toRecursive', () => {
  it('names L, the loops and the valid loop counts when L is not divisible', () => {
    const src = randomModel('llama', 4);
    let err: Error | null = null;
    try {
      toRecursive(src, { loops: 3 });
    } catch (e) {
      err = e as Error;
    }
    expect(err).toBeInstanceOf(RrtError);
    expect(err!.message).toContain('L = 4');
    expect(err!.message).toContain('3 loops');
    expect(err!.message).toContain('valid loop counts for L = 4: 1, 2, 4');
    expect(err!.message).toContain("sourceLayers: 'evenly-spaced'");
    expect(() => toRecursive(src, { loops: 0 })).toThrow(/loops must be a positive integer, got 0/);
    expect(() => toRecursive(src, { loops: 2, sourceLayers: [0, 0] })).toThrow(/ascending distinct layer indices in \[0, 4\)/);
  });

  it("sourceLayers 'evenly-spaced' keeps round(linspace(0, L - 1, L')) and the depth shrinks to L'", () => {
    const src = randomModel('llama', 5);
    const { model, residuals } = toRecursive(src, { loops: 2, sourceLayers: 'evenly-spaced', init: lower });
    // linspace(0, 4, 4) = 0, 1.33, 2.67, 4.
    expect(model.recursion.sourceLayers).toEqual([0, 1, 3, 4]);
    expect(model.depth).toBe(4);
    expect(model.cfg.numLayers).toBe(4);
    expect(model.recursion.sourceConfig.numLayers).toBe(5);
    expect(blockValues(model, 1, 'mlp.up.weight')).toEqual(blockValues(src, 1, 'mlp.up.weight'));
    // Depth 2 runs block 0 (= layer 0) and was converted from layer 3.
    const r = residuals(2, 'mlp.up.weight');
    const want = blockValues(src, 3, 'mlp.up.weight').map((v, i) => v - blockValues(src, 0, 'mlp.up.weight')[i]);
    expect(maxAbsDiff(r.data, want)).toBe(0);
    expect(() => residuals(4, 'mlp.up.weight')).toThrow(/depth 4 is outside \[0, 4\)/);
    expect(() => residuals(0, 'mlp.nope.weight')).toThrow(/no block parameter "mlp.nope.weight"/);
    const explicit = toRecursive(src, { loops: 2, sourceLayers: [1, 2, 3, 4] }).model;
    expect(explicit.recursion.sourceLayers).toEqual([1, 2, 3, 4]);
    model.dispose();
    explicit.dispose();
  });

  it.each(FAMILIES)('%s: evenly spaced selection writes a config of the new depth that stock loaders read', (family) => {
    const src = randomModel(family, 5, 3);
    const { model } = toRecursive(src, { loops: 2, sourceLayers: 'evenly-spaced' });
    expect(model.cfg.numLayers).toBe(4);
    const dir = tmp(`select-${family}`);
    exportUnrolled(model, dir);
    const plain = loadPretrained(dir, { backend: src.embed.weight.backend });
    expect(plain.cfg.numLayers).toBe(4);
    const ids = someIds(1, 4, src.cfg.vocabSize);
    expect(logitsOf(plain, ids, [1, 4])).toEqual(logitsOf(model, ids, [1, 4]));
    for (const m of [src, model, plain]) m.dispose();
  });

  it('copies every weight: the converted model does not alias the source', () => {
    const src = randomModel('gpt2', 2);
    const { model } = toRecursive(src, { loops: 1 });
    const srcTensors = new Set(src.parameters());
    expect(model.parameters().some((t) => srcTensors.has(t))).toBe(false);
    model.dispose();
  });

  it('MIDDLE_CYCLE and SEQUENCE build K blocks along their depth maps', () => {
    const src = randomModel('llama', 6);
    const mid = toRecursive(src, { loops: 2, scheme: MIDDLE_CYCLE }).model;
    expect(mid.schedule).toEqual([0, 1, 2, 1, 2, 3]);
    expect(mid.blocks).toHaveLength(4);
    expect(blockValues(mid, 0, 'attn.o.weight')).toEqual(blockValues(src, 0, 'attn.o.weight'));
    expect(blockValues(mid, 3, 'attn.o.weight')).toEqual(blockValues(src, 5, 'attn.o.weight'));
    const seq = toRecursive(src, { loops: 3, scheme: SEQUENCE }).model;
    expect(seq.schedule).toEqual([0, 0, 0, 1, 1, 1]);
    expect(seq.depthsOf(1)).toEqual([3, 4, 5]);
    expect(seq.sharedLayerIndex(4)).toBe(1);
    mid.dispose();
    seq.dispose();
  });
});

/** Loss of a fixed batch; gradients accumulate into .grad. */
function backprop(model: CausalLM, ids: number[], B: number, T: number): void {
  tidy(() => {
    const { logits } = model.forward(ids, [B, T]);
    const targets = ids.map((_, i) => ((i + 1) % T === 0 ? -100 : ids[i + 1]));
    crossEntropy(reshape(logits, [B * T, -1]), targets).backward();
  });
}

describe('gradients of tied weights', () => {
  it('equal the sum of the per-depth gradients of the unrolled copy (every family, CYCLE and SEQUENCE)', () => {
    for (const family of FAMILIES) {
      for (const scheme of [CYCLE, SEQUENCE]) {
        const src = randomModel(family, 4, 7);
        const { model } = toRecursive(src, { loops: 2, scheme, init: average });
        const dir = tmp(`grad-${family}`);
        exportUnrolled(model, dir);
        const unrolled = loadPretrained(dir, { backend: src.embed.weight.backend });
        const ids = someIds(2, 4, src.cfg.vocabSize, 11);
        backprop(model, ids, 2, 4);
        backprop(unrolled, ids, 2, 4);
        for (let k = 0; k < model.blocks.length; k++) {
          for (const [path, t] of model.blocks[k].namedParameters()) {
            const depths = model.depthsOf(k);
            expect(depths).toHaveLength(2);
            const sum = new Float32Array(t.size);
            for (const d of depths) unrolled.blocks[d].namedParameters().get(path)!.grad!.dataSync().forEach((g, i) => (sum[i] += g));
            const got = t.grad!.dataSync();
            const scale = Math.max(1e-6, ...sum.map(Math.abs));
            expect(maxAbsDiff(got, sum) / scale, `${family} ${scheme.name} block ${k} ${path}`).toBeLessThan(1e-5);
          }
        }
        for (const path of ['embed.weight', 'norm.weight']) {
          const a = model.namedParameters().get(path)!.grad!.dataSync(), b = unrolled.namedParameters().get(path)!.grad!.dataSync();
          expect(maxAbsDiff(a, b) / Math.max(1e-6, ...b.map(Math.abs))).toBeLessThan(1e-5);
        }
        for (const m of [src, model, unrolled]) m.dispose();
      }
    }
  });
});

describe('a custom scheme that ties only the MLPs', () => {
  const mlpOnly = withTie(CYCLE, (p) => p.startsWith('mlp.'), 'CYCLE-mlp');

  it('keeps attention and norms per depth, shares the MLP tensors, sums their gradients', () => {
    const src = randomModel('llama', 4, 5);
    const { model, residuals } = toRecursive(src, { loops: 2, scheme: mlpOnly, init: average });
    expect(model.partiallyTied).toBe(true);
    expect(model.recursion.untiedPaths).toEqual(['ln1.weight', 'attn.q.weight', 'attn.k.weight', 'attn.v.weight', 'attn.o.weight', 'ln2.weight']);
    expect(model.blocks).toHaveLength(4);
    expect(model.schedule).toEqual([0, 1, 2, 3]);
    expect(model.depthMap).toEqual([0, 1, 0, 1]);
    expect(model.sharedLayers).toBe(2);
    const p = (d: number, path: string) => model.blocks[d].namedParameters().get(path)!;
    expect(p(2, 'mlp.up.weight')).toBe(p(0, 'mlp.up.weight'));
    expect(p(3, 'mlp.down.weight')).toBe(p(1, 'mlp.down.weight'));
    expect(p(2, 'attn.q.weight')).not.toBe(p(0, 'attn.q.weight'));
    for (let d = 0; d < 4; d++) expect(depthValues(model, d, 'attn.q.weight')).toEqual(blockValues(src, d, 'attn.q.weight'));
    expect(maxAbsDiff(residuals(1, 'attn.v.weight').data, new Float32Array(p(1, 'attn.v.weight').size))).toBe(0);
    // Unique parameters: 2 MLPs + 4 attentions and norms; total as the original.
    const counts = model.parameterCounts();
    const mlp = [...src.blocks[0].namedParameters()].filter(([k]) => k.startsWith('mlp.')).reduce((s, [, t]) => s + t.size, 0);
    expect(counts.total).toBe(src.numParameters());
    expect(counts.unique).toBe(src.numParameters() - 2 * mlp);
    expect(model.numParameters()).toBe(counts.unique);

    const ids = someIds(2, 4, src.cfg.vocabSize, 2);
    const dir = tmp('mlp-only');
    exportUnrolled(model, dir);
    const unrolled = loadPretrained(dir, { backend: src.embed.weight.backend });
    expect(logitsOf(unrolled, ids, [2, 4])).toEqual(logitsOf(model, ids, [2, 4]));
    backprop(model, ids, 2, 4);
    backprop(unrolled, ids, 2, 4);
    const grad = (m: CausalLM, d: number, path: string) => m.blocks[d].namedParameters().get(path)!.grad!.dataSync();
    const sum = grad(unrolled, 0, 'mlp.gate.weight').map((g, i) => g + grad(unrolled, 2, 'mlp.gate.weight')[i]);
    expect(maxAbsDiff(grad(model, 0, 'mlp.gate.weight'), sum) / Math.max(...sum.map(Math.abs))).toBeLessThan(1e-5);
    expect(maxAbsDiff(grad(model, 3, 'attn.k.weight'), grad(unrolled, 3, 'attn.k.weight'))).toBeLessThan(1e-6);
    for (const m of [src, model, unrolled]) m.dispose();
  });
});
