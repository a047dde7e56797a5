import { describe, expect, it } from 'vitest';
import { Generator, availableBackends, randn, tidy } from '@rrt/tensor';
import { IGNORE_INDEX, distillationLoss, nextTokenLoss } from './losses.js';

function logSoftmaxRow(x: number[], t = 1): number[] {
  const s = x.map((v) => v / t);
  const m = Math.max(...s);
  const lse = m + Math.log(s.reduce((a, v) => a + Math.exp(v - m), 0));
  return s.map((v) => v - lse);
}
function rows(data: Float32Array, V: number): number[][] {
  return Array.from({ length: data.length / V }, (_, i) => Array.from(data.subarray(i * V, i * V + V)));
}
function kl(p: number[], q: number[]): number {
  // KL(p || q) from log-probabilities.
  return p.reduce((s, lp, i) => s + Math.exp(lp) * (lp - q[i]), 0);
}

describe.each(availableBackends().map((b) => [b.name, b] as const))('losses on %s', (_n, backend) => {
  const B = 2, T = 3, V = 5;
  const make = (seed: number) => randn([B, T, V], { rng: new Generator(seed), backend });
  const targets = Int32Array.from([0, 4, 2, 1, 3, 3]);

  it('nextTokenLoss is the mean cross-entropy and skips IGNORE_INDEX', () => {
    tidy(() => {
      const logits = make(1);
      const r = rows(logits.dataSync(), V);
      const want = r.reduce((s, row, i) => s - logSoftmaxRow(row)[targets[i]], 0) / r.length;
      expect(nextTokenLoss(logits, targets).item()).toBeCloseTo(want, 5);
      const masked = Int32Array.from(targets);
      masked[1] = IGNORE_INDEX;
      const want2 = r.reduce((s, row, i) => (i === 1 ? s : s - logSoftmaxRow(row)[targets[i]]), 0) / (r.length - 1);
      expect(nextTokenLoss(logits, masked).item()).toBeCloseTo(want2, 5);
    });
  });

  it('forward / reverse KL with temperature, and the mix', () => {
    tidy(() => {
      const s = make(2), t = make(3);
      const rs = rows(s.dataSync(), V), rt = rows(t.dataSync(), V);
      const temp = 2;
      const fwd = rs.reduce((acc, row, i) => acc + kl(logSoftmaxRow(rt[i], temp), logSoftmaxRow(row, temp)), 0) / rs.length * temp * temp;
      const rev = rs.reduce((acc, row, i) => acc + kl(logSoftmaxRow(row, temp), logSoftmaxRow(rt[i], temp)), 0) / rs.length * temp * temp;
      expect(distillationLoss(s, t, null, { kind: 'forward_kl', temperature: temp }).item()).toBeCloseTo(fwd, 5);
      expect(distillationLoss(s, t, null, { kind: 'reverse_kl', temperature: temp }).item()).toBeCloseTo(rev, 5);
      const ce = nextTokenLoss(s, targets).item();
      expect(distillationLoss(s, null, targets, { kind: 'ce' }).item()).toBeCloseTo(ce, 6);
      const mix = distillationLoss(s, t, targets, { kind: 'mix', temperature: temp, alpha: 0.25 }).item();
      expect(mix).toBeCloseTo(0.75 * ce + 0.25 * fwd, 5);
      const mixRev = distillationLoss(s, t, targets, { kind: 'mix', temperature: temp, alpha: 0.25, mixDirection: 'reverse' }).item();
      expect(mixRev).toBeCloseTo(0.75 * ce + 0.25 * rev, 5);
      // A student equal to its teacher has zero KL.
      expect(distillationLoss(t, t, null, { kind: 'forward_kl' }).item()).toBeCloseTo(0, 6);
    });
  });

  it('KL skips ignored positions', () => {
    tidy(() => {
      const s = make(4), t = make(5);
      const rs = rows(s.dataSync(), V), rt = rows(t.dataSync(), V);
      const masked = Int32Array.from(targets);
      masked[0] = IGNORE_INDEX;
      masked[5] = IGNORE_INDEX;
      const want = [1, 2, 3, 4].reduce((acc, i) => acc + kl(logSoftmaxRow(rt[i]), logSoftmaxRow(rs[i])), 0) / 4;
      expect(distillationLoss(s, t, masked, { kind: 'forward_kl' }).item()).toBeCloseTo(want, 5);
    });
  });

  it('gradients reach the student only', () => {
    tidy(() => {
      const s = make(6).requireGrad(), t = make(7).requireGrad();
      distillationLoss(s, t, targets, { kind: 'mix' }).backward();
      expect(s.grad).not.toBeNull();
      expect(t.grad).toBeNull();
      s.zeroGrad();
    });
  });

  it('rejects bad options with a clear message', () => {
    tidy(() => {
      const s = make(8), t = make(9);
      expect(() => distillationLoss(s, t, null, { kind: 'mix' })).toThrow(/needs targets/);
      expect(() => distillationLoss(s, null, targets, { kind: 'forward_kl' })).toThrow(/needs teacher logits/);
      expect(() => distillationLoss(s, t, targets, { kind: 'mix', alpha: 2 })).toThrow(/alpha/);
      expect(() => distillationLoss(s, t, targets, { kind: 'forward_kl', temperature: 0 })).toThrow(/temperature/);
      expect(() => distillationLoss(s, t, targets, { kind: 'kl' as never })).toThrow(/unknown kind/);
    });
  });
});
