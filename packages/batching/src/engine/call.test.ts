import { describe, expect, it } from 'vitest';
import { fromValues, noGrad, tidy } from '@rrt/tensor';
import { ExitHeadAdapters, exitLogits } from '../exits.js';
import { tinyLooped } from '../testing.test-util.js';
import { concatRows, readLogits } from './call.js';

describe('readLogits', () => {
  it('one head call for rows of several exits gives each row its own exit\'s logits, adapters included', () => {
    const model = tinyLooped({ seed: 3 });
    const adapters = new ExitHeadAdapters(model, {}, { rank: 2, seed: 4, final: false });
    const D = model.cfg.hiddenSize, V = model.cfg.vocabSize;
    noGrad(() => tidy(() => {
      // A trained-looking adapter: b is no longer zero, so loop-0 rows differ from the plain head.
      const b = adapters.b[0];
      b.backend.kernels.copy(fromValues(Float32Array.from({ length: b.size }, (_, i) => Math.sin(i)), b.shape, b.backend).storage, b.storage);
      const last = fromValues(Float32Array.from({ length: 5 * D }, (_, i) => Math.cos(i * 0.37)), [5, D], model.embed.weight.backend);
      const heads = [{ row: 3, loop: 0 }, { row: 0, loop: 1 }, { row: 4, loop: 0 }, { row: 1, loop: 1 }];
      const got = readLogits(model, adapters, last, heads);
      heads.forEach((h, j) => {
        const want = exitLogits(model, concatRows(last, [h.row]), h.loop, { adapters }).dataSync();
        expect(got[j].length).toBe(V);
        for (let v = 0; v < V; v++) expect(got[j][v]).toBeCloseTo(want[v], 5);
      });
      // Loop-0 rows really took the adapter: without it they differ.
      const plain = exitLogits(model, concatRows(last, [3]), 0).dataSync();
      expect(plain.some((p, v) => Math.abs(p - got[0][v]) > 1e-4)).toBe(true);
      expect(() => readLogits(model, adapters, last, [{ row: 0, loop: 2 }])).toThrow(/loop 2 is out of range for adapters of 2 exits/);
    }));
    adapters.dispose();
  });

  it('concatRows slices a run of rows and gathers any other order', () => {
    const x = fromValues(Float32Array.from({ length: 12 }, (_, i) => i), [6, 2]);
    expect(concatRows(x, [0, 1, 2, 3, 4, 5])).toBe(x);
    expect(Array.from(concatRows(x, [2, 3]).dataSync())).toEqual([4, 5, 6, 7]);
    expect(Array.from(concatRows(x, [4, 1, 2]).dataSync())).toEqual([8, 9, 2, 3, 4, 5]);
  });
});
