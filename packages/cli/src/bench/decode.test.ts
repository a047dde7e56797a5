import { describe, expect, it } from 'vitest';
import { setBackend } from '@rrt/tensor';
import { rrt } from '../test-util.js';
import { benchDecode } from './decode.js';
import { TINY_SHAPE } from './train.js';

describe('rrt bench decode', () => {
  it('--json reports tokens/s per batch size for a tiny model on the ref backend', async () => {
    const r = await rrt(['bench', 'decode', '--backend', 'ref', '--tiny', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.command).toBe('bench decode');
    expect(doc).toMatchObject({ promptTokens: 8, newTokens: 8, maxPositions: 16 });
    expect(doc.runs.map((x: { batch: number }) => x.batch)).toEqual([1, 3]);
    for (const run of doc.runs) for (const key of ['prefillMs', 'stepMs', 'tokensPerS', 'decodeTokensPerS']) expect(run[key]).toBeGreaterThan(0);
    expect(doc.tfjs.note).toMatch(/not measured/);
  });

  it('profile gives each kernel a share of the one-token steps', async () => {
    setBackend('cpu');
    const r = await benchDecode({ shape: TINY_SHAPE, batches: [1, 2], promptTokens: 4, newTokens: 5, profile: true });
    for (const run of r.runs) {
      const kernels = run.profile!.map((k) => k.kernel);
      expect(kernels).toContain('matmul');
      expect(kernels).toContain('other');
      expect(run.profile!.find((k) => k.kernel === 'matmul')!.calls).toBeGreaterThan(0);
      const share = run.profile!.reduce((s, k) => s + k.fraction, 0);
      expect(share).toBeGreaterThan(0.95);
      expect(share).toBeLessThan(1.05);
    }
    expect((await benchDecode({ shape: TINY_SHAPE, batches: [1], promptTokens: 4, newTokens: 3 })).runs[0].profile).toBeUndefined();
  });
});
