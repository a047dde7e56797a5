import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RrtError } from '@rrt/tensor';
import {
  checkExitDistribution,
  constantCost,
  geometricExit,
  linearPerTokenCost,
  linearStepCost,
  makeRequests,
  meanExitLoops,
  noEarlyExit,
  simulate,
  type RequestSpec,
  type SimulationConfig,
  type SimulationResult,
} from './index.js';
import { type Scheduler, type SchedulerKind, SEQUENCE } from '../scheduler.js';

const reqs = (lengths: number[], arrivals?: number[], prefix = 0): RequestSpec[] =>
  lengths.map((decodeLength, id) => ({ id, arrival: arrivals?.[id] ?? 0, prefixLength: prefix, decodeLength }));

const SCHEDULERS: SchedulerKind[] = ['static', 'sequence', 'depthwise'];

describe('hand-computed schedules', () => {
  it('2 requests, 1 token, constant cost, room for both: one call', () => {
    for (const scheduler of SCHEDULERS) {
      const r = simulate({ scheduler, loops: 1, maxBatch: 2, cost: constantCost(1), requests: reqs([1, 1]) });
      expect(r.steps).toBe(1);
      expect(r.makespan).toBe(1);
      expect(r.throughput).toBe(2);
      expect(r.latency.mean).toBe(1);
      expect(r.meanBatchSize).toBe(2);
      expect(r.meanOccupancy).toBe(1);
    }
  });

  it('2 requests, 1 token, maxBatch 1: served one after the other', () => {
    for (const scheduler of SCHEDULERS) {
      const r = simulate({ scheduler, loops: 1, maxBatch: 1, cost: constantCost(1), requests: reqs([1, 1]) });
      expect(r.steps).toBe(2);
      expect(r.throughput).toBe(1);
      expect(r.perRequest.map((o) => o.latency)).toEqual([1, 2]);
      expect(r.latency.mean).toBe(1.5);
      expect(r.latency.p95).toBe(2);
    }
  });

  it('2 loops: every token costs 2 calls without exits, 1 call when all exit after loop 1', () => {
    const base = { loops: 2, maxBatch: 2, cost: constantCost(1), requests: reqs([1, 1]) };
    for (const scheduler of SCHEDULERS) expect(simulate({ ...base, scheduler }).makespan).toBe(2);
    const early = simulate({ ...base, scheduler: 'depthwise', exitDistribution: [1, 0] });
    expect(early.makespan).toBe(1);
    expect(early.meanLoopsPerToken).toBe(1);
    // Static and sequence-wise ignore exits: every token runs all loops.
    expect(simulate({ ...base, scheduler: 'sequence', exitDistribution: [1, 0] }).makespan).toBe(2);
  });

  it('prefill: loops calls at the prefill cost before decoding', () => {
    const r = simulate({ scheduler: 'sequence', loops: 2, maxBatch: 2, cost: constantCost(1, 3), requests: reqs([1, 1], undefined, 4) });
    expect(r.prefillSteps).toBe(2);
    expect(r.prefillTime).toBe(6);
    expect(r.makespan).toBe(8);
    expect(r.trace.steps[0].kind).toBe('prefill');
    expect(r.trace.steps[0].items.map((i) => i.token)).toEqual([-1, -1]);
    expect(simulate({ scheduler: 'sequence', loops: 2, maxBatch: 2, cost: constantCost(1, 3), requests: reqs([1, 1], undefined, 4), prefill: false }).makespan).toBe(2);
  });

  it('mixPrefill: a prompt rides along in the decode calls, one loop per call, and its request decodes after', () => {
    // Request 0 (prompt 4, 3 tokens) at t = 0, request 1 (prompt 4, 1 token) at t = 2.5; 2 loops.
    const requests: RequestSpec[] = [
      { id: 0, arrival: 0, prefixLength: 4, decodeLength: 3 },
      { id: 1, arrival: 2.5, prefixLength: 4, decodeLength: 1 },
    ];
    const r = simulate({ scheduler: 'depthwise', loops: 2, maxBatch: 2, cost: constantCost(1, 3), requests, mixPrefill: true });
    // Two prompt-only calls (3 s each; request 1 joins the second), one mixed call, then decode.
    expect(r.trace.steps.map((st) => st.kind)).toEqual(['prefill', 'prefill', 'mixed', 'decode', 'decode', 'decode', 'decode', 'decode']);
    expect([r.steps, r.prefillSteps, r.mixedSteps, r.decodeSteps, r.makespan]).toEqual([8, 2, 1, 6, 12]);
    expect(r.trace.steps[1].items).toEqual([{ request: 0, token: -1, depth: 1, slot: 0 }, { request: 1, token: -1, depth: 0, slot: 1 }]);
    expect(r.trace.steps[2].items).toEqual([{ request: 0, token: 0, depth: 0, slot: 0 }, { request: 1, token: -1, depth: 1, slot: 1 }]);
    expect(r.perRequest.map((o) => o.finished)).toEqual([12, 9]);
    // Same tokens and loops as separate prefill calls; without prefill charged, nothing to mix.
    const separate = simulate({ scheduler: 'depthwise', loops: 2, maxBatch: 2, cost: constantCost(1, 3), requests });
    expect([separate.tokens, separate.meanLoopsPerToken, separate.mixedSteps]).toEqual([r.tokens, r.meanLoopsPerToken, 0]);
    expect(simulate({ scheduler: 'depthwise', loops: 2, maxBatch: 2, cost: constantCost(1, 3), requests, mixPrefill: true, prefill: false }).mixedSteps).toBe(0);
  });

  it('static waits for the longest request; sequence-wise refills the freed slot', () => {
    const requests = reqs([1, 3, 1]);
    const st = simulate({ scheduler: 'static', loops: 1, maxBatch: 2, cost: constantCost(1), requests });
    expect(st.perRequest.map((o) => [o.id, o.finished])).toEqual([[0, 1], [1, 3], [2, 4]]);
    expect(st.makespan).toBe(4);
    expect(st.meanBatchSize).toBe(5 / 4);
    const sq = simulate({ scheduler: 'sequence', loops: 1, maxBatch: 2, cost: constantCost(1), requests });
    expect(sq.perRequest.map((o) => [o.id, o.finished])).toEqual([[0, 1], [1, 3], [2, 2]]);
    expect(sq.makespan).toBe(3);
    expect(sq.trace.steps[1].items.map((i) => [i.request, i.slot])).toEqual([[2, 0], [1, 1]]);
  });

  it('static pads: the cost is that of the formed batch, not of the requests still running', () => {
    const cost = { name: 'per-item', timePerStep: (b: number) => b };
    const st = simulate({ scheduler: 'static', loops: 1, maxBatch: 2, cost, requests: reqs([1, 3]) });
    expect(st.makespan).toBe(6);
    const sq = simulate({ scheduler: 'sequence', loops: 1, maxBatch: 2, cost, requests: reqs([1, 3]) });
    expect(sq.makespan).toBe(4);
  });

  it('depth-wise: an exited slot takes the next token at loop 0 in the next call', () => {
    // Request 0 always exits after loop 1; request 1 has no slot until 0 finishes.
    const r = simulate({ scheduler: 'depthwise', loops: 2, maxBatch: 1, cost: constantCost(1), requests: reqs([2, 1]), exitDistribution: [1, 0] });
    expect(r.trace.steps.map((s) => s.items.map((i) => [i.request, i.token, i.depth]))).toEqual([[[0, 0, 0]], [[0, 1, 0]], [[1, 0, 0]]]);
    const mixed = simulate({ scheduler: 'depthwise', loops: 2, maxBatch: 2, cost: constantCost(1), requests: reqs([1, 1, 1]) });
    expect(mixed.makespan).toBe(4);
  });

  it('waits idle for a late arrival', () => {
    const r = simulate({ scheduler: 'sequence', loops: 1, maxBatch: 4, cost: constantCost(1), requests: reqs([1, 1], [0, 10]) });
    expect(r.perRequest.map((o) => o.finished)).toEqual([1, 11]);
    expect(r.latency.mean).toBe(1);
    expect(r.makespan).toBe(11);
    expect(r.trace.steps[1].time).toBe(10);
  });

  it('a Scheduler object is a new policy: refill only when empty, tokens released at once', () => {
    // Depth-wise release of finished tokens, but static admission: request 2 waits for both slots.
    const batchAtOnce: Scheduler = { name: 'depthwise-batches', admits: (resident) => resident === 0, nextToken: 'now', pads: false };
    const r = simulate({ scheduler: batchAtOnce, loops: 1, maxBatch: 2, cost: constantCost(1), requests: reqs([1, 3, 1]) });
    expect(r.scheduler).toBe('depthwise-batches');
    expect(r.perRequest.map((o) => [o.id, o.finished])).toEqual([[0, 1], [1, 3], [2, 4]]);
    expect(r.meanBatchSize).toBe(5 / 4);
    // The shipped objects and their names give the same run.
    const named = simulate({ scheduler: 'sequence', loops: 2, maxBatch: 2, cost: constantCost(1), requests: reqs([1, 3, 1]) });
    expect(simulate({ scheduler: { ...SEQUENCE }, loops: 2, maxBatch: 2, cost: constantCost(1), requests: reqs([1, 3, 1]) })).toEqual(named);
    const never: Scheduler = { name: 'closed', admits: () => false, nextToken: 'now', pads: false };
    expect(() => simulate({ scheduler: never, loops: 1, maxBatch: 2, cost: constantCost(1), requests: reqs([1]) })).toThrow(/admitted nothing/);
  });

  it('an empty stream gives zero throughput and no calls', () => {
    const r = simulate({ scheduler: 'depthwise', loops: 2, maxBatch: 2, cost: constantCost(1), requests: [] });
    expect(r.steps).toBe(0);
    expect(r.throughput).toBe(0);
  });
});

describe('validation', () => {
  const ok: SimulationConfig = { scheduler: 'depthwise', loops: 2, maxBatch: 2, cost: constantCost(1), requests: reqs([1]) };
  it('rejects bad configs with RrtError', () => {
    expect(() => simulate({ ...ok, loops: 0 })).toThrow(RrtError);
    expect(() => simulate({ ...ok, maxBatch: 1.5 })).toThrow(/maxBatch/);
    expect(() => simulate({ ...ok, exitDistribution: [0.5, 0.6] })).toThrow(/sum to 1/);
    expect(() => simulate({ ...ok, exitDistribution: [1] })).toThrow(/one per loop/);
    expect(() => simulate({ ...ok, requests: reqs([0]) })).toThrow(/decodeLength/);
    expect(() => simulate({ ...ok, requests: [...reqs([1]), ...reqs([1])] })).toThrow(/twice/);
    expect(() => simulate({ ...ok, scheduler: 'fifo' as SchedulerKind })).toThrow(/unknown scheduler/);
    expect(() => simulate({ ...ok, cost: { name: 'zero', timePerStep: () => 0 } })).toThrow(/finite time > 0/);
    expect(() => simulate({ ...ok, requests: reqs([100]), maxSteps: 10 })).toThrow(/more than 10 calls/);
  });
});

describe('cost models', () => {
  const m = { perTokenAtBatch1: 0.02258, perTokenAtMaxBatch: 0.000207, maxBatch: 111 };
  it('linear step time passes through both measured points', () => {
    const c = linearStepCost(m);
    expect(c.timePerStep(1, 'decode')).toBeCloseTo(0.02258, 12);
    expect(c.timePerStep(111, 'decode')).toBeCloseTo(0.000207 * 111, 12);
    expect(c.timePerStep(56, 'decode')).toBeCloseTo((0.02258 + 0.000207 * 111) / 2, 12);
    // Prefill extrapolates the line: 512 tokens cost a little more than one call.
    expect(c.timePerStep(512, 'prefill')).toBeGreaterThan(c.timePerStep(111, 'decode'));
  });
  it('linear per-token time passes through both measured points', () => {
    const c = linearPerTokenCost(m);
    expect(c.timePerStep(1, 'decode')).toBeCloseTo(0.02258, 12);
    expect(c.timePerStep(111, 'decode')).toBeCloseTo(0.000207 * 111, 12);
    expect(c.timePerStep(222, 'prefill')).toBeCloseTo(0.000207 * 222, 12);
  });
  it('rejects bad inputs', () => {
    expect(() => linearStepCost({ ...m, maxBatch: 1 })).toThrow(RrtError);
    expect(() => linearStepCost({ ...m, perTokenAtBatch1: -1 })).toThrow(/> 0/);
    expect(() => linearStepCost(m).timePerStep(0, 'decode')).toThrow(/positive integer/);
    expect(() => constantCost(0)).toThrow(RrtError);
  });
});

describe('request streams and exit distributions', () => {
  it('geometric exits sum to 1 and give the expected mean depth', () => {
    expect(geometricExit(2, 0.5)).toEqual([0.5, 0.5]);
    expect(geometricExit(3, 0.5)).toEqual([0.5, 0.25, 0.25]);
    expect(geometricExit(3, 0)).toEqual(noEarlyExit(3));
    expect(meanExitLoops([0.5, 0.25, 0.25])).toBe(1.75);
    expect(() => checkExitDistribution([0.5, -0.5, 1], 3)).toThrow(RrtError);
  });
  it('Poisson arrivals are increasing, seeded and near the asked rate', () => {
    const a = makeRequests({ count: 2000, prefixLength: 0, decodeLength: 1, arrival: { kind: 'poisson', rate: 50 }, seed: 7 });
    const b = makeRequests({ count: 2000, prefixLength: 0, decodeLength: 1, arrival: { kind: 'poisson', rate: 50 }, seed: 7 });
    expect(a).toEqual(b);
    for (let i = 1; i < a.length; i++) expect(a[i].arrival).toBeGreaterThan(a[i - 1].arrival);
    expect(2000 / a[1999].arrival).toBeGreaterThan(45);
    expect(2000 / a[1999].arrival).toBeLessThan(55);
  });
  it('uniform lengths stay in range; explicit times are used as given', () => {
    const r = makeRequests({ count: 500, prefixLength: 3, decodeLength: { min: 2, max: 5 }, seed: 1 });
    expect(new Set(r.map((x) => x.decodeLength))).toEqual(new Set([2, 3, 4, 5]));
    expect(makeRequests({ count: 2, prefixLength: 0, decodeLength: 1, arrival: { kind: 'times', times: [3, 1] } }).map((x) => x.arrival)).toEqual([3, 1]);
    expect(() => makeRequests({ count: 2, prefixLength: 0, decodeLength: 1, arrival: { kind: 'times', times: [3] } })).toThrow(RrtError);
    expect(() => makeRequests({ count: 2, prefixLength: 0, decodeLength: 1, arrival: { kind: 'poisson', rate: 0 } })).toThrow(/rate/);
  });
});

// Random small workloads for the invariants below.
const workload = fc.record({
  scheduler: fc.constantFrom<SchedulerKind>('static', 'sequence', 'depthwise'),
  loops: fc.integer({ min: 1, max: 3 }),
  maxBatch: fc.integer({ min: 1, max: 5 }),
  lengths: fc.array(fc.integer({ min: 1, max: 6 }), { maxLength: 10 }),
  arrivals: fc.array(fc.integer({ min: 0, max: 8 }), { minLength: 10, maxLength: 10 }),
  prefix: fc.integer({ min: 0, max: 3 }),
  exitWeights: fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 3, maxLength: 3 }),
  seed: fc.integer(),
  prefill: fc.boolean(),
  mixPrefill: fc.boolean(),
});

function configOf(w: typeof workload extends fc.Arbitrary<infer T> ? T : never): SimulationConfig {
  const weights = w.exitWeights.slice(0, w.loops);
  const total = weights.reduce((a, b) => a + b, 0);
  const exitDistribution = total === 0 ? noEarlyExit(w.loops) : weights.map((x) => x / total);
  exitDistribution[w.loops - 1] = 1 - exitDistribution.slice(0, -1).reduce((a, b) => a + b, 0);
  return {
    scheduler: w.scheduler,
    loops: w.loops,
    maxBatch: w.maxBatch,
    cost: linearStepCost({ perTokenAtBatch1: 0.02, perTokenAtMaxBatch: 0.005, maxBatch: 5 }),
    requests: w.lengths.map((decodeLength, id) => ({ id, arrival: w.arrivals[id] * 0.01, prefixLength: w.prefix, decodeLength })),
    exitDistribution,
    seed: w.seed,
    prefill: w.prefill,
    mixPrefill: w.mixPrefill,
  };
}

function checkInvariants(cfg: SimulationConfig, r: SimulationResult): void {
  const byId = new Map(cfg.requests.map((q) => [q.id, q]));
  // Every request finishes with all its tokens.
  expect(r.requests).toBe(cfg.requests.length);
  expect(r.tokens).toBe(cfg.requests.reduce((a, q) => a + q.decodeLength, 0));
  for (const o of r.perRequest) {
    const q = byId.get(o.id)!;
    expect(o.tokens).toBe(q.decodeLength);
    expect(Number.isFinite(o.finished)).toBe(true);
    expect(o.admitted).toBeGreaterThanOrEqual(q.arrival);
    expect(o.finished).toBeGreaterThan(o.admitted);
  }
  // FIFO admission: nobody is overtaken, so nobody starves.
  const order = [...cfg.requests].sort((a, b) => a.arrival - b.arrival || a.id - b.id).map((q) => r.perRequest.find((o) => o.id === q.id)!.admitted);
  for (let i = 1; i < order.length; i++) expect(order[i]).toBeGreaterThanOrEqual(order[i - 1]);
  // Each (request, token) is computed at depths 0..k-1 in order and emitted exactly once.
  const depthsSeen = new Map<string, number>();
  // Each prompt runs loops 0..loops-1 in order, before its request's first decode item.
  const promptDepth = new Map<number, number>();
  const slotOf = new Map<number, number>();
  let decodeItems = 0;
  for (const s of r.trace.steps) {
    expect(s.items.length).toBeLessThanOrEqual(cfg.maxBatch);
    expect(new Set(s.items.map((i) => i.slot)).size).toBe(s.items.length);
    expect(new Set(s.items.map((i) => i.request)).size).toBe(s.items.length);
    for (const it of s.items) {
      expect(it.slot).toBeLessThan(cfg.maxBatch);
      if (slotOf.has(it.request)) expect(it.slot).toBe(slotOf.get(it.request));
      slotOf.set(it.request, it.slot);
      expect(s.time).toBeGreaterThanOrEqual(byId.get(it.request)!.arrival);
      if (it.token === -1) {
        if (s.kind === 'prefill' && !cfg.mixPrefill) continue;
        expect(it.depth).toBe(promptDepth.get(it.request) ?? 0);
        promptDepth.set(it.request, it.depth + 1);
        continue;
      }
      if (cfg.mixPrefill && cfg.prefill !== false && byId.get(it.request)!.prefixLength > 0) expect(promptDepth.get(it.request)).toBe(cfg.loops);
      decodeItems++;
      const key = `${it.request}:${it.token}`;
      expect(it.depth).toBe(depthsSeen.get(key) ?? 0);
      depthsSeen.set(key, it.depth + 1);
    }
  }
  for (const q of cfg.requests) {
    for (let t = 0; t < q.decodeLength; t++) {
      const k = depthsSeen.get(`${q.id}:${t}`);
      expect(k).toBeGreaterThanOrEqual(1);
      expect(k).toBeLessThanOrEqual(cfg.loops);
      if (cfg.scheduler !== 'depthwise') expect(k).toBe(cfg.loops);
    }
  }
  expect(depthsSeen.size).toBe(r.tokens);
  expect(decodeItems).toBe(r.perRequest.reduce((a, o) => a + o.loopsRun, 0));
  // Bounded: every decode call advances at least one item; at most `loops` prefill calls per request.
  expect(r.decodeSteps).toBeLessThanOrEqual(cfg.requests.reduce((a, q) => a + q.decodeLength * cfg.loops, 0));
  expect(r.prefillSteps).toBeLessThanOrEqual(cfg.requests.length * cfg.loops);
  expect(r.trace.truncated).toBe(false);
  expect(r.trace.totalSteps).toBe(r.steps);
}

describe('invariants on random workloads', () => {
  it('conservation, maxBatch, stable slots, FIFO, bounded steps', () => {
    fc.assert(
      fc.property(workload, (w) => {
        const cfg = configOf(w);
        checkInvariants(cfg, simulate(cfg));
      }),
      { numRuns: 300 },
    );
  });

  it('is deterministic given a seed', () => {
    fc.assert(
      fc.property(workload, (w) => {
        const cfg = configOf(w);
        expect(simulate(cfg)).toEqual(simulate(cfg));
      }),
      { numRuns: 50 },
    );
  });

  it('with one loop, depth-wise and sequence-wise batching are the same schedule', () => {
    fc.assert(
      fc.property(workload, (w) => {
        const cfg = { ...configOf({ ...w, loops: 1 }) };
        const a = simulate({ ...cfg, scheduler: 'sequence' });
        const b = simulate({ ...cfg, scheduler: 'depthwise' });
        expect(b.makespan).toBe(a.makespan);
        expect(b.trace.steps).toEqual(a.trace.steps);
      }),
      { numRuns: 100 },
    );
  });
});

describe('throughput comparisons', () => {
  const cost = linearStepCost({ perTokenAtBatch1: 0.01358, perTokenAtMaxBatch: 0.000118, maxBatch: 123 });
  const requests = makeRequests({ count: 40, prefixLength: 16, decodeLength: 64 });

  it('without early exit, depth-wise throughput equals sequence-wise throughput', () => {
    for (const loops of [1, 2, 3]) {
      const base = { loops, maxBatch: 16, cost, requests, exitDistribution: noEarlyExit(loops) };
      const sq = simulate({ ...base, scheduler: 'sequence' });
      const dw = simulate({ ...base, scheduler: 'depthwise' });
      expect(dw.throughput / sq.throughput).toBeCloseTo(1, 9);
      expect(dw.steps).toBe(sq.steps);
    }
  });

  it('with early exit, depth-wise beats sequence-wise, more so as exits rise', () => {
    const base = { loops: 3, maxBatch: 16, cost, requests };
    const sq = simulate({ ...base, scheduler: 'sequence' }).throughput;
    let previous = sq;
    for (const p of [0.1, 0.3, 0.6, 0.9]) {
      const dw = simulate({ ...base, scheduler: 'depthwise', exitDistribution: geometricExit(3, p), seed: 3 });
      expect(dw.throughput).toBeGreaterThan(previous);
      expect(dw.meanLoopsPerToken).toBeLessThan(3);
      previous = dw.throughput;
    }
  });

  it('different seeds draw different exits', () => {
    const base = { scheduler: 'depthwise' as const, loops: 2, maxBatch: 4, cost, requests, exitDistribution: [0.5, 0.5] };
    expect(simulate({ ...base, seed: 1 }).makespan).not.toBe(simulate({ ...base, seed: 2 }).makespan);
  });

  it('caps the trace but not the run', () => {
    const r = simulate({ scheduler: 'sequence', loops: 2, maxBatch: 4, cost, requests, traceSteps: 10 });
    expect(r.trace.steps).toHaveLength(10);
    expect(r.trace.truncated).toBe(true);
    expect(r.tokens).toBe(40 * 64);
  });
});
