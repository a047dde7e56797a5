// Whole-model equivalence with Hugging Face transformers: logits, per-block hidden states and
// the gradient of every parameter, against fixtures computed with PyTorch (test/fixtures).

import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { availableBackends, crossEntropy, narrow, reshape, tidy } from '@rrt/tensor';
import { SafetensorsFile } from '@rrt/tensor/node';
import { hfNamedParameters, loadPretrained, savePretrained } from './checkpoint.js';

const fixtures = join(import.meta.dirname, '..', 'test', 'fixtures');
interface Arr { shape: number[]; data: number[] }
interface Expected { input_ids: Arr; logits: Arr; loss: number; hidden: { blocks: Arr[] }; grads: Record<string, Arr> }

function maxRelErr(got: ArrayLike<number>, want: number[]): number {
  let scale = 0;
  for (const w of want) scale = Math.max(scale, Math.abs(w));
  let err = 0;
  for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
  return err / Math.max(scale, 1e-6);
}

const families = ['llama', 'llama-sharded', 'gemma', 'gpt_neox', 'gpt2'];

describe.each(availableBackends().map((b) => [b.name, b] as const))('pretrained checkpoints on %s', (_n, backend) => {
  for (const family of families) {
    it(`${family}: logits, hidden states, loss and every gradient match PyTorch`, () => {
      const dir = join(fixtures, family);
      const exp: Expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
      const model = loadPretrained(dir, { backend });
      const [B, T] = exp.input_ids.shape;
      const ids = exp.input_ids.data;
      tidy(() => {
        const { logits, hidden } = model.forward(ids, [B, T], { hidden: true });
        expect(maxRelErr(logits.dataSync(), exp.logits.data)).toBeLessThan(1e-5);
        exp.hidden.blocks.forEach((h, i) => {
          const row0 = narrow(hidden![i + 1], 0, 0, 1).dataSync();
          expect(maxRelErr(row0, h.data)).toBeLessThan(1e-5);
        });
        // Next-token loss over positions 0..T-2.
        const targets: number[] = [];
        for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) targets.push(t < T - 1 ? ids[b * T + t + 1] : -100);
        const loss = crossEntropy(reshape(logits, [B * T, -1]), targets);
        expect(loss.item()).toBeCloseTo(exp.loss, 5);
        loss.backward();
      });
      const named = hfNamedParameters(model);
      expect(new Set(named.keys())).toEqual(new Set(Object.keys(exp.grads)));
      for (const [name, t] of named) {
        const want = exp.grads[name];
        let got = t.grad!.dataSync();
        if (family === 'gpt2' && /c_attn|c_proj|c_fc/.test(name) && name.endsWith('weight')) {
          // Conv1D: the checkpoint (and the fixture) is [in, out]; we hold [out, in].
          const [o, i] = t.shape;
          const tr = new Float32Array(got.length);
          for (let r = 0; r < o; r++) for (let c = 0; c < i; c++) tr[c * o + r] = got[r * i + c];
          got = tr;
        }
        expect(maxRelErr(got, want.data), name).toBeLessThan(1e-4);
      }
      model.dispose();
    });
  }
});

describe('savePretrained', () => {
  it('round trip is bit-exact for every family', () => {
    for (const family of ['llama', 'gemma', 'gpt_neox', 'gpt2']) {
      const src = join(fixtures, family);
      const model = loadPretrained(src);
      const out = mkdtempSync(join(tmpdir(), `rrt-${family}-`));
      savePretrained(model, out);
      const a = SafetensorsFile.open(join(src, 'model.safetensors'));
      const b = SafetensorsFile.open(join(out, 'model.safetensors'));
      expect(new Set(b.names())).toEqual(new Set(a.names()));
      for (const name of a.names()) {
        const x = a.read(name), y = b.read(name);
        expect(y.shape).toEqual(x.shape);
        expect(Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength).equals(Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength))).toBe(true);
      }
      a.close();
      b.close();
      const again = loadPretrained(out);
      expect(again.cfg).toEqual(model.cfg);
      model.dispose();
      again.dispose();
    }
  });
});

describe('checkpoint errors', () => {
  it('names the tensor, expected and actual shape', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-bad-'));
    cpSync(join(fixtures, 'llama'), dir, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    cfg.intermediate_size += 1;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    expect(() => loadPretrained(dir)).toThrow(/model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[48,32\], expected \[49,32\]/);
  });
  it('names a missing tensor', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-missing-'));
    cpSync(join(fixtures, 'llama'), dir, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    cfg.num_hidden_layers = 3;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    expect(() => loadPretrained(dir)).toThrow(/model\.layers\.2\.\S+" is missing/);
  });
  it('an unknown architecture names the file and key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-arch-'));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'mamba', architectures: ['MambaForCausalLM'] }));
    expect(() => loadPretrained(dir)).toThrow(/config\.json/);
  });
  it('an index cannot point outside the folder', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-index-'));
    cpSync(join(fixtures, 'llama-sharded'), dir, { recursive: true });
    const idx = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    const first = Object.keys(idx.weight_map)[0];
    idx.weight_map[first] = '../../etc/passwd';
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(idx));
    expect(() => loadPretrained(dir)).toThrow(/must be a file name inside the folder/);
  });
});
