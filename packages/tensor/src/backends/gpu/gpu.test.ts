// The gpu backend in every gpu.js mode that runs here. ops.test.ts runs every op and gradient on
// the registered `gpu` backend (its best mode); this suite adds the other modes, mode selection,
// and device memory over a long loop (@rrt/layers' gpu-model.test.ts trains a model per mode).

import { existsSync, readdirSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AdamW, Generator, type Backend, type Tensor, add, backendByName, concat, crossEntropy, fromValues, gather, layerNorm,
  logSoftmax, matmul, max, mean, mul, permute, relu, rmsNorm, slice, softmax, sum, tanh, tidy,
} from '../../index.js';
import { createGpuBackend, GPU_MODES, type GpuBackend, type GpuMode } from './index.js';

// Software GPUs compile each kernel with LLVM: slow on a busy machine.
const SLOW = 600_000;

function vulkanDrivers(): string[] {
  const dirs = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d'].filter((d) => existsSync(d));
  return dirs.flatMap((d) => readdirSync(d).filter((f) => f.startsWith('lvp_icd')));
}

const backends = new Map<GpuMode, GpuBackend>();
const skipped = new Map<GpuMode, string>();
for (const mode of GPU_MODES) {
  try {
    backends.set(mode, createGpuBackend({ mode, name: `gpu-${mode}` }));
  } catch (e) {
    skipped.set(mode, (e as Error).message);
  }
}
console.info(
  `gpu backend: modes that run here: ${[...backends.keys()].join(', ') || 'none'}` +
    (skipped.size > 0 ? `; skipped: ${[...skipped].map(([m, why]) => `${m} (${why})`).join('; ')}` : ''),
);
afterAll(() => {
  for (const b of backends.values()) b.close();
});

describe('gpu backend modes', () => {
  it('the registered backend reports the best mode that runs here (or the one RRT_GPU_MODE forces)', () => {
    const b = backendByName('gpu') as GpuBackend;
    const best = (process.env.RRT_GPU_MODE as GpuMode | undefined) || GPU_MODES.find((m) => backends.has(m));
    expect(b.info().details.mode).toBe(best);
    expect(b.mode).toBe(best);
    expect(typeof b.info().details.compiledKernels).toBe('number');
  });

  // CI installs lavapipe; a machine with a Vulkan driver should run WebGPU too, so neither skips this.
  it.runIf(process.env.CI === 'true' || vulkanDrivers().length > 0)('in CI, or where a Vulkan driver is installed, WebGPU runs (Dawn on lavapipe at least)', () => {
    expect(
      skipped.get('webgpu') ?? 'ok',
      `WebGPU did not start (Vulkan drivers: ${vulkanDrivers().join(', ') || 'none'}); Debian 12's own Mesa is too old for Dawn: install mesa-vulkan-drivers from bookworm-backports`,
    ).toBe('ok');
  });

  it('start-up that runs out of time fails at once, naming the mode and the step it was at', () => {
    const t0 = Date.now();
    expect(() => createGpuBackend({ mode: 'webasm', name: 'gpu-slow-start', startTimeoutMs: 5 })).toThrow(
      /gpu\.js mode "webasm" did not start within 5 ms; the device thread was at "[^"]+" \(set RRT_GPU_START_TIMEOUT_MS/,
    );
    expect(Date.now() - t0).toBeLessThan(5000);
    // The mode itself still starts with the default bound.
    const b = createGpuBackend({ mode: 'webasm', name: 'gpu-normal-start' });
    expect(b.mode).toBe('webasm');
    b.close();
  });

  it('a forced mode that cannot run fails creation with the reason', () => {
    for (const [mode, why] of skipped) expect(why).toMatch(new RegExp(`gpu.js mode "${mode}" cannot run here: .+`));
    const prev = process.env.RRT_GPU_MODE;
    process.env.RRT_GPU_MODE = 'metal';
    try {
      expect(() => createGpuBackend()).toThrow(/RRT_GPU_MODE must be one of webgpu, headlessgl, webasm, cpu; got "metal"/);
    } finally {
      if (prev === undefined) delete process.env.RRT_GPU_MODE;
      else process.env.RRT_GPU_MODE = prev;
    }
  });

  it('RRT_GPU_MODE forces a mode', () => {
    const mode = [...backends.keys()].at(-1)!;
    const prev = process.env.RRT_GPU_MODE;
    process.env.RRT_GPU_MODE = mode;
    try {
      const b = createGpuBackend({ name: 'gpu-forced' });
      expect(b.info().details.mode).toBe(mode);
      b.close();
    } finally {
      if (prev === undefined) delete process.env.RRT_GPU_MODE;
      else process.env.RRT_GPU_MODE = prev;
    }
  });
});

const ref = backendByName('ref');

function values(n: number, seed: number, scale = 1): Float32Array {
  const g = new Generator(seed);
  return Float32Array.from({ length: n }, () => g.normal() * scale);
}

/** Runs fn on backend b and on ref with the same inputs; returns both results' values. */
function both(b: Backend, shapes: number[][], fn: (...t: Tensor[]) => Tensor, seed = 1): { got: Float32Array; want: Float32Array } {
  const data = shapes.map((s, i) => values(s.reduce((x, y) => x * y, 1), seed + i));
  const run = (on: Backend) => tidy(() => fn(...shapes.map((s, i) => fromValues(data[i], s, on))).dataSync());
  return { got: run(b), want: run(ref) };
}

function maxRelErr(got: Float32Array, want: Float32Array): number {
  let scale = 1e-6, err = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    err = Math.max(err, Math.abs(got[i] - want[i]));
  }
  return err / scale;
}

// Shapes large enough for the paths small op tests miss: vec4 matmul tiles, chunked reductions,
// repeated ids in the embedding gradient, index arithmetic past 2^16.
const sweep: { name: string; shapes: number[][]; fn: (...t: Tensor[]) => Tensor }[] = [
  { name: 'matmul 33x64x48', shapes: [[33, 64], [64, 48]], fn: (a, b) => matmul(a, b) },
  { name: 'batched matmul with broadcast, transB', shapes: [[2, 3, 17, 20], [3, 12, 20]], fn: (a, b) => matmul(a, b, { transB: true }) },
  { name: 'softmax over 5000 columns', shapes: [[3, 5000]], fn: (a) => softmax(a) },
  { name: 'logSoftmax over 2500 columns', shapes: [[4, 2500]], fn: (a) => logSoftmax(a) },
  { name: 'sum of 300000 values', shapes: [[300000]], fn: (a) => sum(a) },
  { name: 'max over a long axis', shapes: [[7, 4000]], fn: (a) => max(a, 1) },
  { name: 'mean over axis 0 of [3000, 5]', shapes: [[3000, 5]], fn: (a) => mean(a, 0) },
  { name: 'layerNorm of 2048 rows', shapes: [[2048, 12], [12], [12]], fn: (x, w, b) => layerNorm(x, w, b) },
  { name: 'rmsNorm of wide rows', shapes: [[3, 3000], [3000]], fn: (x, w) => rmsNorm(x, w) },
  { name: 'permute of 70000 values', shapes: [[7, 100, 100]], fn: (a) => permute(a, [2, 0, 1]) },
  { name: 'slice, concat, relu, tanh', shapes: [[50, 30]], fn: (a) => concat([relu(slice(a, [[3, 40], [0, 30]])), tanh(a)], 0) },
  { name: 'broadcast mul-add over rank 4', shapes: [[2, 1, 5, 7], [3, 1, 7], [7]], fn: (a, b, c) => add(mul(a, b), c) },
];

describe.each([...backends.keys()])('gpu backend in %s mode', (mode) => {
  const b = backends.get(mode)!;

  for (const c of sweep) {
    it(`${c.name} matches ref`, () => {
      const { got, want } = both(b, c.shapes, c.fn);
      expect(got.length).toBe(want.length);
      expect(maxRelErr(got, want)).toBeLessThan(2e-5);
    }, SLOW);
  }

  it('embedding and cross-entropy gradients with repeated ids and ignored targets', () => {
    const V = 50, D = 9;
    const ids = Array.from({ length: 64 }, (_, i) => (i * 7) % 13);
    const targets = ids.map((id, i) => (i % 5 === 0 ? -100 : (id * 3) % V));
    const grads = (on: Backend) => tidy(() => {
      const table = fromValues(values(V * D, 3), [V, D], on).requireGrad();
      const proj = fromValues(values(D * V, 4), [D, V], on).requireGrad();
      const loss = crossEntropy(matmul(gather(table, ids, [64]), proj), targets);
      loss.backward();
      return [loss.item(), table.grad!.dataSync(), proj.grad!.dataSync()] as const;
    });
    const [lg, tg, pg] = grads(b);
    const [lw, tw, pw] = grads(ref);
    expect(lg).toBeCloseTo(lw, 5);
    expect(maxRelErr(tg, tw)).toBeLessThan(1e-5);
    expect(maxRelErr(pg, pw)).toBeLessThan(1e-5);
  }, SLOW);

  it('1,000 steps of a tiny training loop keep device memory flat', () => {
    const w1 = fromValues(values(8 * 16, 5, 0.3), [8, 16], b).requireGrad();
    const w2 = fromValues(values(16 * 4, 6, 0.3), [16, 4], b).requireGrad();
    const x = fromValues(values(32 * 8, 7), [32, 8], b);
    const targets = Array.from({ length: 32 }, (_, i) => i % 4);
    const opt = new AdamW([w1, w2], { lr: 1e-2 });
    const step = () => {
      const loss = tidy(() => {
        const l = crossEntropy(matmul(relu(matmul(x, w1)), w2), targets);
        l.backward();
        return l.item();
      });
      opt.step();
      opt.zeroGrad();
      return loss;
    };
    let first = 0;
    for (let i = 0; i < 10; i++) first = step();
    const host = b.memory(), device = b.deviceMemory();
    let last = 0;
    for (let i = 10; i < 1000; i++) last = step();
    expect(b.memory()).toEqual(host);
    expect(b.deviceMemory()).toEqual(device);
    expect(last).toBeLessThan(first);
    opt.zeroGrad();
    for (const t of [w1, w2, x]) t.dispose();
  }, SLOW);
});
