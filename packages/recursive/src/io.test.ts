import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '@rrt/tensor/node';
import { loadPretrained } from '@rrt/layers';
import { CYCLE, MIDDLE_SEQUENCE, withTie } from './schemes.js';
import { stepwise } from './init.js';
import { toRecursive } from './convert.js';
import { RecursiveLM } from './model.js';
import { RECURSIVE_JSON, exportUnrolled, loadRecursive, saveRecursive } from './io.js';
import { FAMILIES, fixtureDir, logitsOf, randomModel, someIds, testBackend } from './testing.test-util.js';

const backend = testBackend();

const tmp = (name: string) => mkdtempSync(join(tmpdir(), `rrt-recursive-io-${name}-`));

describe('saveRecursive / loadRecursive', () => {
  it.each(FAMILIES)('%s: a saved recursive model reloads as recursive with identical logits', (family) => {
    const src = randomModel(family, 6);
    const { model } = toRecursive(src, { loops: 2, scheme: MIDDLE_SEQUENCE });
    const dir = tmp(family);
    saveRecursive(model, dir);
    expect(existsSync(join(dir, 'config.json'))).toBe(false);
    const json = JSON.parse(readFileSync(join(dir, RECURSIVE_JSON), 'utf8'));
    expect(json).toMatchObject({ format: 'rrt-recursive', version: 1, scheme: 'MIDDLE_SEQUENCE', init: 'stepwise', norms: 'follow', loops: 2, depthMap: [0, 1, 1, 2, 2, 3], sourceLayers: [0, 1, 2, 3, 4, 5], untiedPaths: [] });
    // Shared weights are stored once: 4 blocks, not 6.
    const file = SafetensorsFile.open(join(dir, 'model.safetensors'));
    const blockIds = new Set(file.names().filter((n) => n.startsWith('blocks.')).map((n) => n.split('.')[1]));
    file.close();
    expect([...blockIds].sort()).toEqual(['0', '1', '2', '3']);
    const again = loadRecursive(dir, { backend: src.embed.weight.backend });
    expect(again).toBeInstanceOf(RecursiveLM);
    expect(again.recursion).toEqual(model.recursion);
    expect(again.schedule).toEqual(model.schedule);
    expect(again.cfg).toEqual(model.cfg);
    const ids = someIds(2, 6, src.cfg.vocabSize);
    expect(logitsOf(again, ids, [2, 6])).toEqual(logitsOf(model, ids, [2, 6]));
    expect(again.parameterCounts()).toEqual(model.parameterCounts());
    for (const m of [src, model, again]) m.dispose();
  });

  it('keeps partial ties: tied tensors are stored once and shared again after loading', () => {
    const src = randomModel('gpt_neox', 4);
    const { model } = toRecursive(src, { loops: 2, scheme: withTie(CYCLE, (p) => !p.startsWith('ln'), 'CYCLE-no-norms') });
    const dir = tmp('partial');
    saveRecursive(model, dir);
    const file = SafetensorsFile.open(join(dir, 'model.safetensors'));
    const names = file.names();
    file.close();
    expect(names).toContain('blocks.3.ln1.weight');
    expect(names).toContain('blocks.1.attn.qkv.weight');
    expect(names).not.toContain('blocks.3.attn.qkv.weight');
    const again = loadRecursive(dir, { backend });
    expect(again.recursion.untiedPaths).toEqual(['ln1.weight', 'ln1.bias', 'ln2.weight', 'ln2.bias']);
    const t = (d: number, p: string) => again.blocks[d].namedParameters().get(p)!;
    expect(t(3, 'attn.qkv.weight')).toBe(t(1, 'attn.qkv.weight'));
    expect(t(3, 'ln1.weight')).not.toBe(t(1, 'ln1.weight'));
    const ids = someIds(1, 5, src.cfg.vocabSize);
    expect(logitsOf(again, ids, [1, 5])).toEqual(logitsOf(model, ids, [1, 5]));
    for (const m of [src, model, again]) m.dispose();
  });

  it('refuses a plain checkpoint and a damaged recursive.json with actionable messages', () => {
    expect(() => loadRecursive(fixtureDir('llama'), { backend })).toThrow(/no recursive\.json; not a recursive checkpoint \(it has a config\.json: load it with loadPretrained/);
    const src = randomModel('llama', 2);
    const { model } = toRecursive(src, { loops: 2 });
    const dir = tmp('bad');
    saveRecursive(model, dir);
    const path = join(dir, RECURSIVE_JSON);
    const json = JSON.parse(readFileSync(path, 'utf8'));
    writeFileSync(path, JSON.stringify({ ...json, loops: 0 }));
    expect(() => loadRecursive(dir, { backend })).toThrow(/"loops" must be a positive integer, found 0/);
    writeFileSync(path, JSON.stringify({ ...json, depthMap: [0, 1] }));
    expect(() => loadRecursive(dir, { backend })).toThrow(/shared blocks|tensor "blocks\.1\./);
    writeFileSync(path, '{');
    expect(() => loadRecursive(dir, { backend })).toThrow(/not valid JSON/);
    model.dispose();
  });
});

describe('exportUnrolled', () => {
  it('writes a plain checkpoint of the family that stock loaders read: L layers, config num_hidden_layers = L', () => {
    const src = randomModel('gpt2', 4);
    const { model } = toRecursive(src, { loops: 2, init: stepwise });
    const dir = tmp('unrolled');
    exportUnrolled(model, dir);
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    expect(cfg.model_type).toBe('gpt2');
    expect(cfg.n_layer).toBe(4);
    const file = SafetensorsFile.open(join(dir, 'model.safetensors'));
    // GPT-2's Conv1D weights are stored [in, out]; depth 2 runs block 0.
    const a = file.read('transformer.h.0.mlp.c_fc.weight'), b = file.read('transformer.h.2.mlp.c_fc.weight');
    file.close();
    expect(a.shape).toEqual([16, 64]);
    expect(b.data).toEqual(a.data);
    const plain = loadPretrained(dir, { backend });
    expect(plain).not.toBeInstanceOf(RecursiveLM);
    expect(plain.blocks).toHaveLength(4);
    const ids = someIds(2, 3, src.cfg.vocabSize);
    expect(logitsOf(plain, ids, [2, 3])).toEqual(logitsOf(model, ids, [2, 3]));
    // Re-converting the unrolled export with 1 loop gives the same model again.
    const round = toRecursive(plain, { loops: 1 }).model;
    expect(logitsOf(round, ids, [2, 3])).toEqual(logitsOf(model, ids, [2, 3]));
    for (const m of [src, model, plain, round]) m.dispose();
  });
});
