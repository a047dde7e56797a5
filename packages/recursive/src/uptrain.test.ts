import { describe, expect, it } from 'vitest';
import { klDivergence, noGrad, tidy } from '@rrt/tensor';
import type { Batch, CausalLM } from '@rrt/layers';
import { CYCLE, withTie } from './schemes.js';
import { toRecursive } from './convert.js';
import { uptrain, uptrainLoss } from './uptrain.js';
import { randomModel, someIds } from './testing.test-util.js';

function batchesOf(n: number, B: number, T: number, vocab: number): Batch[] {
  return Array.from({ length: n }, (_, i) => {
    const seq = someIds(B, T + 1, vocab, 100 + i);
    const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        ids[b * T + t] = seq[b * (T + 1) + t];
        targets[b * T + t] = seq[b * (T + 1) + t + 1];
      }
    }
    return { ids, targets, shape: [B, T] as [number, number] };
  });
}

/** Mean forward KL(teacher || student) over the batches. */
function klTo(teacher: CausalLM, student: CausalLM, data: Batch[]): number {
  return noGrad(() => data.reduce((s, b) => s + tidy(() => klDivergence(student.forward(b.ids, b.shape).logits, teacher.forward(b.ids, b.shape).logits).item()), 0) / data.length);
}

const snapshot = (m: CausalLM) => new Map([...m.namedParameters()].map(([k, t]) => [k, t.dataSync()]));

describe('uptrain', () => {
  it('KD from the frozen original brings the recursive model closer to it and leaves the teacher untouched', async () => {
    const teacher = randomModel('llama', 4, 21);
    const { model } = toRecursive(teacher, { loops: 2 });
    const data = batchesOf(4, 2, 6, teacher.cfg.vocabSize);
    const before = klTo(teacher, model, data);
    const teacherBefore = snapshot(teacher);
    const losses: number[] = [];
    const summary = await uptrain(model, teacher, data, { steps: 30, lr: 3e-3, loss: 'kd', temperature: 1, onStep: (s) => losses.push(s.loss) });
    expect(summary.steps).toBe(30);
    expect(losses).toHaveLength(30);
    const after = klTo(teacher, model, data);
    expect(after).toBeLessThan(before * 0.7);
    for (const [k, v] of snapshot(teacher)) expect(v, k).toEqual(teacherBefore.get(k));
    for (const t of teacher.parameters()) expect(t.grad).toBeNull();
    // Still recursive: one tensor per shared block.
    expect(model.blocks).toHaveLength(2);
    teacher.dispose();
    model.dispose();
  });

  it("'mix' and reverse KD train; 'ce' needs no teacher", async () => {
    const teacher = randomModel('gpt_neox', 2, 4);
    const data = batchesOf(2, 2, 5, teacher.cfg.vocabSize);
    for (const opts of [{ loss: 'mix' as const, alpha: 0.3, temperature: 2 }, { loss: 'kd' as const, kdDirection: 'reverse' as const }]) {
      const { model } = toRecursive(teacher, { loops: 2 });
      const losses: number[] = [];
      await uptrain(model, teacher, data, { steps: 12, lr: 3e-3, ...opts, onStep: (s) => losses.push(s.loss) });
      expect(losses[11]).toBeLessThan(losses[0]);
      model.dispose();
    }
    const { model } = toRecursive(teacher, { loops: 2 });
    const losses: number[] = [];
    await uptrain(model, null, data, { steps: 12, lr: 3e-3, loss: 'ce', onStep: (s) => losses.push(s.loss) });
    expect(losses[11]).toBeLessThan(losses[0]);
    model.dispose();
    teacher.dispose();
  });

  it('keeps partial ties through training (the shared MLP stays one tensor)', async () => {
    const teacher = randomModel('llama', 4, 9);
    const { model } = toRecursive(teacher, { loops: 2, scheme: withTie(CYCLE, (p) => p.startsWith('mlp.')) });
    const up0 = model.blocks[0].namedParameters().get('mlp.up.weight')!;
    const q2 = model.blocks[2].namedParameters().get('attn.q.weight')!;
    const q2Before = q2.dataSync();
    const up0Before = up0.dataSync();
    await uptrain(model, teacher, batchesOf(2, 2, 5, teacher.cfg.vocabSize), { steps: 3, lr: 1e-2 });
    expect(model.blocks[2].namedParameters().get('mlp.up.weight')).toBe(up0);
    expect(up0.dataSync()).not.toEqual(up0Before);
    expect(q2.dataSync()).not.toEqual(q2Before);
    teacher.dispose();
    model.dispose();
  });

  it('refuses a missing teacher for KD and a teacher that shares weights with the student', () => {
    const teacher = randomModel('llama', 2);
    expect(() => uptrainLoss(teacher, null, { loss: 'kd' })).toThrow(/loss 'kd' needs a teacher model/);
    expect(() => uptrainLoss(teacher, teacher)).toThrow(/same model/);
    const { model } = toRecursive(teacher, { loops: 1 });
    const [owner, local] = model.resolveParam('embed.weight');
    owner.setParam(local, teacher.embed.weight);
    expect(() => uptrainLoss(model, teacher)).toThrow(/shares parameter "embed.weight"/);
    expect(() => uptrainLoss(model, teacher, { loss: 'nope' as never })).toThrow(/loss must be 'kd', 'ce' or 'mix'/);
  });
});
