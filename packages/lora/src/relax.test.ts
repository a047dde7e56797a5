// The exact properties of depth-wise LoRA (PAPER.md section 2), on the tiny Hugging Face
// fixtures of all four families and on small random models with more layers.

import { describe, expect, it } from 'vitest';
import {
  type HostStorage, RrtError, ShapeError, Tensor, availableBackends, backendByName, crossEntropy, fromValues, narrow, noGrad, randn, reshape, tidy,
} from '@rrt/tensor';
import { CYCLE, MIDDLE_CYCLE, average, lower, stepwise, toRecursive, uptrainLoss, withTie, writeValues } from '@rrt/recursive';
import { Trainer } from '@rrt/layers';
import { countRelaxedParams } from './params.js';
import { relax, residualsFrom } from './relax.js';
import { linearAt } from './targets.js';
import { FAMILIES, loadFixture, logitsOf, maxAbs, maxAbsDiff, randomModel, someIds } from './testing.test-util.js';

const FULL = 1_000_000; // capped to min(in, out) per matrix
/** CYCLE with only the projection weights shared: norms and biases stay per depth position. */
const PROJECTIONS_TIED = withTie(CYCLE, (p) => /^(attn|mlp)\.\w+\.weight$/.test(p));

describe.each(FAMILIES.flatMap((f) => availableBackends().map((b) => [f, b.name, b] as const)))('%s fixture on %s, 2 loops', (family, _name, backend) => {
  const original = loadFixture(family, backend);
  const V = original.cfg.vocabSize;
  const ids = someIds(2, 7, V);
  const want = logitsOf(original, ids, [2, 7]);
  const scale = maxAbs(want);

  it('full-rank SVD init reproduces the original model (projections tied, norms and biases per depth)', () => {
    const { model, residuals } = toRecursive(original, { loops: 2, init: average, scheme: PROJECTIONS_TIED });
    const plain = logitsOf(model, ids, [2, 7]);
    expect(maxAbsDiff(plain, want)).toBeGreaterThan(1e-2 * scale); // tying changed the model
    const lora = relax(model, { rank: FULL, init: 'svd', residuals });
    expect(maxAbsDiff(logitsOf(model, ids, [2, 7]), want)).toBeLessThan(2e-5 * scale);
    // The effective delta is exactly the truncated SVD whatever alpha is.
    lora.remove();
    relax(model, { rank: FULL, init: 'svd', residuals, alpha: 7 });
    expect(maxAbsDiff(logitsOf(model, ids, [2, 7]), want)).toBeLessThan(2e-5 * scale);
  });

  it('everything tied (the paper\'s setting): full rank with folded norm gains and per-depth biases reproduces the original, for every init', () => {
    for (const init of [stepwise, average, lower]) {
      const { model, residuals } = toRecursive(original, { loops: 2, init });
      const plain = logitsOf(model, ids, [2, 7]);
      // The paper's plain residual cannot undo the shared norm gains (nor biases): a clear gap remains.
      const unfolded = relax(model, { rank: FULL, init: 'svd', residuals, foldNorms: false });
      expect(maxAbsDiff(logitsOf(model, ids, [2, 7]), want)).toBeGreaterThan(1e-3 * scale);
      unfolded.remove();
      expect(logitsOf(model, ids, [2, 7])).toEqual(plain);
      const lora = relax(model, { rank: FULL, init: 'svd', residuals, biases: true });
      expect(maxAbsDiff(logitsOf(model, ids, [2, 7]), want)).toBeLessThan(2e-5 * scale);
      // Bias deltas only where the family has biases (LayerNorm beta or Linear biases).
      const counted = countRelaxedParams(model.cfg, model.schedule, { rank: FULL, biases: true });
      expect(lora.biasParameters).toBe(counted.depthBiases);
      expect(lora.paramCount().depthBiases).toBe(counted.depthBiases);
      expect(lora.biases.length > 0).toBe(family === 'gpt_neox' || family === 'gpt2');
      // The same model without hooks: merged into one block per depth.
      const unrolled = lora.mergeUnrolled();
      expect(maxAbsDiff(logitsOf(unrolled, ids, [2, 7]), want)).toBeLessThan(2e-5 * scale);
      unrolled.dispose();
      lora.remove();
      expect(logitsOf(model, ids, [2, 7])).toEqual(plain);
    }
  });

  it('everything tied, foldNorms false: full rank restores every projection weight (the paper\'s residual)', () => {
    const { model, residuals } = toRecursive(original, { loops: 2, init: average });
    const unrolled = relax(model, { rank: FULL, init: 'svd', residuals, foldNorms: false }).mergeUnrolled();
    for (let d = 0; d < 2; d++) {
      for (const [path, t] of unrolled.blocks[d].namedParameters()) {
        if (!/^(attn|mlp)\.\w+\.weight$/.test(path)) continue;
        const orig = original.blocks[d].namedParameters().get(path)!.dataSync();
        expect(maxAbsDiff(t.dataSync(), orig)).toBeLessThan(1e-5 * maxAbs(orig));
      }
    }
  });

  it('rank 0 and zero init are the plain recursive model', () => {
    const { model, residuals } = toRecursive(original, { loops: 2 });
    const plain = logitsOf(model, ids, [2, 7]);
    const none = relax(model, { rank: 0, init: 'svd', residuals });
    expect(none.modules).toHaveLength(0);
    expect(logitsOf(model, ids, [2, 7])).toEqual(plain);
    const zero = relax(model, { rank: 4, init: 'zero', biases: true });
    expect(zero.modules.length).toBeGreaterThan(0);
    expect(logitsOf(model, ids, [2, 7])).toEqual(plain);
    zero.remove();
  });

  it('module counts and parameters follow the accounting of params.ts (fused q, k, v each get rank r)', () => {
    const { model, residuals } = toRecursive(original, { loops: 2 });
    for (const opts of [{ rank: 4 }, { rank: 20 }, { rank: 3, rankPattern: { mlp: 0 } }, { rank: 5, targets: ['q', 'v'] as const }]) {
      const lora = relax(model, { ...opts, init: 'svd', residuals });
      const expected = countRelaxedParams(model.cfg, model.schedule, opts);
      expect(lora.numParameters).toBe(expected.lora);
      expect(lora.paramCount().lora).toBe(expected.lora);
      expect(lora.modules).toHaveLength(expected.modules.filter((m) => m.rank > 0).length * model.depth);
      for (const m of lora.modules) {
        const spec = expected.modules.find((s) => s.target === m.target)!;
        expect([m.A.shape, m.B.shape]).toEqual([[spec.rank, spec.dIn], [spec.dOut, spec.rank]]);
      }
      lora.remove();
    }
  });

  it('merged into an unrolled model: same logits', () => {
    const { model, residuals } = toRecursive(original, { loops: 2 });
    const lora = relax(model, { rank: 3, init: 'svd', residuals });
    const relaxed = logitsOf(model, ids, [2, 7]);
    const unrolled = lora.mergeUnrolled();
    expect(unrolled.blocks).toHaveLength(2);
    expect(maxAbsDiff(logitsOf(unrolled, ids, [2, 7]), relaxed)).toBeLessThan(2e-5 * scale);
  });
});

describe.each(FAMILIES)('%s, 4 random layers, 2 loops, everything tied', (family) => {
  const original = randomModel(family, 4, 11);
  const ids = someIds(2, 6, 32);
  const want = logitsOf(original, ids, [2, 6]);
  const scale = maxAbs(want);

  it.each([['stepwise', stepwise], ['average', average], ['lower', lower]] as const)('%s init: full-rank SVD init reproduces the original; merged == unmerged', (_name, init) => {
    const { model, residuals } = toRecursive(original, { loops: 2, init });
    const lora = relax(model, { rank: FULL, init: 'svd', residuals, biases: true });
    expect(maxAbsDiff(logitsOf(model, ids, [2, 6]), want)).toBeLessThan(2e-5 * scale);
    const unrolled = lora.mergeUnrolled();
    expect(maxAbsDiff(logitsOf(unrolled, ids, [2, 6]), want)).toBeLessThan(2e-5 * scale);
    unrolled.dispose();
    lora.remove();
  });

  it('low rank, bias-only deltas on the MLP (rankPattern mlp: 0): merged == unmerged, counted', () => {
    const { model, residuals } = toRecursive(original, { loops: 2, init: average });
    const plain = logitsOf(model, ids, [2, 6]);
    const opts = { rank: 2, rankPattern: { mlp: 0 }, biases: true };
    const lora = relax(model, { ...opts, init: 'svd', residuals });
    expect(lora.biasParameters).toBe(countRelaxedParams(model.cfg, model.schedule, opts).depthBiases);
    const relaxed = logitsOf(model, ids, [2, 6]);
    expect(maxAbsDiff(relaxed, plain)).toBeGreaterThan(1e-4 * scale);
    const unrolled = lora.mergeUnrolled();
    expect(maxAbsDiff(logitsOf(unrolled, ids, [2, 6]), relaxed)).toBeLessThan(2e-5 * scale);
    unrolled.dispose();
    lora.remove();
  });

  it('per-row depths with bias deltas: each row gets its own depth delta', () => {
    const { model, residuals } = toRecursive(original, { loops: 2, init: average });
    relax(model, { rank: 2, init: 'svd', residuals, biases: true });
    const B = 3, T = 4, D = model.cfg.hiddenSize;
    tidy(() => {
      const h = randn([B, T, D], { backend: model.embed.weight.backend });
      const depths = Int32Array.of(1, 3, 1); // both run shared block 1
      const ctx = { depth: depths, positions: model.positionsFor(B, T), batch: B, seq: T };
      const together = model.runDepth(h, depths, ctx).dataSync();
      for (let b = 0; b < B; b++) {
        const alone = model.runDepth(narrow(h, 0, b, 1), depths[b], { depth: depths[b], positions: model.positionsFor(1, T), batch: 1, seq: T }).dataSync();
        expect(maxAbsDiff(together.subarray(b * T * D, (b + 1) * T * D), alone)).toBeLessThan(1e-5);
      }
    });
  });
  // Rank 2, full rank, and MLP rank 0 (bias deltas only there).
  it.each([['rank 2', {}], ['full rank', { rank: FULL }], ['rank 2, MLP bias deltas only', { rankPattern: { mlp: 0 } }]] as const)('mergeDepths, %s: per-depth merged weights give the hooks\' outputs for mixed-depth rows, and hand back to the hooks', (_name, opts) => {
    const { model, residuals } = toRecursive(original, { loops: 2, init: average });
    const lora = relax(model, { rank: 2, ...opts, init: 'svd', residuals, biases: true });
    const linears = model.blocks.flatMap((b) => lora.modules.filter((m) => m.block === model.blocks.indexOf(b)).map((m) => linearAt(b, m.linearPath)));
    const B = 5, T = 4, D = model.cfg.hiddenSize;
    const h = randn([B, T, D], { backend: model.embed.weight.backend }).keep();
    // Both depths run shared block 1; each row takes its own depth's merged weight, in calls of
    // 4-token and 1-token rows, with either depth leading, sorted by depth (two runs: read in
    // place) or interleaved (five runs: put in depth order and back).
    const h1 = randn([B, 1, D], { backend: model.embed.weight.backend }).keep();
    const cases: [Tensor, Int32Array][] = [
      [h, Int32Array.of(1, 3, 1, 3, 3)], [h1, Int32Array.of(3, 3, 1, 3, 3)], [h1, Int32Array.of(1, 1, 3, 1, 3)],
      [h1, Int32Array.of(1, 1, 1, 3, 3)], [h1, Int32Array.of(1, 3, 1, 3, 1)],
    ];
    const runAll = (): Float32Array[] => cases.map(([x, depths]) => noGrad(() => tidy(() => model.runDepth(x, depths, { depth: depths, positions: model.positionsFor(B, x.shape[1]), batch: B, seq: x.shape[1] }).dataSync())));
    const depths = cases[0][1];
    const ctx = { depth: depths, positions: model.positionsFor(B, T), batch: B, seq: T };
    const run = (): Float32Array => runAll()[0];
    const hooksAll = runAll(), hooks = hooksAll[0], hookLogits = logitsOf(model, ids, [2, 6]);
    lora.mergeDepths();
    expect(lora.depthsMerged).toBe(true);
    expect(linears.every((l) => l.product !== null)).toBe(true);
    runAll().forEach((got, i) => expect(maxAbsDiff(got, hooksAll[i])).toBeLessThan(1e-5 * Math.max(1, maxAbs(hooksAll[i]))));
    model.eval();
    expect(maxAbsDiff(logitsOf(model, ids, [2, 6]), hookLogits)).toBeLessThan(1e-5 * scale);
    // Training through the copies would leave the adapters untouched: refused.
    model.train();
    expect(() => logitsOf(model, ids, [2, 6])).toThrow(/mergeDepths.*unmergeDepths/);
    // A depth the Linear has no weights for is an error, not the shared weight.
    expect(() => noGrad(() => tidy(() => linears[0].forward(randn([1, linears[0].inFeatures], { backend: h.backend }), { ...ctx, depth: 7 })))).toThrow(/called for depth 7, which runs block none/);
    lora.unmergeDepths();
    expect(linears.every((l) => l.product === null)).toBe(true);
    expect(maxAbsDiff(run(), hooks)).toBe(0);
    // Called again, it takes the current weights; remove() drops the copies with the hooks.
    lora.mergeDepths();
    lora.mergeDepths();
    lora.remove();
    expect(linears.every((l) => l.product === null)).toBe(true);
    h.dispose();
    h1.dispose();
  });
});

describe('mergeDepths with one block run 3 times', () => {
  it('a call with rows at three depths: each row takes its own depth\'s weight, as the hooks compute', () => {
    const original = randomModel('llama', 3, 9);
    const { model, residuals } = toRecursive(original, { loops: 3, init: average });
    const lora = relax(model, { rank: 2, init: 'svd', residuals });
    const B = 6, D = model.cfg.hiddenSize;
    const h = randn([B, 1, D], { backend: model.embed.weight.backend }).keep();
    // Depth 0 (3 rows), depth 1 (2 rows) and depth 2 (1 row), interleaved.
    const depths = Int32Array.of(0, 1, 0, 2, 1, 0);
    const run = (): Float32Array => noGrad(() => tidy(() => model.runDepth(h, depths, { depth: depths, positions: model.positionsFor(B, 1), batch: B, seq: 1 }).dataSync()));
    const hooks = run();
    lora.mergeDepths();
    expect(maxAbsDiff(run(), hooks)).toBeLessThan(1e-5 * Math.max(1, maxAbs(hooks)));
    lora.remove();
    h.dispose();
  });

  it('on cpu the merged weights stay packed for the matmul kernel until unmergeDepths, and calls read them', () => {
    const cpu = backendByName('cpu');
    const { model, residuals } = toRecursive(randomModel('llama', 3, 9, cpu), { loops: 3, init: average });
    const lora = relax(model, { rank: 2, init: 'svd', residuals });
    const details = () => cpu.info().details;
    const B = 60, D = model.cfg.hiddenSize;
    const h = randn([B, 1, D], { backend: cpu }).keep();
    // 20 rows per depth (past the few-row path), sorted by depth: one grouped product per Linear.
    const depths = Int32Array.from({ length: B }, (_, i) => Math.floor(i / 20));
    const run = (): Float32Array => noGrad(() => tidy(() => model.runDepth(h, depths, { depth: depths, positions: model.positionsFor(B, 1), batch: B, seq: 1 }).dataSync()));
    const hooks = run();
    const packed0 = Number(details().packedWeights);
    lora.mergeDepths();
    // One merged weight per depth for each of the block's 7 Linears.
    expect(Number(details().packedWeights) - packed0).toBe(3 * 7);
    const calls = Number(details().packedMatmuls);
    expect(maxAbsDiff(run(), hooks)).toBeLessThan(1e-5 * Math.max(1, maxAbs(hooks)));
    expect(Number(details().packedMatmuls) - calls).toBe(7);
    lora.unmergeDepths();
    expect(Number(details().packedWeights)).toBe(packed0);
    lora.remove();
    h.dispose();
  });
});

describe('depth-wise LoRA on a 4-layer model with 2 loops (2 shared blocks)', () => {
  const original = randomModel('llama', 4, 5);
  const ids = someIds(2, 6, 32);

  it('the effective delta at depth l is the rank-r SVD of W_l - W_shared', () => {
    const { model, residuals } = toRecursive(original, { loops: 2, init: average });
    const lora = relax(model, { rank: 2, init: 'svd', residuals });
    const m = lora.module(3, 'down')!;
    const delta = m.pair.deltaWeight().dataSync();
    const r = residuals(3, 'mlp.down.weight');
    // B A is the best rank-2 approximation: its error is orthogonal to it.
    let dot = 0;
    for (let i = 0; i < delta.length; i++) dot += delta[i] * (r.data[i] - delta[i]);
    expect(Math.abs(dot)).toBeLessThan(1e-4 * delta.reduce((s, v) => s + v * v, 0));
    expect(m.block).toBe(1);
  });

  it('the weight error falls with the rank (Eckart-Young) and the logits match at full rank', () => {
    const want = logitsOf(original, ids, [2, 6]);
    const { model, residuals } = toRecursive(original, { loops: 2, init: average, scheme: PROJECTIONS_TIED });
    const errors = [0, 2, 8, FULL].map((rank) => {
      const lora = relax(model, { rank, init: 'svd', residuals });
      const unrolled = lora.mergeUnrolled();
      let e = 0;
      for (let d = 0; d < 4; d++) {
        for (const [path, t] of unrolled.blocks[d].namedParameters()) {
          const orig = original.blocks[d].namedParameters().get(path)!.dataSync();
          e += t.dataSync().reduce((acc, v, i) => acc + (v - orig[i]) ** 2, 0);
        }
      }
      if (rank === FULL) expect(maxAbsDiff(logitsOf(model, ids, [2, 6]), want)).toBeLessThan(2e-5 * maxAbs(want));
      lora.remove();
      unrolled.dispose();
      return Math.sqrt(e);
    });
    expect(errors[1]).toBeLessThan(errors[0]);
    expect(errors[2]).toBeLessThan(errors[1]);
    expect(errors[3]).toBeLessThan(1e-5 * errors[0]);
  });

  it('residualsFrom matches the conversion residuals', () => {
    const { model, residuals } = toRecursive(original, { loops: 2, init: average });
    const mine = residualsFrom(original, model);
    for (const [d, p] of [[0, 'attn.q.weight'], [3, 'mlp.gate.weight']] as const) expect(mine(d, p)).toEqual(residuals(d, p));
  });

  it('per-row depths (continuous depth-wise batching): each row gets its own depth delta', () => {
    const { model, residuals } = toRecursive(original, { loops: 2, init: average });
    relax(model, { rank: 3, init: 'svd', residuals });
    const B = 3, T = 4, D = model.cfg.hiddenSize;
    tidy(() => {
      const h = randn([B, T, D], { backend: model.embed.weight.backend });
      const depths = Int32Array.of(0, 2, 0); // both run shared block 0
      const ctx = { depth: depths, positions: model.positionsFor(B, T), batch: B, seq: T };
      const together = model.runDepth(h, depths, ctx).dataSync();
      for (let b = 0; b < B; b++) {
        const alone = model.runDepth(narrow(h, 0, b, 1), depths[b], { depth: depths[b], positions: model.positionsFor(1, T), batch: 1, seq: T }).dataSync();
        expect(maxAbsDiff(together.subarray(b * T * D, (b + 1) * T * D), alone)).toBeLessThan(1e-5);
      }
      // A row at a depth another block runs is refused, not silently left without its delta.
      expect(() => model.runDepth(h, Int32Array.of(0, 1, 0), ctx)).toThrow(/depth 1, which runs block 1/);
      // Depths 0 and 2 really differ.
      const d0 = model.runDepth(narrow(h, 0, 1, 1), 0, { depth: 0, positions: model.positionsFor(1, T), batch: 1, seq: T }).dataSync();
      expect(maxAbsDiff(together.subarray(T * D, 2 * T * D), d0)).toBeGreaterThan(1e-3);
    });
  });

  it('gradients reach A, B and the shared weights, summed over the depths sharing them', () => {
    const { model, residuals } = toRecursive(original, { loops: 2, init: average });
    const lora = relax(model, { rank: 2, init: 'svd', residuals });
    tidy(() => {
      const { logits } = model.forward(ids.slice(0, 10), [2, 5]);
      crossEntropy(reshape(logits, [10, 32]), ids.slice(2, 12)).backward();
    });
    for (const p of lora.parameters()) expect(maxAbs(p.grad!.dataSync())).toBeGreaterThan(0);
    const shared = linearAt(model.blocks[0], 'attn.q').weight;
    expect(maxAbs(shared.grad!.dataSync())).toBeGreaterThan(0);
    expect(lora.parameters()).toHaveLength(2 * lora.modules.length);
  });

  it('trainable(): a Trainer step updates the adapters and the shared weights (or only the adapters)', async () => {
    for (const freezeBase of [false, true]) {
      const { model, residuals } = toRecursive(original, { loops: 2, init: average });
      const lora = relax(model, { rank: 2, init: 'svd', residuals });
      const trainable = lora.trainable({ freezeBase });
      expect(trainable.parameters()).toHaveLength(lora.parameters().length + (freezeBase ? 0 : model.parameters().length));
      const shared = linearAt(model.blocks[0], 'attn.q').weight;
      const before = [lora.module(0, 'q')!.A.dataSync(), lora.module(2, 'q')!.B.dataSync(), shared.dataSync()];
      const batch = { ids: Int32Array.from(ids.slice(0, 10)), targets: Int32Array.from(ids.slice(1, 11)), shape: [2, 5] as [number, number] };
      await new Trainer({ model: trainable, loss: uptrainLoss(model, original), data: { next: () => batch }, steps: 2, lr: 1e-2 }).run();
      const after = [lora.module(0, 'q')!.A.dataSync(), lora.module(2, 'q')!.B.dataSync(), shared.dataSync()];
      expect(maxAbsDiff(after[0], before[0])).toBeGreaterThan(0);
      expect(maxAbsDiff(after[1], before[1])).toBeGreaterThan(0);
      expect(maxAbsDiff(after[2], before[2]) > 0).toBe(!freezeBase);
    }
  });

  it('gradients of A and B match finite differences (float64)', () => {
    const ref64 = backendByName('ref64');
    const orig64 = randomModel('gpt_neox', 4, 7, ref64);
    const { model, residuals } = toRecursive(orig64, { loops: 2, init: average });
    const lora = relax(model, { rank: 2, init: 'svd', residuals, alpha: 3 });
    const x = ids.slice(0, 6), y = ids.slice(1, 7);
    // Read the float64 storage: item() would round the loss to float32.
    const loss = () => noGrad(() => tidy(() => (crossEntropy(reshape(model.forward(x, [1, 6]).logits, [6, 32]), y).storage as HostStorage).data[0]));
    tidy(() => crossEntropy(reshape(model.forward(x, [1, 6]).logits, [6, 32]), y).backward());
    const shared = model.blocks[0].namedParameters().get('attn.qkv.weight')!;
    for (const [t, i] of [[lora.module(2, 'k')!.A, 5], [lora.module(1, 'q')!.B, 3], [lora.module(3, 'down')!.B, 7], [shared, 4]] as [Tensor, number][]) {
      const data = (t.storage as HostStorage).data;
      const eps = 1e-6, v = data[i];
      data[i] = v + eps;
      const up = loss();
      data[i] = v - eps;
      const down = loss();
      data[i] = v;
      const numeric = (up - down) / (2 * eps);
      expect(Math.abs(t.grad!.dataSync()[i] - numeric)).toBeLessThan(1e-7 * Math.max(1, Math.abs(numeric)));
      expect(Math.abs(numeric)).toBeGreaterThan(1e-4);
    }
  });

  it('merge() folds only blocks run at one depth (MIDDLE_CYCLE ends); logits unchanged', () => {
    const orig6 = randomModel('llama', 6, 9);
    const { model, residuals } = toRecursive(orig6, { loops: 2, scheme: MIDDLE_CYCLE });
    const lora = relax(model, { rank: 2, init: 'svd', residuals });
    const before = logitsOf(model, ids, [2, 6]);
    const perDepth = lora.modules.length / model.depth;
    expect(lora.merge()).toBe(2 * perDepth); // first and last layer only
    expect(maxAbsDiff(logitsOf(model, ids, [2, 6]), before)).toBeLessThan(1e-5 * maxAbs(before));
    lora.unmerge();
    expect(maxAbsDiff(logitsOf(model, ids, [2, 6]), before)).toBeLessThan(1e-5 * maxAbs(before));
    expect(lora.merge()).toBe(2 * perDepth);
    expect(maxAbsDiff(logitsOf(lora.mergeUnrolled(), ids, [2, 6]), before)).toBeLessThan(1e-5 * maxAbs(before));
    lora.remove();
    expect(model.blocks.every((b) => linearAt(b, 'attn.q').hooks.length === 0)).toBe(true);
  });

  it('merge() with bias deltas (gpt2, MIDDLE_CYCLE): the unique ends fold into their biases; logits unchanged', () => {
    const gpt2 = randomModel('gpt2', 6, 9);
    const { model, residuals } = toRecursive(gpt2, { loops: 2, scheme: MIDDLE_CYCLE });
    const lora = relax(model, { rank: 2, init: 'svd', residuals, biases: true });
    // The unique first layer's residuals are 0: give its bias delta a value to fold.
    const first = lora.biases.find((b) => b.depth === 0 && b.target === 'o')!;
    writeValues(first.bias, Float32Array.from({ length: first.bias.size }, (_, i) => 0.1 * Math.sin(i + 1)));
    const before = logitsOf(model, ids, [2, 6]);
    const end = linearAt(model.blocks[0], 'attn.o').bias!.dataSync();
    lora.merge();
    expect(lora.biases.filter((b) => b.merged).length).toBe(2 * lora.biases.length / model.depth);
    expect(maxAbsDiff(linearAt(model.blocks[0], 'attn.o').bias!.dataSync(), end)).toBeGreaterThan(0);
    expect(maxAbsDiff(logitsOf(model, ids, [2, 6]), before)).toBeLessThan(1e-5 * maxAbs(before));
    lora.unmerge();
    expect(maxAbsDiff(linearAt(model.blocks[0], 'attn.o').bias!.dataSync(), end)).toBeLessThan(1e-6);
    expect(maxAbsDiff(logitsOf(lora.mergeUnrolled(), ids, [2, 6]), before)).toBeLessThan(1e-5 * maxAbs(before));
    lora.remove();
  });

  it('targets only k of a fused qkv: the unrolled k rows are the original, q and v stay shared', () => {
    const neox = randomModel('gpt_neox', 4, 3);
    const { model, residuals } = toRecursive(neox, { loops: 2, init: average });
    const lora = relax(model, { rank: FULL, init: 'svd', residuals, targets: ['k'], foldNorms: false });
    const unrolled = lora.mergeUnrolled();
    const hd = model.cfg.headDim, H = model.cfg.numHeads, D = model.cfg.hiddenSize;
    for (let d = 0; d < 4; d++) {
      const got = linearAt(unrolled.blocks[d], 'attn.qkv').weight.dataSync();
      const orig = linearAt(neox.blocks[d], 'attn.qkv').weight.dataSync();
      const shared = linearAt(model.blockAt(d), 'attn.qkv').weight.dataSync();
      for (let h = 0; h < H; h++) {
        for (let part = 0; part < 3; part++) {
          const row0 = (h * 3 + part) * hd;
          const ref = part === 1 ? orig : shared;
          expect(maxAbsDiff(got.subarray(row0 * D, (row0 + hd) * D), ref.subarray(row0 * D, (row0 + hd) * D))).toBeLessThan(1e-5);
        }
      }
    }
  });

  it('dropout acts in training mode only', () => {
    const { model, residuals } = toRecursive(original, { loops: 2 });
    relax(model, { rank: 2, init: 'svd', residuals, dropout: 0.5, seed: 1 });
    model.eval();
    const a = logitsOf(model, ids, [2, 6]), b = logitsOf(model, ids, [2, 6]);
    expect(a).toEqual(b);
    model.train();
    expect(maxAbsDiff(logitsOf(model, ids, [2, 6]), a)).toBeGreaterThan(0);
    model.eval();
  });

  it('rejects what it cannot do, saying why', () => {
    const { model, residuals } = toRecursive(original, { loops: 2 });
    expect(() => relax(model, { rank: 2, init: 'svd' })).toThrow(/residuals/);
    expect(() => relax(model, { rank: 2, init: 'zero', targets: ['qkv' as never] })).toThrow(/not in a llama block/);
    expect(() => relax(model, { rank: -1, init: 'zero' })).toThrow(RrtError);
    expect(() => relax(model, { rank: 2, init: 'pissa' as never })).toThrow(/init/);
    const bad = (d: number, p: string) => ({ ...residuals(d, p), shape: [1, 2] });
    expect(() => relax(model, { rank: 2, init: 'svd', residuals: bad })).toThrow(ShapeError);
    // Residuals of projection weights only: norm folding needs the norms' too, and says so.
    const weightsOnly = (d: number, p: string) => {
      if (!/^(attn|mlp)\./.test(p)) throw new RrtError(`no residual for ${p}`);
      return residuals(d, p);
    };
    expect(() => relax(model, { rank: 2, init: 'svd', residuals: weightsOnly })).toThrow(/foldNorms: false/);
    relax(model, { rank: 2, init: 'svd', residuals: weightsOnly, foldNorms: false }).remove();
    const lora = relax(model, { rank: 2, init: 'zero', targets: ['o'] });
    expect(() => relax(model, { rank: 2, init: 'zero' })).toThrow(/already has depth-wise LoRA/);
    const o = linearAt(model.blocks[0], 'attn.o');
    expect(() => tidy(() => o.forward(fromValues(new Float32Array(16), [1, 16], o.weight.backend)))).toThrow(/ForwardContext/);
    lora.remove();
  });
});
