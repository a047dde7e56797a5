// The shipped default model on the gpu backend (its best gpu.js mode here) against the cpu
// backend: one forward and one backward, loss and every parameter's gradient.

import { describe, expect, it } from 'vitest';
import { backendByName, tidy, type Backend } from '@rrt/tensor';
import { loadDefaultModel } from './default-model.js';
import { nextTokenLoss } from './losses.js';

// Software GPUs (lavapipe) compile each kernel with LLVM: slow on a busy machine.
const SLOW = 600_000;

async function lossAndGrads(backend: Backend, ids: Int32Array, targets: Int32Array, shape: [number, number]): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const { model } = await loadDefaultModel({ backend });
  model.train();
  const loss = tidy(() => {
    const l = nextTokenLoss(model.forward(ids, shape).logits, targets);
    l.backward();
    return l.item();
  });
  const grads = new Map<string, Float32Array>();
  for (const [name, p] of model.namedParameters()) grads.set(name, p.grad!.dataSync().slice());
  model.dispose();
  return { loss, grads };
}

describe('default model on the gpu backend', () => {
  it('one forward and backward match the cpu backend', async () => {
    const gpu = backendByName('gpu');
    const B = 2, T = 32;
    const stream = Int32Array.from({ length: B * T + 1 }, (_, i) => (i * 37 + ((i * i) % 11)) % 2048);
    const ids = stream.slice(0, B * T), targets = stream.slice(1);
    const want = await lossAndGrads(backendByName('cpu'), ids, targets, [B, T]);
    const got = await lossAndGrads(gpu, ids, targets, [B, T]);
    console.info(`gpu backend mode: ${String(gpu.info().details.mode)}; loss ${got.loss} (cpu ${want.loss})`);
    expect(Math.abs(got.loss - want.loss)).toBeLessThan(1e-4 * want.loss);
    expect([...got.grads.keys()]).toEqual([...want.grads.keys()]);
    for (const [name, w] of want.grads) {
      const g = got.grads.get(name)!;
      let scale = 1e-8, err = 0;
      for (let i = 0; i < w.length; i++) {
        scale = Math.max(scale, Math.abs(w[i]!));
        err = Math.max(err, Math.abs(g[i]! - w[i]!));
      }
      expect(err / scale, `gradient of ${name}`).toBeLessThan(2e-3);
    }
  }, SLOW);
});
