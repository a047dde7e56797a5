import { describe, expect, it } from 'vitest';
import { Generator, noGrad, reshape, tensor, tidy } from '@rrt/tensor';
import { ServingKVCache, fillExitedKV, kvFillName, projectKV } from './kv-fill.js';
import { ServingEngine } from './engine/index.js';
import { maxProbExit } from './policies.js';
import { StatePredictor, fitStatePredictor } from './state-predictor.js';
import { exactBackend, mixedRequests, runTo, tinyLooped } from './testing.test-util.js';

function sequences(n: number, len: number, vocab: number, seed = 4): number[][] {
  const rng = new Generator(seed);
  return Array.from({ length: n }, () => Array.from({ length: len }, () => rng.int(0, vocab)));
}

function closeTo(a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-5): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(tol);
}

describe('fitStatePredictor', () => {
  const model = tinyLooped({ seed: 3 });
  const D = model.cfg.hiddenSize;
  const seqs = sequences(12, 20, model.cfg.vocabSize);

  it('solves the ridge normal equations of each skipped depth and predicts better than no map', () => {
    const ridge = 1e-2;
    const p = fitStatePredictor(model, seqs, { ridge });
    // 2 blocks x 2 loops: the one early exit leaves after depth 1 (exit depth 2); depth 2's input is
    // the exit state itself, so depth 3 is the only one with a map.
    expect(p.pairs).toEqual([[2, 3]]);
    // Recomputed independently in float64: exit states h, targets y = x_3 - h, residuals r = y - (h W + b).
    const H: number[][] = [], Y: number[][] = [];
    for (const s of seqs) {
      noGrad(() => tidy(() => {
        const { hidden } = model.forward(s, [1, s.length], { hidden: true });
        const h = hidden![2].dataSync(), x = hidden![3].dataSync();
        for (let t = 0; t < s.length; t++) {
          H.push(Array.from(h.subarray(t * D, (t + 1) * D)));
          Y.push(Array.from(x.subarray(t * D, (t + 1) * D), (v, j) => v - h[t * D + j]));
        }
      }));
    }
    const n = H.length;
    const predicted = noGrad(() => tidy(() => p.predict(tensor(Float32Array.from(H.flat()), [n, D], { backend: exactBackend() }), 2, 3).dataSync()));
    const R = H.map((h, t) => h.map((v, j) => Y[t][j] - (predicted[t * D + j] - v)));
    const W = p.toJSON().maps[0].w;
    const meanH = Array.from({ length: D }, (_, i) => H.reduce((a, h) => a + h[i], 0) / n);
    let trace = 0;
    for (let i = 0; i < D; i++) trace += H.reduce((a, h) => a + (h[i] - meanH[i]) ** 2, 0) / n;
    const lambda = ridge * (trace / D);
    // The bias is not penalised: residuals average to zero. The weights: Cov(h, r) = lambda W.
    closeTo(Array.from({ length: D }, (_, j) => R.reduce((a, r) => a + r[j], 0) / n), new Array(D).fill(0), 1e-4);
    let worst = 0;
    for (let i = 0; i < D; i++) {
      for (let j = 0; j < D; j++) {
        const cov = H.reduce((a, h, t) => a + (h[i] - meanH[i]) * R[t][j], 0) / n;
        worst = Math.max(worst, Math.abs(cov - lambda * W[i * D + j]));
      }
    }
    expect(worst).toBeLessThan(1e-4);
    // Squared error against propagate's estimate (x_3 ~ h, i.e. y ~ 0).
    const sq = (m: number[][]): number => m.reduce((a, r) => a + r.reduce((b, v) => b + v * v, 0), 0);
    expect(sq(R)).toBeLessThan(0.9 * sq(Y));
    p.dispose();
  });

  it('round-trips through JSON and rejects what it cannot use', () => {
    const p = fitStatePredictor(model, seqs.slice(0, 4));
    const q = StatePredictor.fromJSON(JSON.parse(JSON.stringify(p.toJSON())), exactBackend());
    noGrad(() => tidy(() => {
      const h = tensor(Float32Array.from({ length: 3 * D }, (_, i) => Math.sin(i)), [3, D], { backend: exactBackend() });
      closeTo(q.predict(h, 2, 3).dataSync(), p.predict(h, 2, 3).dataSync(), 1e-6);
      expect(p.predict(h, 2, 2)).toBe(h);
      expect(() => p.predict(h, 1, 3)).toThrow(/no map from exit depth 1 to depth 3.*2->3/);
    }));
    expect(() => StatePredictor.fromJSON({ format: 'rrt-exit-router' } as never)).toThrow(/not an rrt state predictor/);
    const json = p.toJSON();
    expect(() => StatePredictor.fromJSON({ ...json, maps: [{ ...json.maps[0], b: [1, 2] }] })).toThrow(/maps\[0\] needs w of 1024 and b of 32/);
    expect(() => StatePredictor.fromJSON({ ...json, maps: [{ ...json.maps[0], depth: 2 }] })).toThrow(/1 <= exitDepth < depth/);
    expect(() => fitStatePredictor(model, [])).toThrow(/no sequences/);
    expect(() => new ServingEngine(model, { kvFill: new StatePredictor(16, []) })).toThrow(/fitted for 16 features, the model has 32/);
    p.dispose();
    q.dispose();
  });
});

describe('fillExitedKV with a StatePredictor', () => {
  // 2 blocks x 3 loops (schedule 0 1 0 1 0 1): exits after depths 1 and 3 (exit depths 2 and 4).
  const model = tinyLooped({ seed: 8, schedule: [0, 1, 0, 1, 0, 1] });
  const D = model.cfg.hiddenSize;
  const predictor = fitStatePredictor(model, sequences(8, 16, model.cfg.vocabSize, 2));


  it('projects each skipped depth from the estimate of its input, for tokens leaving at different exits in one call', () => {
    expect(predictor.pairs.map(([e, l]) => `${e}->${l}`).sort()).toEqual(['2->3', '2->4', '2->5', '4->5']);
    noGrad(() => tidy(() => {
      const a = new ServingKVCache(model, 4), b = new ServingKVCache(model, 4);
      const ha = runTo(model, a, 5, 0, 2), hb = runTo(model, b, 9, 0, 4);
      const both = tensor(Float32Array.from([...ha.dataSync(), ...hb.dataSync()]), [2, D], { backend: exactBackend() });
      const n = fillExitedKV(model, predictor, both, [{ cache: a, exitDepth: 2, position: 0, row: 0 }, { cache: b, exitDepth: 4, position: 0, row: 1 }]);
      expect(n).toBe(4 + 2);
      for (const [cache, h, e] of [[a, ha, 2], [b, hb, 4]] as const) {
        for (let l = e; l < 6; l++) {
          const x = predictor.predict(h, e, l);
          const [k, v] = projectKV(model.blocks[model.schedule[l]], x, { depth: Int32Array.of(l), positions: Int32Array.of(0), batch: 1, seq: 1 });
          closeTo(cache.layers[l].entry(0)[0], k.dataSync());
          closeTo(cache.layers[l].entry(0)[1], v.dataSync());
        }
      }
      // Depth e is exactly propagate's entry: its input is the exit state.
      const c = new ServingKVCache(model, 4);
      fillExitedKV(model, 'propagate', runTo(model, c, 5, 0, 2), [{ cache: c, exitDepth: 2, position: 0, row: 0 }]);
      closeTo(c.layers[2].entry(0)[0], a.layers[2].entry(0)[0]);
      expect(Math.max(...Array.from(c.layers[3].entry(0)[0], (v, i) => Math.abs(v - a.layers[3].entry(0)[0][i])))).toBeGreaterThan(1e-4);
      for (const x of [a, b, c]) x.dispose();
    }));
  });

  it('a model whose exits skip one depth each gets an empty predictor that fills like propagate', () => {
    const one = tinyLooped({ seed: 8, blocks: 1, schedule: [0, 0] });
    const empty = fitStatePredictor(one, sequences(2, 8, one.cfg.vocabSize));
    expect(empty.pairs).toEqual([]);
    expect(StatePredictor.fromJSON(empty.toJSON()).pairs).toEqual([]);
    const reqs = mixedRequests(12, one.cfg.vocabSize, { seed: 5, maxNew: 8 });
    const serve = (kvFill: 'propagate' | StatePredictor) => {
      const engine = new ServingEngine(one, { maxBatch: 4, exitPolicy: maxProbExit(0.1), kvFill });
      const tokens = engine.serve(reqs).map((r) => r.tokens);
      expect(engine.stats().kvFilled).toBeGreaterThan(0);
      return tokens;
    };
    expect(serve(empty)).toEqual(serve('propagate'));
  });

  it('serving with it: batching changes no token and the report names it predict', () => {
    const reqs = mixedRequests(40, model.cfg.vocabSize, { seed: 12, maxNew: 10 });
    const policy = maxProbExit(0.15);
    const batched = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 8, exitPolicy: policy, kvFill: predictor });
    const got = batched.serve(reqs);
    const alone = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 1, exitPolicy: policy, kvFill: predictor }).serve(reqs);
    got.forEach((r, i) => {
      expect(r.tokens).toEqual(alone[i].tokens);
      expect(r.exitLoops).toEqual(alone[i].exitLoops);
    });
    const st = batched.stats();
    expect(st.kvFill).toBe('predict');
    expect(kvFillName(predictor)).toBe('predict');
    expect(st.exitsPerLoop[0] + st.exitsPerLoop[1]).toBeGreaterThan(0);
    expect(st.kvFilled).toBeGreaterThan(0);
  });
});
