import { describe, expect, it } from 'vitest';
import {
  AdamW, Generator, add, availableBackends, crossEntropy, gelu, matmul, mul, noGrad, randn, randintArray, sum, tensor, tidy, zeros,
  dispose, getBackend, setBackend, backendByName, listBackends,
} from './index.js';

describe.each(availableBackends().map((b) => [b.name, b] as const))('memory on %s', (_n, backend) => {
  it('tidy frees intermediates and keeps returned tensors', () => {
    const before = backend.memory().storages;
    const kept = tidy(() => {
      const a = tensor([1, 2, 3], undefined, { backend });
      const b = mul(a, 2);
      return { out: add(b, 1), list: [b] };
    });
    expect(backend.memory().storages - before).toBe(2);
    expect(Array.from(kept.out.dataSync())).toEqual([3, 5, 7]);
    dispose(kept);
    expect(backend.memory().storages).toBe(before);
  });

  it('the finalizer safety net watches only tensors that leave every tidy scope', () => {
    let temp = null as ReturnType<typeof tensor> | null, kept = null as ReturnType<typeof tensor> | null;
    const outer = tidy(() => {
      const inner = tidy(() => {
        temp = tensor([1, 2], undefined, { backend });
        kept = mul(temp, 3).keep();
        const r = add(temp, 1);
        // Still inside a scope: the scopes, not the finalizer, account for these.
        expect(r.hasSafetyNet || temp.hasSafetyNet || kept.hasSafetyNet).toBe(false);
        return r;
      });
      // Handed to the enclosing scope: still scope-managed; the kept one left the scopes.
      expect(inner.hasSafetyNet).toBe(false);
      expect(kept!.hasSafetyNet).toBe(true);
      expect(temp!.isDisposed).toBe(true);
      return inner;
    });
    expect(outer.hasSafetyNet).toBe(true);
    expect(tensor([1], undefined, { backend }).hasSafetyNet).toBe(true);
    // A scope that throws leaves its tensors alive, watched by the safety net.
    let leaked = null as ReturnType<typeof tensor> | null;
    expect(() => tidy(() => {
      leaked = tensor([5], undefined, { backend });
      throw new Error('boom');
    })).toThrow('boom');
    expect(leaked!.isDisposed).toBe(false);
    expect(leaked!.hasSafetyNet).toBe(true);
    dispose([outer, kept, leaked]);
  });

  it('nested tidy moves returned tensors to the parent scope', () => {
    const before = backend.memory().storages;
    tidy(() => {
      const inner = tidy(() => add(tensor([1], undefined, { backend }), 1));
      expect(inner.isDisposed).toBe(false);
    });
    expect(backend.memory().storages).toBe(before);
  });

  // The wasm/JS heaps get the full 10,000 steps; the gpu backend (software Vulkan in CI) 1,000.
  const steps = backend.name === 'gpu' ? 1_000 : 10_000;
  it(`${steps} training steps of a small MLP run at flat memory`, () => {
    const rng = new Generator(1);
    const opts = { backend, rng, requiresGrad: true, std: 0.3 };
    const w1 = randn([8, 16], opts).keep(), b1 = zeros([16], { backend, requiresGrad: true }).keep();
    const w2 = randn([16, 4], opts).keep();
    const opt = new AdamW([w1, b1, w2], { lr: 1e-2 });
    const x = randn([32, 8], { backend, rng }).keep();
    const targets = randintArray(0, 4, 32, rng);
    const samples: number[] = [];
    let first = 0, last = 0;
    for (let step = 0; step < steps; step++) {
      const loss = tidy(() => {
        const h = gelu(add(matmul(x, w1), b1), 'tanh');
        const l = crossEntropy(matmul(h, w2), targets);
        l.backward();
        opt.step();
        opt.zeroGrad();
        return l.item();
      });
      if (step === 0) first = loss;
      last = loss;
      if (step >= 100 && step % (steps / 10) === 0) samples.push(backend.memory().bytesInUse);
    }
    expect(last).toBeLessThan(first * 0.5);
    // Flat: the bytes in use after step 100 never change.
    expect(new Set(samples).size).toBe(1);
    expect(backend.memory().bytesReserved).toBeLessThanOrEqual(samples[0] * 4 + 64 * 1024 * 1024);
    dispose([w1, b1, w2, x]);
  });
});

describe('autograd', () => {
  it('noGrad records nothing', () => {
    const w = tensor([1, 2], undefined, { requiresGrad: true });
    const y = noGrad(() => mul(w, w));
    expect(y.requiresGrad).toBe(false);
    expect(() => sum(y).backward()).toThrow(/does not require gradients/);
  });
  it('detach cuts the graph', () => {
    const w = tensor([3], undefined, { requiresGrad: true });
    sum(mul(w, w.detach())).backward();
    expect(w.grad!.item()).toBe(3);
  });
  it('backward with an explicit upstream gradient', () => {
    const w = tensor([1, 2, 3], undefined, { requiresGrad: true });
    mul(w, w).backward(tensor([1, 0, 2]));
    expect(Array.from(w.grad!.dataSync())).toEqual([2, 0, 12]);
  });
  it('a parameter used at several places gets the sum of the gradients (layer tying)', () => {
    const w = tensor([[0.5, -1], [2, 0.25]], undefined, { requiresGrad: true });
    const x = tensor([[1, 2]]);
    sum(matmul(matmul(x, w), w)).backward();
    // d/dw of sum(x w w): untied copies a, b: grad_a = x^T (1 b^T), grad_b = (x a)^T 1.
    const a = [[0.5, -1], [2, 0.25]];
    const xa = [1 * a[0][0] + 2 * a[1][0], 1 * a[0][1] + 2 * a[1][1]];
    const rowB = [a[0][0] + a[0][1], a[1][0] + a[1][1]];
    const want = [[1 * rowB[0] + xa[0], 1 * rowB[1] + xa[0]], [2 * rowB[0] + xa[1], 2 * rowB[1] + xa[1]]];
    const got = w.grad!.toArray() as number[][];
    for (let i = 0; i < 2; i++) for (let j = 0; j < 2; j++) expect(got[i][j]).toBeCloseTo(want[i][j], 5);
  });
  it('freeIntermediates frees the graph during backward and gives the same gradients', () => {
    const backend = getBackend();
    const grads = (free: boolean) => {
      const w = tensor([[0.5, -1], [2, 0.25]], undefined, { requiresGrad: true });
      const x = tensor([[1, 2], [3, -1]]);
      const before = backend.memory().storages;
      let live = 0;
      tidy(() => {
        const h = gelu(matmul(x, w));
        const kept = mul(h, 3).keep();
        const loss = sum(mul(matmul(h, w), kept));
        loss.backward(undefined, { freeIntermediates: free });
        live = backend.memory().storages - before;
        // The graph's intermediates are gone with free; the kept one and the root are not.
        if (free) expect(() => h.dataSync()).toThrow(/after dispose/);
        else expect(h.dataSync().length).toBe(4);
        expect(kept.dataSync().length).toBe(4);
        expect(loss.item()).toBeTypeOf('number');
        kept.dispose();
      });
      expect(backend.memory().storages).toBe(before + 1); // w.grad
      return { grad: Array.from(w.grad!.dataSync()), live };
    };
    const kept = grads(false), freed = grads(true);
    expect(freed.grad).toEqual(kept.grad);
    expect(freed.live).toBeLessThan(kept.live);
  });
});

describe('backends', () => {
  it('the active backend is reported and can be switched', () => {
    const prev = getBackend().name;
    expect(listBackends()).toContain('ref');
    expect(setBackend('ref').info().name).toBe('ref');
    expect(tensor([1]).backend.name).toBe('ref');
    setBackend(prev);
  });
  it('unknown backends are a clear error', () => {
    expect(() => backendByName('tpu')).toThrow(/unknown backend "tpu"; registered backends: /);
  });
  it('random creation is reproducible from a seed', () => {
    const a = randn([5], { rng: new Generator(42) }).dataSync();
    const b = randn([5], { rng: new Generator(42) }).dataSync();
    expect(Array.from(a)).toEqual(Array.from(b));
  });
});
