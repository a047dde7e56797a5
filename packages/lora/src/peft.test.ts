// PEFT adapter files: what they hold (checked against PEFT's own semantics, independently of
// loadAdapters), round trips onto the recursive and the unrolled model, and strict validation.

import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FormatError, RrtError, ShapeError, serializeSafetensors, type F32Tensor } from '@rrt/tensor';
import { SafetensorsFile } from '@rrt/tensor/node';
import { hfName, isTransposedInCheckpoint, loadPretrained, type ModelFamily } from '@rrt/layers';
import { exportUnrolled, toRecursive, writeValues } from '@rrt/recursive';
import { addLora } from './adapter.js';
import { loadAdapters, saveAdapters } from './peft.js';
import { relax } from './relax.js';
import { linearAt } from './targets.js';
import { FAMILIES, loadFixture, logitsOf, maxAbs, maxAbsDiff, someIds } from './testing.test-util.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'rrt-lora-'));

const EXPECTED_TARGETS: Record<ModelFamily, string[]> = {
  llama: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  gemma: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  gpt_neox: ['query_key_value', 'dense', 'dense_h_to_4h', 'dense_4h_to_h'],
  gpt2: ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'],
};

function readAll(path: string): Map<string, F32Tensor> {
  const f = SafetensorsFile.open(path);
  try {
    return new Map(f.names().map((n) => [n, f.read(n)]));
  } finally {
    f.close();
  }
}

/** PEFT's scaling of a module: alpha_pattern / rank_pattern by suffix, else lora_alpha / r. */
function peftScaling(cfg: Record<string, unknown>, module: string): number {
  const pick = (pattern: Record<string, number>, dflt: number) => {
    for (const [k, v] of Object.entries(pattern)) if (module === k || module.endsWith(`.${k}`)) return v;
    return dflt;
  };
  return pick(cfg.alpha_pattern as Record<string, number>, cfg.lora_alpha as number) / pick(cfg.rank_pattern as Record<string, number>, cfg.r as number);
}

describe.each(FAMILIES)('%s: PEFT adapter files of a relaxed 2-loop model', (family) => {
  const original = loadFixture(family);
  const ids = someIds(2, 6, original.cfg.vocabSize);

  it('hold PEFT names, shapes and config; B A * scaling is each layer\'s delta in the unrolled base', () => {
    const { model, residuals } = toRecursive(original, { loops: 2 });
    const lora = relax(model, { rank: 3, init: 'svd', residuals, alpha: 6 });
    const dir = tmp();
    exportUnrolled(model, dir);
    saveAdapters(lora, dir);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: dir, layers_to_transform: [0, 1], fan_in_fan_out: family === 'gpt2', bias: 'none',
    });
    expect(cfg.target_modules).toEqual(EXPECTED_TARGETS[family]);
    const tensors = readAll(join(dir, 'adapter_model.safetensors'));
    const base = readAll(join(dir, 'model.safetensors'));
    const unrolled = lora.mergeUnrolled();
    const fused = family === 'gpt_neox' || family === 'gpt2';
    expect(tensors.size).toBe(2 * 2 * (fused ? 4 : 7));
    for (let layer = 0; layer < 2; layer++) {
      for (const [path, lin] of [...unrolled.blocks[layer].namedParameters()].filter(([p]) => /^(attn|mlp)\.\w+\.weight$/.test(p))) {
        const module = hfName(family, `blocks.${layer}.${path}`).replace(/\.weight$/, '');
        const A = tensors.get(`base_model.model.${module}.lora_A.weight`)!;
        const B = tensors.get(`base_model.model.${module}.lora_B.weight`)!;
        const [out, inF] = lin.shape;
        const r = path === 'attn.qkv.weight' ? 9 : 3;
        expect([A.shape, B.shape]).toEqual([[r, inF], [out, r]]);
        const s = peftScaling(cfg, module);
        // PEFT merges W += s * B A (transposed for GPT-2's Conv1D, which stores W as [in, out]).
        const w0 = base.get(hfName(family, `blocks.${layer}.${path}`))!;
        const transposed = isTransposedInCheckpoint(family, `blocks.${layer}.${path}`);
        const merged = lin.dataSync();
        let worst = 0;
        for (let i = 0; i < out; i++) {
          for (let j = 0; j < inF; j++) {
            let d = 0;
            for (let t = 0; t < r; t++) d += B.data[i * r + t] * A.data[t * inF + j];
            const baseValue = transposed ? w0.data[j * out + i] : w0.data[i * inF + j];
            worst = Math.max(worst, Math.abs(baseValue + s * d - merged[i * inF + j]));
          }
        }
        expect(worst).toBeLessThan(1e-5);
      }
    }
  });

  it('load back onto the recursive model and onto the unrolled base: same logits', () => {
    const { model, residuals } = toRecursive(original, { loops: 2 });
    const lora = relax(model, { rank: 3, init: 'svd', residuals, rankPattern: { mlp: 2 } });
    const want = logitsOf(model, ids, [2, 6]);
    const dir = tmp();
    exportUnrolled(model, dir);
    saveAdapters(lora, dir);

    const again = toRecursive(original, { loops: 2 }).model;
    const loaded = loadAdapters(dir, again);
    expect(loaded.modules.map((m) => [m.depth, m.target, m.rank])).toEqual(lora.modules.map((m) => [m.depth, m.target, m.rank]));
    expect(maxAbsDiff(logitsOf(again, ids, [2, 6]), want)).toBeLessThan(1e-6 * maxAbs(want));
    expect(loaded.info).toMatchObject({ init: 'loaded', targets: lora.info.targets });

    const base = loadPretrained(dir, { backend: model.embed.weight.backend });
    loadAdapters(dir, base);
    expect(maxAbsDiff(logitsOf(base, ids, [2, 6]), want)).toBeLessThan(2e-5 * maxAbs(want));
  });

  it('a fused qkv adapter written by another tool (no split recorded) loads exactly', () => {
    const { model, residuals } = toRecursive(original, { loops: 2 });
    const lora = relax(model, { rank: 2, init: 'svd', residuals, targets: ['q', 'v', 'o'] });
    const want = logitsOf(model, ids, [2, 6]);
    const dir = tmp();
    saveAdapters(lora, dir);
    const file = join(dir, 'adapter_model.safetensors');
    writeFileSync(file, serializeSafetensors([...readAll(file)], { format: 'pt' }));
    const again = toRecursive(original, { loops: 2 }).model;
    loadAdapters(dir, again);
    expect(maxAbsDiff(logitsOf(again, ids, [2, 6]), want)).toBeLessThan(1e-5 * maxAbs(want));
  });
});

describe.each(['gpt_neox', 'gpt2'] as const)('%s: per-depth bias deltas', (family) => {
  it('are refused by saveAdapters (the PEFT layout cannot hold them) instead of being dropped', () => {
    const { model, residuals } = toRecursive(loadFixture(family), { loops: 2 });
    const lora = relax(model, { rank: 2, init: 'svd', residuals, biases: true });
    expect(lora.biases.length).toBeGreaterThan(0);
    expect(() => saveAdapters(lora, tmp())).toThrow(/per-depth bias deltas.*mergeUnrolled/);
  });
});

describe('rank and alpha patterns', () => {
  it('gemma at r = 20: k and v are capped at 16 and say so in rank_pattern; the round trip keeps the ranks', () => {
    const original = loadFixture('gemma');
    const { model, residuals } = toRecursive(original, { loops: 2 });
    const lora = relax(model, { rank: 20, init: 'svd', residuals });
    const dir = tmp();
    saveAdapters(lora, dir);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ r: 20, lora_alpha: 20, rank_pattern: { k_proj: 16, v_proj: 16 }, alpha_pattern: { k_proj: 16, v_proj: 16 } });
    const again = toRecursive(original, { loops: 2 }).model;
    const loaded = loadAdapters(dir, again);
    expect(loaded.modules.map((m) => m.rank)).toEqual(lora.modules.map((m) => m.rank));
    const ids = someIds(1, 5, 48);
    expect(maxAbsDiff(logitsOf(again, ids, [1, 5]), logitsOf(model, ids, [1, 5]))).toBeLessThan(1e-5);
  });

  it('ordinary LoRA (addLora) on a plain model round-trips too', () => {
    const model = loadFixture('llama');
    const set = addLora(model, { rank: 2, alpha: 4, targets: ['q', 'down'] });
    for (const a of set.adapters) writeValues(a.adapter.B, Float32Array.from({ length: a.adapter.B.size }, (_, i) => Math.sin(i + a.block)));
    const ids = someIds(1, 5, 48);
    const want = logitsOf(model, ids, [1, 5]);
    const dir = tmp();
    saveAdapters(set, dir, { baseModel: 'fixtures/llama' });
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ r: 2, lora_alpha: 4, target_modules: ['q_proj', 'down_proj'], base_model_name_or_path: 'fixtures/llama' });
    const fresh = loadFixture('llama');
    const loaded = loadAdapters(dir, fresh);
    expect(loaded.modules.every((m) => m.scaling === 2)).toBe(true);
    expect(maxAbsDiff(logitsOf(fresh, ids, [1, 5]), want)).toBeLessThan(1e-5 * maxAbs(want));
  });
});

describe('strict validation', () => {
  const original = loadFixture('llama');
  const { model, residuals } = toRecursive(original, { loops: 2 });
  const lora = relax(model, { rank: 2, init: 'svd', residuals, targets: ['q', 'o'] });
  const good = tmp();
  saveAdapters(lora, good);
  const goodConfig = JSON.parse(readFileSync(join(good, 'adapter_config.json'), 'utf8'));
  const goodTensors = readAll(join(good, 'adapter_model.safetensors'));
  const fresh = () => toRecursive(original, { loops: 2 }).model;

  function folder(config: unknown, tensors: Map<string, F32Tensor> | Uint8Array = goodTensors): string {
    const dir = tmp();
    writeFileSync(join(dir, 'adapter_config.json'), typeof config === 'string' ? config : JSON.stringify(config));
    writeFileSync(join(dir, 'adapter_model.safetensors'), tensors instanceof Uint8Array ? tensors : serializeSafetensors([...tensors]));
    return dir;
  }
  const key = (layer: number, mod: string, ab: 'A' | 'B') => `base_model.model.model.layers.${layer}.self_attn.${mod}.lora_${ab}.weight`;

  it('the untouched folder loads', () => {
    expect(loadAdapters(folder(goodConfig), fresh()).modules).toHaveLength(4);
  });

  it('malformed or unsupported configs are FormatErrors', () => {
    expect(() => loadAdapters(folder('{"peft_type": "LORA",'), fresh())).toThrow(FormatError);
    expect(() => loadAdapters(folder({ ...goodConfig, peft_type: 'IA3' }), fresh())).toThrow(/peft_type/);
    expect(() => loadAdapters(folder({ ...goodConfig, r: 0 }), fresh())).toThrow(/"r"/);
    expect(() => loadAdapters(folder({ ...goodConfig, use_dora: true }), fresh())).toThrow(/use_dora/);
    expect(() => loadAdapters(folder({ ...goodConfig, target_modules: [] }), fresh())).toThrow(/target_modules/);
    expect(() => loadAdapters(folder({ ...goodConfig, layers_to_transform: [0, 5] }), fresh())).toThrow(/layer\(s\) 5/);
    expect(() => loadAdapters(folder({ ...goodConfig, r: 3 }), fresh())).toThrow(/rank 2, but adapter_config.json gives .* rank 3/);
  });

  it('tensors: unknown keys, missing halves, wrong shapes and truncated files name the problem', () => {
    const withExtra = new Map(goodTensors).set('base_model.model.model.layers.0.self_attn.q_proj.lora_embedding_A', { shape: [1], data: new Float32Array(1) });
    expect(() => loadAdapters(folder(goodConfig, withExtra), fresh())).toThrow(/lora_embedding_A/);
    const layer9 = new Map(goodTensors).set(key(9, 'q_proj', 'A'), goodTensors.get(key(0, 'q_proj', 'A'))!);
    expect(() => loadAdapters(folder(goodConfig, layer9), fresh())).toThrow(/layers\.9.*2 depth positions/);
    const noB = new Map(goodTensors);
    noB.delete(key(1, 'o_proj', 'B'));
    expect(() => loadAdapters(folder(goodConfig, noB), fresh())).toThrow(/o_proj" has lora_A but no lora_B/);
    const missing = new Map(goodTensors);
    missing.delete(key(1, 'o_proj', 'A'));
    missing.delete(key(1, 'o_proj', 'B'));
    expect(() => loadAdapters(folder(goodConfig, missing), fresh())).toThrow(/no LoRA weights for "model.layers.1.self_attn.o_proj"/);
    const badShape = new Map(goodTensors).set(key(0, 'q_proj', 'B'), { shape: [31, 2], data: new Float32Array(62) });
    expect(() => loadAdapters(folder(goodConfig, badShape), fresh())).toThrow(ShapeError);
    expect(() => loadAdapters(folder(goodConfig, badShape), fresh())).toThrow(/layers\.0\.self_attn\.q_proj\.lora_B\.weight" has shape \[31,2\], expected \[32,2\]/);
    const untargeted = new Map(goodTensors).set(key(0, 'k_proj', 'A'), goodTensors.get(key(0, 'q_proj', 'A'))!);
    expect(() => loadAdapters(folder(goodConfig, untargeted), fresh())).toThrow(/not selected by target_modules/);
    const bytes = serializeSafetensors([...goodTensors]);
    expect(() => loadAdapters(folder(goodConfig, bytes.subarray(0, bytes.length - 7)), fresh())).toThrow(FormatError);
  });

  it('missing files are reported', () => {
    expect(() => loadAdapters(tmp(), fresh())).toThrow(RrtError);
    const dir = tmp();
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(goodConfig));
    writeFileSync(join(dir, 'adapter_model.bin'), 'pickle');
    expect(() => loadAdapters(dir, fresh())).toThrow(/PyTorch pickle/);
  });

  it('merged adapters and empty handles are not saved', () => {
    const plain = loadFixture('llama');
    const set = addLora(plain, { rank: 1 });
    set.merge();
    expect(() => saveAdapters(set, tmp())).toThrow(/unmerge/);
    const none = relax(toRecursive(original, { loops: 2 }).model, { rank: 0, init: 'zero' });
    expect(() => saveAdapters(none, tmp())).toThrow(/nothing to save/);
  });

  it('targets the Linear the file names', () => {
    const again = fresh();
    const loaded = loadAdapters(good, again);
    expect(linearAt(again.blocks[0], 'attn.q').hooks).toHaveLength(1);
    expect(linearAt(again.blocks[0], 'attn.k').hooks).toHaveLength(0);
    loaded.remove();
    expect(linearAt(again.blocks[0], 'attn.q').hooks).toHaveLength(0);
  });
});
