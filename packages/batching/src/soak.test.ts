// The serving engine under load and faults (soak). CI runs SOAK_REQUESTS requests per scheduler
// (default 600, about 2.5 s of CPU per scheduler here); RRT_SOAK_REQUESTS=10000 runs the full
// soak, whose figures packages/batching/README.md reports (scripts/soak.ts prints them).

import { describe, expect, it } from 'vitest';
import { SOAK_FAULTS, type SoakReference, soak, soakModel, soakReference } from './soak.js';
import type { SchedulerKind } from './scheduler.js';

const SOAK_REQUESTS = Number(process.env.RRT_SOAK_REQUESTS ?? 600);
const LENGTHS = { maxPrompt: 6, maxNewTokens: 6, distinctPrompts: 64 };

describe('ServingEngine soak: random lengths, 10% cancelled, 5% malformed', () => {
  const model = soakModel();
  const reference: SoakReference = soakReference(model, LENGTHS);

  for (const scheduler of ['static', 'sequence', 'depthwise'] as SchedulerKind[]) {
    it(`${scheduler}: ${SOAK_REQUESTS} requests, none lost or duplicated, greedy tokens, caches freed`, () => {
      const r = soak(model, { scheduler, requests: SOAK_REQUESTS, seed: 1, reference, ...LENGTHS, arrivalsPerCall: 2 });
      expect(r.problems).toEqual([]);
      expect(r.lost).toBe(0);
      expect(r.duplicated).toBe(0);
      expect(r.mismatched).toBe(0);
      // Every fault kind was injected and each got its error.
      for (const f of SOAK_FAULTS) expect(r.faults[f]).toBeGreaterThan(0);
      const faults = SOAK_FAULTS.reduce((a, f) => a + r.faults[f], 0);
      expect(faults / r.requests).toBeGreaterThan(0.03);
      expect(r.errorsAsExpected).toBe(faults);
      // Cancels of all three kinds were issued, and most took effect (the rest came after the end).
      expect(r.cancels.queued + r.cancels['between-calls'] + r.cancels['in-callback']).toBeGreaterThan(0.07 * r.requests);
      expect(r.cancels.queued).toBeGreaterThan(0);
      expect(r.cancelled).toBeGreaterThan(r.cancels.queued);
      expect(r.cancelled + r.cancelsAfterFinish).toBe(r.cancels.queued + r.cancels['between-calls'] + r.cancels['in-callback']);
      expect(r.completed + r.cancelled + r.errorsAsExpected).toBe(r.requests);
      // Memory returns to where it started; the run stayed within its bound on calls.
      expect(r.kvBytesPeak).toBeGreaterThan(0);
      expect(r.kvBytesAfter).toBe(r.kvBytesBefore);
      expect(r.storagesAfter).toBeLessThanOrEqual(r.storagesBefore);
      expect(r.steps).toBeLessThanOrEqual(r.stepBound);
    }, 300_000);
  }

  it('the checker catches a wrong token (it is not vacuous)', () => {
    const wrong: SoakReference = { ...reference, tokens: reference.tokens.map((t) => t.map((x, i) => (i === 0 ? (x + 1) % model.cfg.vocabSize : x))) };
    const r = soak(model, { scheduler: 'depthwise', requests: 40, seed: 2, reference: wrong, ...LENGTHS, cancelFraction: 0, badFraction: 0 });
    expect(r.mismatched).toBe(40);
    expect(r.problems.length).toBeGreaterThan(0);
  }, 60_000);
});
