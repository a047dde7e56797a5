import { describe, expect, it } from 'vitest';
import { Generator, type Tensor, matmul, noGrad, tidy } from '@rrt/tensor';
import { ServingEngine } from './engine/index.js';
import { evaluateExits } from './quality.js';
import { type ExitPolicy, marginExit, maxProbExit, maxProbability, parseExitPolicy, topMargin } from './policies.js';
import { ExitRouter, routerExit, trainExitRouter } from './router.js';
import { mixedRequests, tinyLooped } from './testing.test-util.js';

describe('margin exit', () => {
  it('topMargin is the gap between the two largest logits', () => {
    expect(topMargin(Float32Array.from([0.5, 3, -1, 2]))).toBeCloseTo(1, 6);
    expect(topMargin(Float32Array.from([2, 2, 1]))).toBe(0);
    expect(topMargin(Float32Array.from([7]))).toBe(0);
    expect(marginExit(0.5).shouldExit(Float32Array.from([0, 1, 0.4]), 0, 2)).toBe(true);
    expect(marginExit(0.7).shouldExit(Float32Array.from([0, 1, 0.4]), 0, 2)).toBe(false);
    expect(parseExitPolicy('margin:1.5').name).toBe('margin:1.5');
    expect(() => marginExit(-1)).toThrow(/>= 0/);
  });
});

describe('exit router', () => {
  const model = tinyLooped({ seed: 6 });
  const rng = new Generator(4);
  const seqs = Array.from({ length: 24 }, () => Array.from({ length: 16 }, () => rng.int(0, model.cfg.vocabSize)));

  it('learns which tokens keep their top-1 at the early exit (better than the label rate alone)', () => {
    const { router, tokens, agreement, finalLoss } = trainExitRouter(model, seqs, { hidden: 32, steps: 150, batch: 256, seed: 1 });
    expect(tokens).toBe(24 * 16);
    expect(router.exits).toBe(1);
    const p = agreement[0];
    expect(p).toBeGreaterThan(0.05);
    expect(p).toBeLessThan(0.95);
    // A constant predictor's cross-entropy is the label entropy; the router must beat it clearly.
    const labelEntropy = -(p * Math.log(p) + (1 - p) * Math.log(1 - p));
    expect(finalLoss[0]).toBeLessThan(0.85 * labelEntropy);
  });

  it('round-trips through JSON and rejects malformed input', () => {
    const router = new ExitRouter(model.cfg.hiddenSize, 1, { hidden: 8, seed: 3, backend: model.embed.weight.backend });
    const x = tidy(() => noGrad(() => model.norm.forward(model.embedTokens([1, 2, 3], 1, 3, Int32Array.from([0, 1, 2])))).keep());
    const json = JSON.parse(JSON.stringify(router.toJSON()));
    const again = ExitRouter.fromJSON(json, model.embed.weight.backend);
    expect(Array.from(again.probabilities(x, 0))).toEqual(Array.from(router.probabilities(x, 0)));
    expect(() => ExitRouter.fromJSON({ ...json, format: 'other' })).toThrow(/not an rrt exit router/);
    expect(() => ExitRouter.fromJSON({ ...json, exits: [{ ...json.exits[0], b1: [1, 2] }] })).toThrow(/b1 must be 8 finite numbers/);
    expect(() => router.probabilities(x, 1)).toThrow(/out of range/);
    expect(() => routerExit(router, 1)).toThrow(/\(0, 1\)/);
    expect(() => parseExitPolicy('router:0.5')).toThrow(/needs a trained exit router/);
    expect(parseExitPolicy('router:0.5', router).name).toBe('router:0.5');
    x.dispose();
  });

  it('the engine asks a hidden-state policy before the head: same tokens as the logits rule it mirrors, one head row per token', () => {
    // maxProbExit(0.15) computed from the normed hidden state through the (tied) head.
    const threshold = 0.15;
    const mirrored: ExitPolicy = {
      name: 'mirror',
      shouldExit: () => {
        throw new Error('not called for a hidden-state policy');
      },
      exitFromHidden(normed: Tensor) {
        const V = model.cfg.vocabSize;
        const logits = matmul(normed, model.embed.weight, { transB: true }).dataSync();
        return Array.from({ length: normed.shape[0] }, (_, i) => maxProbability(logits.subarray(i * V, (i + 1) * V)) >= threshold);
      },
    };
    const reqs = mixedRequests(40, model.cfg.vocabSize, { seed: 31, maxNew: 12 });
    const viaLogits = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 10, exitPolicy: maxProbExit(threshold) });
    const want = viaLogits.serve(reqs);
    const viaHidden = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 10, exitPolicy: mirrored });
    const got = viaHidden.serve(reqs);
    got.forEach((r, i) => {
      expect(r.tokens).toEqual(want[i].tokens);
      expect(r.exitLoops).toEqual(want[i].exitLoops);
    });
    const a = viaLogits.stats(), b = viaHidden.stats();
    expect(b.exitsPerLoop[0]).toBeGreaterThan(0);
    expect(b.exitsPerLoop[1]).toBeGreaterThan(0);
    // Each token meets the head once; the logits rule also pays for every check that continued.
    expect(b.headRows).toBe(b.tokens);
    expect(a.headRows).toBe(a.tokens + a.exitsPerLoop[1] - reqs.length);
    // evaluateExits takes the same path.
    const tf = { logits: evaluateExits(model, seqs.slice(0, 6), { policy: maxProbExit(threshold) }), hidden: evaluateExits(model, seqs.slice(0, 6), { policy: mirrored }) };
    expect(tf.hidden.exitsPerLoop).toEqual(tf.logits.exitsPerLoop);
    expect(tf.hidden.nll).toBeCloseTo(tf.logits.nll, 9);
  });

  it('a trained router serves: batching does not change its tokens, and it exits at both loops', () => {
    const { router } = trainExitRouter(model, seqs, { hidden: 16, steps: 60, batch: 256 });
    const policy = routerExit(router, 0.5);
    const reqs = mixedRequests(30, model.cfg.vocabSize, { seed: 7, maxNew: 10 });
    const batched = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 8, exitPolicy: policy });
    const got = batched.serve(reqs);
    const alone = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 1, exitPolicy: policy }).serve(reqs);
    got.forEach((r, i) => expect(r.tokens).toEqual(alone[i].tokens));
    const st = batched.stats();
    expect(st.exitsPerLoop[0]).toBeGreaterThan(0);
    expect(st.exitsPerLoop[1]).toBeGreaterThan(reqs.length);
  });
});
