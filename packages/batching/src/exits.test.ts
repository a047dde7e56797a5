import { describe, expect, it } from 'vitest';
import { Generator, crossEntropy, noGrad, tidy } from '@rrt/tensor';
import { BatchLoader, CausalLM, TokenSequences, Trainer, defineConfig, freezeParameters } from '@rrt/layers';
import { ExitHeadAdapters, allExitLogits, exitLogits } from './exits.js';
import { exitLossWeights, exitLosses, exitTrainingLoss } from './losses.js';
import { loopEndingAt, loopEndsOfDepthMap, loopLayout } from './loops.js';
import { CYCLE, MIDDLE_CYCLE, MIDDLE_SEQUENCE, SEQUENCE, toRecursive, withTie } from '@rrt/recursive';
import { entropy, entropyExit, fixedDepthExit, maxProbExit, maxProbability, neverExit, oracleExit, parseExitPolicy } from './policies.js';
import { exactBackend, tinyLooped } from './testing.test-util.js';

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('loopLayout', () => {
  it('derives loops from a repeating schedule, a RecursiveLM-style loops property, or options', () => {
    const looped = tinyLooped();
    expect(loopLayout(looped)).toMatchObject({ loops: 2, depth: 4, ends: [2, 4] });
    const cfg = defineConfig('llama', { vocabSize: 16, hiddenSize: 16, numLayers: 6, numHeads: 2 });
    const plain = new CausalLM(cfg, { backend: exactBackend() });
    expect(loopLayout(plain).loops).toBe(1);
    expect(loopLayout(plain, { loops: 3 }).ends).toEqual([2, 4, 6]);
    expect(loopLayout(plain, { ends: [1, 5, 6] }).loops).toBe(3);
    Object.defineProperty(plain, 'loops', { value: 2 });
    expect(loopLayout(plain).ends).toEqual([3, 6]);
    expect(() => loopLayout(plain, { loops: 4 })).toThrow(/do not split the model's 6 depth positions/);
    expect(() => loopLayout(plain, { ends: [3, 2, 6] })).toThrow(/ascending/);
    expect(() => loopLayout(plain, { ends: [2, 4] })).toThrow(/expected the model depth 6/);
    expect([...loopEndingAt(loopLayout(plain, { ends: [1, 5, 6] }))]).toEqual([0, -1, -1, -1, 1, 2]);
  });
});

describe('loop ends of non-CYCLE schemes', () => {
  it('each loop ends where every repeated block has run once more', () => {
    expect(loopEndsOfDepthMap([0, 1, 2, 0, 1, 2])).toEqual([3, 6]);
    expect(loopEndsOfDepthMap([0, 0, 1, 1, 2, 2])).toEqual([5, 6]);
    expect(loopEndsOfDepthMap([0, 0, 0, 1, 1, 1])).toEqual([4, 5, 6]);
    // MIDDLE_CYCLE, L = 6, B = 2 and L = 8, B = 3: the unique first layer runs in loop 0, the unique last one in the last loop.
    expect(loopEndsOfDepthMap([0, 1, 2, 1, 2, 3])).toEqual([3, 6]);
    expect(loopEndsOfDepthMap([0, 1, 2, 1, 2, 1, 2, 3])).toEqual([3, 5, 8]);
    expect(loopEndsOfDepthMap([0, 1, 1, 2, 2, 3])).toEqual([4, 6]);
    // Not looped, or blocks repeated unequally, or a loop count the map does not have.
    expect(loopEndsOfDepthMap([0, 1, 2])).toBeNull();
    expect(loopEndsOfDepthMap([0, 1, 0, 1, 0])).toBeNull();
    expect(loopEndsOfDepthMap([0, 1, 0, 1], 3)).toBeNull();
  });

  it('recursive models of every scheme get exits on their loop boundaries, and a partially tied one keeps them', () => {
    const cfg = defineConfig('llama', { vocabSize: 16, hiddenSize: 16, numLayers: 8, numHeads: 2, intermediateSize: 32 });
    const plain = new CausalLM(cfg, { backend: exactBackend(), rng: new Generator(3) });
    const ends = (scheme: typeof CYCLE, loops: number) => loopLayout(toRecursive(plain, { loops, scheme }).model).ends;
    expect(ends(CYCLE, 2)).toEqual([4, 8]);
    expect(ends(SEQUENCE, 2)).toEqual([7, 8]);
    expect(ends(MIDDLE_CYCLE, 3)).toEqual([3, 5, 8]);
    expect(ends(MIDDLE_SEQUENCE, 2)).toEqual([6, 8]);
    expect(ends(CYCLE, 4)).toEqual([2, 4, 6, 8]);
    const partial = toRecursive(plain, { loops: 2, scheme: withTie(SEQUENCE, (path) => !path.startsWith('ln')) }).model;
    expect(partial.schedule).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(loopLayout(partial).ends).toEqual([7, 8]);
  });
});

describe('exit logits', () => {
  const model = tinyLooped();
  const ids = [1, 5, 9, 2, 7, 3, 3, 8];

  it('the last exit is the model output; earlier exits read the hidden state at their loop end', () => {
    noGrad(() => tidy(() => {
      const { logits, hidden } = model.forward(ids, [2, 4], { hidden: true });
      const exits = allExitLogits(model, ids, [2, 4]);
      expect(exits.length).toBe(2);
      expect(maxDiff(exits[1].dataSync(), logits.dataSync())).toBeLessThan(1e-6);
      expect(maxDiff(exits[0].dataSync(), exitLogits(model, hidden![2], 0).dataSync())).toBeLessThan(1e-6);
      expect(maxDiff(exits[0].dataSync(), logits.dataSync())).toBeGreaterThan(1e-3);
    }));
  });

  it('per-exit head adapters start as a no-op and change only their own exit once trained', () => {
    const adapters = new ExitHeadAdapters(model, {}, { rank: 4, seed: 1 });
    expect(adapters.parameters().length).toBe(4);
    noGrad(() => tidy(() => {
      const h = model.forward(ids, [2, 4], { hidden: true }).hidden![2];
      const plain = exitLogits(model, h, 0).dataSync();
      expect(maxDiff(exitLogits(model, h, 0, { adapters }).dataSync(), plain)).toBe(0);
      const b0 = adapters.b[0];
      b0.backend.kernels.fill(b0.storage, 0.05);
      expect(maxDiff(exitLogits(model, h, 0, { adapters }).dataSync(), plain)).toBeGreaterThan(1e-4);
      expect(maxDiff(exitLogits(model, h, 1, { adapters }).dataSync(), exitLogits(model, h, 1).dataSync())).toBe(0);
    }));
    expect(() => exitLogits(model, model.embed.weight, 2, { adapters })).toThrow(/out of range/);
    adapters.dispose();
  });
});

describe('early-exit post-training with the model frozen', () => {
  it('adapters on the early exits only: the last exit stays bit-identical, the loop-1 exit learns', async () => {
    const model = tinyLooped();
    const adapters = new ExitHeadAdapters(model, {}, { rank: 4, seed: 1, final: false });
    expect(adapters.adapted).toBe(1);
    expect(adapters.parameters().length).toBe(2);
    const period = Int32Array.from({ length: 12 }, (_, i) => (i * 5 + 1) % 48);
    const seqs = new TokenSequences(Int32Array.from({ length: 12 * 30 + 1 }, (_, i) => period[i % 12]!), 6);
    const probe = seqs.batch(Int32Array.from([0, 1, 2, 3]));
    const exits = () => noGrad(() => tidy(() => allExitLogits(model, probe.ids, probe.shape, { adapters }).map((t) => t.dataSync().slice())));
    const losses = () => noGrad(() => tidy(() => exitLosses(model, probe, { schedule: 'final', adapters }).perExit.map((t) => t.item())));
    const weights = model.parameters().map((p) => p.dataSync().slice());
    const [before, lossBefore] = [exits(), losses()];
    const unfreeze = freezeParameters(model.parameters());
    await new Trainer({
      model: adapters, data: new BatchLoader(seqs, { batchSize: 4, seed: 2 }), steps: 30, lr: 3e-2, schedule: { kind: 'constant' },
      loss: (b) => exitTrainingLoss(model, b, { schedule: 'aggressive', adapters }),
    }).run();
    unfreeze();
    const [after, lossAfter] = [exits(), losses()];
    model.parameters().forEach((p, i) => expect(maxDiff(p.dataSync(), weights[i]!)).toBe(0));
    expect(maxDiff(after[1]!, before[1]!)).toBe(0);
    expect(lossAfter[1]).toBe(lossBefore[1]);
    expect(lossAfter[0]!).toBeLessThan(lossBefore[0]! * 0.8);
    adapters.dispose();
    model.dispose();
  });
});

describe('exit-aware losses', () => {
  it('schedules: weighted, aggressive, final, explicit', () => {
    expect(exitLossWeights('weighted', 3)).toEqual([1 / 3, 2 / 3, 1]);
    expect(exitLossWeights('aggressive', 3)).toEqual([0.1, 0.1, 1]);
    expect(exitLossWeights('final', 2)).toEqual([0, 1]);
    expect(exitLossWeights([1, 3], 2, true)).toEqual([0.25, 0.75]);
    expect(() => exitLossWeights([1], 2)).toThrow(/1 given for 2 exits/);
    expect(() => exitLossWeights('other' as never, 2)).toThrow(/unknown exit loss schedule/);
  });

  it("the total is the weighted sum of each exit's CE; 'final' is plain next-token CE", () => {
    const model = tinyLooped();
    const batch = { ids: Int32Array.from([1, 2, 3, 4, 5, 6]), targets: Int32Array.from([2, 3, 4, 5, 6, -100]), shape: [1, 6] as [number, number] };
    noGrad(() => tidy(() => {
      const { total, perExit, weights } = exitLosses(model, batch, { schedule: 'aggressive' });
      const ces = allExitLogits(model, batch.ids, batch.shape).map((l) => crossEntropy(l, batch.targets).item());
      perExit.forEach((p, b) => expect(p.item()).toBeCloseTo(ces[b], 5));
      expect(total.item()).toBeCloseTo(weights[0] * ces[0] + weights[1] * ces[1], 5);
      expect(exitTrainingLoss(model, batch, { schedule: 'final' }).item()).toBeCloseTo(ces[1], 5);
    }));
  });

  it('with a teacher, each exit mixes CE and KD; teaching the model by itself leaves only CE at the last exit', () => {
    const model = tinyLooped();
    const batch = { ids: Int32Array.from([1, 2, 3, 4]), targets: Int32Array.from([2, 3, 4, 5]), shape: [1, 4] as [number, number] };
    noGrad(() => tidy(() => {
      const self = exitLosses(model, batch, { schedule: 'final', teacher: model, kdWeight: 0.5 });
      const ce = exitTrainingLoss(model, batch, { schedule: 'final' }).item();
      expect(self.total.item()).toBeCloseTo(0.5 * ce, 5);
      const other = tinyLooped({ seed: 77 });
      const kd = exitLosses(model, batch, { schedule: 'weighted', teacher: other, kdWeight: 1, temperature: 2 });
      expect(kd.perExit.every((t) => t.item() > 0)).toBe(true);
    }));
  });

  it('post-training with the Trainer lowers the early exit loss (aggressive + KD)', async () => {
    const model = tinyLooped({ seed: 3 });
    model.train();
    const teacher = tinyLooped({ seed: 3 });
    const rng = new Generator(5);
    const ids = Int32Array.from({ length: 4 * 9 }, () => rng.int(0, 8));
    const batch = { ids: ids.filter((_, i) => i % 9 !== 8), targets: ids.filter((_, i) => i % 9 !== 0), shape: [4, 8] as [number, number] };
    const early = () => noGrad(() => tidy(() => exitLosses(model, batch, { schedule: 'aggressive' }).perExit[0].item()));
    const before = early();
    const trainer = new Trainer({
      model, steps: 30, lr: 3e-3, data: { next: () => batch },
      loss: (b) => exitTrainingLoss(model, b, { schedule: 'aggressive', teacher, kdWeight: 0.3, temperature: 1 }),
    });
    await trainer.run();
    expect(early()).toBeLessThan(before * 0.8);
  });
});

describe('exit policies', () => {
  const confident = Float32Array.from([10, 0, 0, 0]);
  const flat = Float32Array.from([0, 0, 0, 0]);

  it('max probability and entropy', () => {
    expect(maxProbability(flat)).toBeCloseTo(0.25, 10);
    expect(entropy(flat)).toBeCloseTo(Math.log(4), 10);
    expect(maxProbability(confident)).toBeGreaterThan(0.99);
    expect(entropy(confident)).toBeLessThan(0.01);
    expect(maxProbExit(0.9).shouldExit(confident, 0, 2)).toBe(true);
    expect(maxProbExit(0.9).shouldExit(flat, 0, 2)).toBe(false);
    expect(entropyExit(0.5).shouldExit(confident, 0, 2)).toBe(true);
    expect(entropyExit(0.5).shouldExit(flat, 0, 2)).toBe(false);
    expect(() => maxProbExit(0)).toThrow(/\(0, 1\]/);
    expect(() => entropyExit(-1)).toThrow(/>= 0/);
  });

  it('fixed depth, never, oracle and the spec parser', () => {
    expect(fixedDepthExit(1).shouldExit(flat, 0, 3)).toBe(true);
    expect(fixedDepthExit(2).shouldExit(flat, 0, 3)).toBe(false);
    expect(fixedDepthExit(2).shouldExit(flat, 1, 3)).toBe(true);
    expect(neverExit().shouldExit(confident, 0, 2)).toBe(false);
    const oracle = oracleExit();
    expect(oracle.hindsight!([Float32Array.from([0, 1]), Float32Array.from([1, 0]), Float32Array.from([2, 0])])).toBe(1);
    expect(oracle.hindsight!([Float32Array.from([1, 0]), Float32Array.from([0, 1])])).toBe(1);
    expect(oracle.hindsight!([Float32Array.from([0, 1]), Float32Array.from([0, 1])])).toBe(0);
    expect(parseExitPolicy('max-prob:0.8').name).toBe('max-prob:0.8');
    expect(parseExitPolicy('entropy:1.5').name).toBe('entropy:1.5');
    expect(parseExitPolicy('fixed:1').name).toBe('fixed:1');
    expect(parseExitPolicy('oracle').hindsight).toBeDefined();
    expect(() => parseExitPolicy('max-prob')).toThrow(/expected a number/);
    expect(() => parseExitPolicy('sometimes')).toThrow(/unknown exit policy/);
  });
});
