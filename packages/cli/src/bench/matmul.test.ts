import { describe, expect, it } from 'vitest';
import { backendByName, setBackend } from '@rrt/tensor';
import { benchMatmul } from './matmul.js';

describe('benchMatmul with linear', () => {
  it('times x W^T packed per call and kept packed on cpu; ref keeps no packed form', async () => {
    const active = setBackend('cpu');
    try {
      const cpu = await benchMatmul({ shapes: [[20, 16, 24]], repeats: 2, linear: true });
      const [r] = cpu.matmul;
      expect(r.linearMedianMs).toBeGreaterThan(0);
      expect(r.linearPackedMedianMs).toBeGreaterThan(0);
      expect(r.packedSpeedup).toBeCloseTo(r.linearMedianMs! / r.linearPackedMedianMs!, 1);
      // The packed form was read, and handed back afterwards.
      expect(Number(backendByName('cpu').info().details.packedMatmuls)).toBeGreaterThan(0);
      expect(Number(backendByName('cpu').info().details.packedWeights)).toBe(0);
      setBackend('ref');
      const ref = await benchMatmul({ shapes: [[4, 4, 4]], repeats: 1, linear: true });
      expect(ref.matmul[0].linearMedianMs).toBeGreaterThan(0);
      expect(ref.matmul[0].linearPackedMedianMs).toBeUndefined();
    } finally {
      setBackend(active.name);
    }
  }, 120_000);
});
