// Models on the gpu backend: the shipped default model (its best gpu.js mode here) against the
// cpu backend, one forward and one backward, loss and every parameter's gradient; and a tiny
// model trained in every gpu.js mode that runs here against the ref backend.

import { afterAll, describe, expect, it } from 'vitest';
import { AdamW, Generator, GPU_MODES, backendByName, createGpuBackend, tidy, type Backend, type GpuBackend, type GpuMode } from '@rrt/tensor';
import { defineConfig } from './config.js';
import { loadDefaultModel } from './default-model.js';
import { nextTokenLoss } from './losses.js';
import { CausalLM } from './lm.js';

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

const modes = new Map<GpuMode, GpuBackend>();
for (const mode of GPU_MODES) {
  try {
    modes.set(mode, createGpuBackend({ mode, name: `gpu-${mode}-model` }));
  } catch {
    // A mode that cannot run here: @rrt/tensor's gpu.test.ts reports why.
  }
}
afterAll(() => {
  for (const b of modes.values()) b.close();
});

const tiny = defineConfig('llama', { vocabSize: 32, hiddenSize: 16, numLayers: 2, numHeads: 2, intermediateSize: 32, maxPositions: 16 });

/** Losses of `steps` AdamW steps of a tiny llama-family model on a fixed token stream. */
function trainLosses(backend: Backend, steps: number): number[] {
  const model = new CausalLM(tiny, { backend, rng: new Generator(1) });
  const opt = new AdamW(model.parameters(), { lr: 1e-2 });
  const B = 2, T = 8;
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const ids: number[] = [], targets: number[] = [];
    for (let i = 0; i < B * T; i++) {
      ids.push((s * 5 + i * 7 + 3) % 32);
      targets.push((s * 5 + i * 7 + 10) % 32);
    }
    losses.push(tidy(() => {
      const loss = nextTokenLoss(model.forward(ids, [B, T]).logits, targets);
      loss.backward();
      return loss.item();
    }));
    opt.step();
    opt.zeroGrad();
  }
  model.dispose();
  return losses;
}

describe.each([...modes.keys()])('a 2-layer CausalLM on the gpu backend in %s mode', (mode) => {
  const b = modes.get(mode)!;

  it('trains 20 steps with the same losses as ref', () => {
    const got = trainLosses(b, 20), want = trainLosses(backendByName('ref'), 20);
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i]), `step ${i}: ${got[i]} vs ${want[i]}`).toBeLessThan(2e-4 * Math.max(1, want[i]));
    expect(got[19]).toBeLessThan(got[0]);
  }, SLOW);

  it('compiles each kernel once: a repeated training step compiles nothing new', () => {
    trainLosses(b, 2);
    const before = b.compiledKernels;
    trainLosses(b, 2);
    expect(b.compiledKernels).toBe(before);
  }, SLOW);
});
