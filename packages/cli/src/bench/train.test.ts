import { describe, expect, it } from 'vitest';
import { rrt } from '../test-util.js';
import { setBackend } from '@rrt/tensor';
import { benchTrain, estimateMemory, REFERENCE_SHAPE, TINY_SHAPE } from './train.js';

describe('rrt bench train', () => {
  it('--json reports a tiny model step on the ref backend, with a profile', async () => {
    const r = await rrt(['bench', 'train', '--backend', 'ref', '--tiny', '--steps', '2', '--profile', '--no-tfjs', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.command).toBe('bench train');
    expect(doc.backend.name).toBe('ref');
    expect(doc.steps).toBe(2);
    expect(doc.shape).toMatchObject({ d: 32, layers: 2, seq: 16, batch: 2 });
    for (const key of ['medianStepMs', 'tokensPerS', 'peakRssBytes', 'firstLoss', 'lastLoss', 'params']) expect(doc[key]).toBeGreaterThan(0);
    expect(doc.heap.bytesInUse).toBeGreaterThan(0);
    expect(doc.measured.afterForwardBytes).toBeGreaterThan(doc.estimate.paramsBytes);
    expect(doc.estimate.totalBytes).toBe(doc.estimate.paramsBytes * 4 + doc.estimate.activationsBytes);
    const kernels = doc.profile.map((k: { kernel: string }) => k.kernel);
    expect(kernels).toContain('matmul');
    expect(kernels).toContain('adamw');
    expect(kernels).toContain('other');
    const share = doc.profile.reduce((s: number, k: { fraction: number }) => s + k.fraction, 0);
    expect(share).toBeGreaterThan(0.95);
    expect(share).toBeLessThan(1.05);
    expect(doc.tfjs).toBeUndefined();
  });

  it('human output names the step time and memory', async () => {
    const r = await rrt(['bench', 'train', '--backend', 'ref', '--tiny', '--steps', '1', '--no-tfjs']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/median of 1 steps: .* tokens\/s/);
    expect(r.stdout).toMatch(/estimate: .* activations/);
  });

  it('estimates the reference step at params 16 bytes each plus activations', () => {
    const e = estimateMemory(REFERENCE_SHAPE, 1000);
    expect(e.paramsBytes + e.gradsBytes + e.adamwBytes).toBe(16_000);
    expect(e.activationsBytes).toBeGreaterThan(100e6);
  });

  it('memory mode samples RSS and the wasm heap; both stay flat once the step has run', async () => {
    setBackend('cpu');
    const r = await benchTrain({ shape: TINY_SHAPE, steps: 12, memory: true });
    expect(r.memoryTrace!.map((x) => x.step)).toEqual([1, 10, 12]);
    for (const x of r.memoryTrace!) {
      expect(x.rssBytes).toBeGreaterThan(0);
      expect(x.heapBytesCarved).toBeGreaterThanOrEqual(x.heapBytesInUse);
    }
    const [, at10, at12] = r.memoryTrace!;
    expect(at12.heapBytesInUse).toBe(at10.heapBytesInUse);
    expect(at12.heapBytesCarved).toBe(at10.heapBytesCarved);
    expect(r.memoryGrowth).toMatchObject({ fromStep: 1, toStep: 12 });
    const b = r.rssBreakdown;
    expect(b.wasmCarvedBytes).toBeGreaterThan(0);
    expect(b.peakLiveBytes).toBeGreaterThan(r.estimate.paramsBytes);
    expect(b.wasmCarvedBytes + b.v8HeapTotalBytes + b.externalBytes + b.otherBytes).toBeGreaterThanOrEqual(b.rssBytes);
    // Fewer than 100 steps and no memory flag: no trace.
    expect((await benchTrain({ shape: TINY_SHAPE, steps: 2 })).memoryTrace).toBeUndefined();
  });
});
