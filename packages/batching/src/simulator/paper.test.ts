import { describe, expect, it } from 'vitest';
import { RrtError } from '@rrt/tensor';
import { PAPER_FIT, PAPER_MODELS, PAPER_THROUGHPUT, constantCost, scaledCost, simulatePaper } from './index.js';

describe('simulatePaper', () => {
  const report = simulatePaper();
  const row = (k: string) => report.rows.find((r) => r.key === k)!;

  it('reports every setting next to the paper numbers, with its assumptions', () => {
    expect(report.rows.map((r) => r.key)).toEqual([
      'vanilla-static',
      'vanilla-sequence',
      'recursive2-sequence',
      'recursive2-depthwise-exit',
      'relaxedR64-depthwise-exit',
      'recursive3-depthwise-exit',
    ]);
    expect(row('vanilla-static').paperThroughput).toBe(1080);
    expect(row('vanilla-sequence').paperThroughput).toBe(1528);
    expect(row('recursive2-depthwise-exit').paperThroughput).toBe(2877);
    expect(row('relaxedR64-depthwise-exit').paperThroughput).toBe(2157);
    expect(row('recursive3-depthwise-exit').paperThroughput).toBeNull();
    expect(report.assumptions).toMatchObject({ requests: 1024, prefixLength: 512, decodeLength: 2048, exitProbability: 0.5 });
    expect(report.notes.length).toBeGreaterThan(0);
    expect(report.traces).toBeUndefined();
    // Plain data: survives a JSON round trip.
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });

  it('gives consistent numbers under the default assumptions', () => {
    for (const r of report.rows) {
      expect(r.throughput).toBeGreaterThan(0);
      expect(r.throughput).toBeLessThanOrEqual(r.fullBatchThroughput * 1.0001);
      expect(r.meanOccupancy).toBeLessThanOrEqual(1);
    }
    // Equal lengths, all at t = 0: static and sequence-wise run the same schedule.
    expect(row('vanilla-sequence').throughput).toBeCloseTo(row('vanilla-static').throughput, 6);
    expect(row('recursive2-depthwise-exit').throughput).toBeGreaterThan(row('recursive2-sequence').throughput);
    expect(row('recursive2-depthwise-exit').meanLoopsPerToken).toBeCloseTo(1.5, 2);
    expect(row('recursive3-depthwise-exit').meanLoopsPerToken).toBeCloseTo(1.75, 2);
    expect(row('vanilla-static').speedupVsStatic).toBe(1);
  });

  it('takes options and keeps traces on request', () => {
    const small = simulatePaper({ requests: 30, decodeLength: { min: 1, max: 64 }, arrival: { kind: 'poisson', rate: 5 }, traceSteps: 5, seed: 2 });
    expect(small.traces!['vanilla-static'].steps).toHaveLength(5);
    expect(small.assumptions.arrival).toEqual({ kind: 'poisson', rate: 5 });
    const perToken = simulatePaper({ requests: 30, decodeLength: 16, costModel: 'linear-per-token' });
    expect(String(perToken.assumptions.costModel)).toMatch(/per-token/);
    expect(() => simulatePaper({ costModel: 'cubic' as 'linear-step' })).toThrow(RrtError);
  });

  it('uses the published per-token times', () => {
    expect(PAPER_MODELS.vanilla.times).toEqual({ perTokenAtBatch1: 0.02258, perTokenAtMaxBatch: 0.000207, maxBatch: 111 });
    expect(PAPER_MODELS.recursive3.times.maxBatch).toBe(131);
    expect(PAPER_THROUGHPUT.recursive2Depthwise / PAPER_THROUGHPUT.vanillaStatic).toBeCloseTo(2.66, 2);
  });
});

describe('simulatePaper with PAPER_FIT (the fitted reading of the paper\'s assumptions)', () => {
  const fit = simulatePaper(PAPER_FIT);
  const row = (k: string) => fit.rows.find((r) => r.key === k)!;
  const paperVsSequence = (n: number) => n / PAPER_THROUGHPUT.vanillaSequence;

  it("reproduces the paper's table as ratios, within 3%", () => {
    const near = (got: number, want: number) => expect(Math.abs(got / want - 1), `${got} vs ${want}`).toBeLessThan(0.03);
    near(row('vanilla-sequence').speedupVsStatic, PAPER_THROUGHPUT.vanillaSequence / PAPER_THROUGHPUT.vanillaStatic);
    near(row('recursive2-depthwise-exit').speedupVsStatic, 2.66);
    near(row('recursive2-depthwise-exit').speedupVsSequence, paperVsSequence(PAPER_THROUGHPUT.recursive2Depthwise));
    // The relaxed model lands above the paper's 2.00x / 1.41x with no exits at all.
    expect(row('relaxedR64-depthwise-exit').speedupVsStatic).toBeGreaterThan(2.0);
    expect(row('relaxedR64-depthwise-exit').meanLoopsPerToken).toBe(2);
    expect(row('recursive2-depthwise-exit').meanLoopsPerToken).toBeCloseTo(2 - 0.137, 2);
  });

  it('states the reading it simulates', () => {
    expect(fit.setting).toMatch(/per whole token.*1160-2936 decoded tokens/);
    expect(String(fit.assumptions.perTokenTimes)).toMatch(/whole token/);
    expect(fit.assumptions.exitProbability).toEqual({ recursive2: 0.137, relaxedR64: 0, recursive3: 0.137 });
    expect(fit.notes.join(' ')).toMatch(/only the ratios are fitted/);
  });

  it('per-token times per whole token make a call of the 2-loop block cost half', () => {
    const base = constantCost(0.01);
    expect(scaledCost(base, 0.5).timePerStep(7, 'decode')).toBeCloseTo(0.005, 12);
    expect(() => scaledCost(base, 0)).toThrow(/factor must be finite and > 0/);
    const perCall = simulatePaper({ ...PAPER_FIT, timesPer: 'call', requests: 64 });
    const perToken = simulatePaper({ ...PAPER_FIT, requests: 64 });
    const seq = (r: typeof perCall) => r.rows.find((x) => x.key === 'recursive2-sequence')!.throughput;
    expect(seq(perToken) / seq(perCall)).toBeCloseTo(2, 1);
  });
});
