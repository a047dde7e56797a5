import { describe, expect, it } from 'vitest';
import { AdamW, SGD, clipGradNorm, tensor, warmupCosine, warmupStableDecay, constantLr, sum, mul } from './index.js';

function setGrad(p: ReturnType<typeof tensor>, g: number[]) {
  sum(mul(p, tensor(g))).backward();
}

describe('AdamW', () => {
  it('matches the closed form of two steps (bias correction, decoupled decay)', () => {
    const p = tensor([1, -2], undefined, { requiresGrad: true });
    const opt = new AdamW([p], { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 });
    const grads = [[0.5, -1], [1, 2]];
    const want = [1, -2];
    const m = [0, 0], v = [0, 0];
    grads.forEach((g, t) => {
      setGrad(p, g);
      opt.step();
      opt.zeroGrad();
      for (let i = 0; i < 2; i++) {
        m[i] = 0.9 * m[i] + 0.1 * g[i];
        v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
        const mh = m[i] / (1 - 0.9 ** (t + 1)), vh = v[i] / (1 - 0.99 ** (t + 1));
        want[i] -= 0.1 * (mh / (Math.sqrt(vh) + 1e-8) + 0.1 * want[i]);
      }
    });
    const got = p.dataSync();
    expect(got[0]).toBeCloseTo(want[0], 5);
    expect(got[1]).toBeCloseTo(want[1], 5);
  });
  it('state round-trips through stateDict', () => {
    const p = tensor([1, 2], undefined, { requiresGrad: true });
    const opt = new AdamW([p], { lr: 0.1 });
    setGrad(p, [1, 1]);
    opt.step();
    const q = tensor(Array.from(p.dataSync()), undefined, { requiresGrad: true });
    const opt2 = new AdamW([q], { lr: 0.1 });
    opt2.loadStateDict(opt.stateDict());
    opt.zeroGrad();
    setGrad(p, [0.5, -0.5]);
    setGrad(q, [0.5, -0.5]);
    opt.step();
    opt2.step();
    expect(Array.from(q.dataSync())).toEqual(Array.from(p.dataSync()));
  });
});

describe('SGD', () => {
  it('momentum follows v = mu v + g, p -= lr v', () => {
    const p = tensor([1], undefined, { requiresGrad: true });
    const opt = new SGD([p], { lr: 0.5, momentum: 0.9 });
    setGrad(p, [1]);
    opt.step();
    opt.zeroGrad();
    setGrad(p, [1]);
    opt.step();
    // v1 = 1, p = 0.5; v2 = 1.9, p = 0.5 - 0.95
    expect(p.item()).toBeCloseTo(-0.45, 6);
  });
});

describe('clipping and schedules', () => {
  it('clips to the global norm and reports the norm before clipping', () => {
    const a = tensor([3], undefined, { requiresGrad: true }), b = tensor([4], undefined, { requiresGrad: true });
    setGrad(a, [3]);
    setGrad(b, [4]);
    expect(clipGradNorm([a, b], 1)).toBeCloseTo(5, 6);
    expect(a.grad!.item()).toBeCloseTo(0.6, 5);
    expect(b.grad!.item()).toBeCloseTo(0.8, 5);
  });
  it('reports a non-finite norm', () => {
    const a = tensor([1], undefined, { requiresGrad: true });
    setGrad(a, [NaN]);
    expect(clipGradNorm([a], 1)).toBeNaN();
  });
  it('schedules', () => {
    expect(constantLr(0.1)(123)).toBe(0.1);
    const c = warmupCosine(1, 10, 110, 0.1);
    expect(c(0)).toBeCloseTo(0.1);
    expect(c(9)).toBeCloseTo(1);
    expect(c(60)).toBeCloseTo(0.55);
    expect(c(110)).toBeCloseTo(0.1);
    const w = warmupStableDecay(1, 10, 100, 0.2, 0);
    expect(w(50)).toBe(1);
    expect(w(90)).toBeCloseTo(0.5);
    expect(w(100)).toBeCloseTo(0);
  });
});
