import { describe, expect, it } from 'vitest';
import { Generator, backendByName } from '@rrt/tensor';
import { CausalLM, defineConfig, generate } from '@rrt/layers';
import { ServingEngine, type GenerationRequest, type GenerationResult } from './index.js';
import { type ExitPolicy, fixedDepthExit, maxProbExit, oracleExit } from '../policies.js';
import { fitStatePredictor } from '../state-predictor.js';
import { referenceGenerate } from '../reference.js';
import type { SchedulerKind } from '../scheduler.js';
import { exactBackend, mixedRequests, tinyLooped } from '../testing.test-util.js';

const SCHEDULERS: SchedulerKind[] = ['static', 'sequence', 'depthwise'];

function greedyReference(model: CausalLM, reqs: GenerationRequest[]): number[][] {
  return reqs.map((r) => generate(model, null, { prompt: r.prompt, maxNewTokens: r.maxNewTokens, temperature: 0 }).tokens);
}

describe('ServingEngine without early exit', () => {
  const model = tinyLooped();
  const reqs = mixedRequests(200, model.cfg.vocabSize, { maxPrompt: 16, maxNew: 16 });
  const expected = greedyReference(model, reqs);

  for (const scheduler of SCHEDULERS) {
    it(`${scheduler}: 200 mixed-length requests give exactly one-at-a-time greedy decoding`, () => {
      const engine = new ServingEngine(model, { scheduler, maxBatch: 12, trace: true });
      const results = engine.serve(reqs);
      const seen = new Set<string | number>();
      results.forEach((r, i) => {
        expect(r.id).toBe(reqs[i].id);
        expect(r.finishReason).toBe('length');
        expect(r.tokens).toEqual(expected[i]);
        seen.add(r.id);
      });
      expect(seen.size).toBe(200);
      expect(engine.idle).toBe(true);
      expect(engine.kvBytes()).toBe(0);
      const st = engine.stats();
      expect(st.tokens).toBe(expected.reduce((a, t) => a + t.length, 0));
      expect(st.exitsPerLoop).toEqual([0, st.tokens]);
      // Bounded: every call computes at least one row, and rows never exceed maxBatch.
      const trace = engine.trace();
      expect(trace.steps.length).toBe(st.steps);
      for (const s of trace.steps) expect(s.items.length).toBeLessThanOrEqual(12);
      const work = reqs.reduce((a, r, i) => a + 4 * expected[i].length, 0);
      expect(st.steps).toBeLessThanOrEqual(work);
    });
  }

  it('blockRows counts what the model computed: every prompt token and decoded token at every depth, plus static padding', () => {
    const depths = 4;
    const promptTokens = reqs.reduce((a, r) => a + r.prompt.length, 0);
    for (const scheduler of SCHEDULERS) {
      const engine = new ServingEngine(model, { scheduler, maxBatch: 12 });
      engine.serve(reqs);
      const st = engine.stats();
      expect(st.blockRows.prompt, scheduler).toBe(promptTokens * depths);
      // The first new token comes from the prompt's last row; every later one is a decode item.
      const decoded = st.tokens - reqs.length;
      if (scheduler === 'static') expect(st.blockRows.decode).toBeGreaterThan(decoded * depths); // finished rows pad the batch
      else expect(st.blockRows.decode, scheduler).toBe(decoded * depths);
      expect(st.blockRows.decode).toBe(Math.round(st.meanBatch * st.decodeCalls));
    }
  });

  it('depthwise keeps its calls as full as sequence-wise batching', () => {
    const meanBatch = (scheduler: SchedulerKind) => {
      const engine = new ServingEngine(model, { scheduler, maxBatch: 12 });
      engine.serve(reqs);
      return engine.stats().meanBatch;
    };
    // Requests admitted mid-token start out of step with the others; oldest-first service brings
    // them back into step within a round of the blocks, so calls do not split into small ones.
    expect(meanBatch('depthwise')).toBeGreaterThanOrEqual(0.95 * meanBatch('sequence'));
  });

  it('depthwise serves the oldest item every call: no item waits more than maxBatch - 1 calls', () => {
    const engine = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 6, trace: true, exitPolicy: maxProbExit(0.2) });
    engine.serve(reqs.slice(0, 60));
    const lastServed = new Map<number, number>();
    let worst = 0;
    for (const s of engine.trace().steps) {
      for (const it of s.items) {
        const prev = lastServed.get(it.request);
        if (prev !== undefined) worst = Math.max(worst, s.step - prev - 1);
        lastServed.set(it.request, s.step);
      }
    }
    expect(worst).toBeLessThanOrEqual(5);
  });

  it('sampled requests (temperature, top-k, seed, stop tokens) match the one-at-a-time reference', () => {
    const rng = new Generator(4);
    const sampled: GenerationRequest[] = mixedRequests(40, model.cfg.vocabSize, { seed: 21 }).map((r, i) => ({
      ...r, temperature: 0.5 + rng.next(), topK: i % 3 === 0 ? 5 : 0, seed: i % 2 === 0 ? 100 + i : undefined, stop: i % 4 === 0 ? [1, 2, 3, 4, 5] : undefined,
    }));
    const want = sampled.map((r) => referenceGenerate(model, r));
    for (const scheduler of SCHEDULERS) {
      const got = new ServingEngine(model, { scheduler, maxBatch: 7 }).serve(sampled);
      got.forEach((r, i) => {
        expect(r.tokens).toEqual(want[i]);
        if (r.finishReason === 'stop') expect(sampled[i].stop).toContain(r.tokens[r.tokens.length - 1]);
      });
    }
  });

  it('static batching without padding rows gives the same tokens', () => {
    const got = new ServingEngine(model, { scheduler: 'static', maxBatch: 9, staticPadding: false }).serve(reqs.slice(0, 50));
    got.forEach((r, i) => expect(r.tokens).toEqual(expected[i]));
  });

  it('prefill calls pack prompts of different lengths and respect maxPrefillTokens', () => {
    const lengths = [5, 2, 7, 1, 4, 6, 3, 5];
    const reqs = lengths.map((len, i) => ({ id: i, prompt: Array.from({ length: len }, (_, t) => 1 + ((i + 3 * t) % 11)), maxNewTokens: 3 }));
    const engine = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 8, trace: true, maxPrefillTokens: 12 });
    const got = engine.serve(reqs);
    const want = greedyReference(model, reqs);
    got.forEach((r, i) => expect(r.tokens).toEqual(want[i]));
    // The prompt items of every call (calls of prompts only, and decode calls they joined).
    const prompts = engine.trace().steps.map((s) => s.items.filter((it) => it.token < 0)).filter((items) => items.length > 0);
    const tokens = prompts.map((items) => items.reduce((a, it) => a + lengths[it.request], 0));
    for (const t of tokens) expect(t).toBeLessThanOrEqual(12);
    // Some call holds prompts of different lengths; every prompt runs each of the 4 depths once.
    expect(prompts.some((items) => new Set(items.map((it) => lengths[it.request])).size > 1)).toBe(true);
    expect(prompts.reduce((a, items) => a + items.length, 0)).toBe(4 * lengths.length);
    expect(prompts.length).toBeLessThan(4 * lengths.length / 2);
  });

  it('prompts join decode calls of the same block (mixPrefill), with the same tokens as calls of their own', () => {
    const reqs = mixedRequests(24, model.cfg.vocabSize, { seed: 8, maxNew: 9 });
    const want = greedyReference(model, reqs);
    for (const scheduler of ['depthwise', 'sequence'] as const) {
      const mixed = new ServingEngine(model, { scheduler, maxBatch: 5, trace: true });
      const apart = new ServingEngine(model, { scheduler, maxBatch: 5, mixPrefill: false });
      const got = mixed.serve(reqs), gotApart = apart.serve(reqs);
      got.forEach((r, i) => expect(r.tokens).toEqual(want[i]));
      gotApart.forEach((r, i) => expect(r.tokens).toEqual(want[i]));
      const st = mixed.stats(), stApart = apart.stats();
      expect(st.mixedCalls).toBeGreaterThan(0);
      expect(stApart.mixedCalls).toBe(0);
      expect(st.prefillCalls).toBeLessThan(stApart.prefillCalls);
      // A mixed call holds prompt items (token -1) and decode items, all running one block.
      const steps = mixed.trace().steps.filter((t) => t.kind === 'mixed');
      expect(steps.length).toBe(st.mixedCalls);
      for (const t of steps) {
        expect(t.items.some((it) => it.token < 0)).toBe(true);
        expect(t.items.some((it) => it.token >= 0)).toBe(true);
      }
      // Decode rows count decode items only.
      expect(st.meanBatch).toBeLessThanOrEqual(5);
    }
  });

  it('a model at its context limit stops with finishReason context', () => {
    const small = tinyLooped({ maxPositions: 10 });
    const r = { id: 'x', prompt: [1, 2, 3, 4, 5, 6, 7, 8], maxNewTokens: 20 };
    const want = generate(small, null, { prompt: r.prompt, maxNewTokens: 20, temperature: 0 });
    for (const scheduler of SCHEDULERS) {
      const [got] = new ServingEngine(small, { scheduler, maxBatch: 2 }).serve([r, { id: 'y', prompt: [3], maxNewTokens: 4 }]);
      expect(got.finishReason).toBe('context');
      expect(want.finishReason).toBe('context');
      expect(got.tokens).toEqual(want.tokens);
    }
  });
});

describe('ServingEngine requests: errors and cancellation', () => {
  const model = tinyLooped();
  const V = model.cfg.vocabSize;

  it('bad requests fail alone with a clear error; the others keep running', () => {
    const good = mixedRequests(10, V, { seed: 3 });
    const bad: GenerationRequest[] = [
      { id: 'empty', prompt: [], maxNewTokens: 4 },
      { id: 'long', prompt: Array.from({ length: 65 }, () => 1), maxNewTokens: 1 },
      { id: 'zero', prompt: [1, 2], maxNewTokens: 0 },
      { id: 'unknown', prompt: [1, V + 3], maxNewTokens: 2 },
      { id: 'negative', prompt: [-1], maxNewTokens: 2 },
      { id: 'fraction', prompt: [1.5], maxNewTokens: 2 },
    ];
    const want = greedyReference(model, good);
    for (const scheduler of SCHEDULERS) {
      const engine = new ServingEngine(model, { scheduler, maxBatch: 4 });
      const mixed = [...good.slice(0, 5), ...bad, ...good.slice(5)];
      const results = engine.serve(mixed);
      const byId = new Map(results.map((r) => [r.id, r]));
      good.forEach((r, i) => expect(byId.get(r.id)!.tokens).toEqual(want[i]));
      expect(byId.get('empty')!.error).toMatch(/prompt is empty/);
      expect(byId.get('long')!.error).toMatch(/longer than the model's context \(64\)/);
      expect(byId.get('zero')!.error).toMatch(/maxNewTokens must be an integer >= 1, got 0/);
      expect(byId.get('unknown')!.error).toMatch(new RegExp(`token ${V + 3} at position 1 is not a token id in \\[0, ${V}\\)`));
      expect(byId.get('negative')!.error).toMatch(/token -1 at position 0/);
      expect(byId.get('fraction')!.error).toMatch(/token 1.5/);
      for (const b of bad) expect(byId.get(b.id)!.finishReason).toBe('error');
      expect(engine.stats().errors).toBe(bad.length);
    }
  });

  it('a duplicate id throws at submit', () => {
    const engine = new ServingEngine(model);
    engine.submit({ id: 1, prompt: [1], maxNewTokens: 1 });
    expect(() => engine.submit({ id: 1, prompt: [2], maxNewTokens: 1 })).toThrow(/already in use/);
  });

  for (const scheduler of SCHEDULERS) {
    it(`${scheduler}: cancelling frees the slot and the KV cache; the rest finish unchanged`, () => {
      const reqs = mixedRequests(12, V, { seed: 8, maxNew: 20 });
      const want = greedyReference(model, reqs);
      const engine = new ServingEngine(model, { scheduler, maxBatch: 4, staticPadding: false });
      const start = engine.kvBytes();
      expect(start).toBe(0);
      for (const r of reqs) engine.submit(r);
      for (let i = 0; i < 10; i++) engine.step();
      const before = engine.kvBytes();
      const victim = reqs.find((r) => engine.result(r.id) === undefined && engine.resident > 0)!;
      const residentBefore = engine.resident;
      const pendingBefore = engine.pending;
      expect(engine.cancel(victim.id)).toBe(true);
      expect(engine.cancel(victim.id)).toBe(false);
      const cancelled = engine.result(victim.id)!;
      expect(cancelled.finishReason).toBe('cancelled');
      expect(engine.resident + engine.pending).toBe(residentBefore + pendingBefore - 1);
      expect(engine.kvBytes()).toBeLessThanOrEqual(before);
      // A queued request can be cancelled too.
      const queued = reqs[reqs.length - 1];
      if (engine.result(queued.id) === undefined && queued.id !== victim.id) expect(engine.cancel(queued.id)).toBe(true);
      engine.run();
      expect(engine.kvBytes()).toBe(start);
      expect(engine.idle).toBe(true);
      reqs.forEach((r, i) => {
        const res = engine.result(r.id)!;
        if (res.finishReason === 'cancelled') expect(want[i].slice(0, res.tokens.length)).toEqual(res.tokens);
        else expect(res.tokens).toEqual(want[i]);
      });
    });
  }

  it('a cancel from inside a callback takes effect right after the call', () => {
    const reqs = mixedRequests(10, V, { seed: 14, maxNew: 20 }).map((r) => ({ ...r, maxNewTokens: 10 }));
    const engine: ServingEngine = new ServingEngine(model, {
      scheduler: 'depthwise', maxBatch: 4, exitPolicy: maxProbExit(0.2), kvFill: 'reuse',
      onToken: (id, _t) => {
        if (id === 2 && engine.result(2) === undefined) expect(engine.cancel(2)).toBe(true);
      },
    });
    const res = engine.serve(reqs);
    expect(res[2].finishReason).toBe('cancelled');
    expect(res[2].tokens.length).toBe(1);
    expect(engine.kvBytes()).toBe(0);
    const full = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 4, exitPolicy: maxProbExit(0.2), kvFill: 'reuse' }).serve(reqs);
    res.forEach((r, i) => {
      if (i !== 2) expect(r.tokens).toEqual(full[i].tokens);
    });
  });

  it('memory stays flat: a second identical run leaves no more live storages than the first', () => {
    const backend = exactBackend();
    const reqs = mixedRequests(30, V, { seed: 12 });
    const run = (): void => {
      const e = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 8, exitPolicy: maxProbExit(0.2), kvFill: 'reuse' });
      e.serve(reqs);
      e.dispose();
    };
    run();
    const after1 = backend.memory().storages;
    run();
    run();
    expect(backend.memory().storages).toBeLessThanOrEqual(after1);
  });
});

describe('ServingEngine on the cpu backend: packed weights', () => {
  it('calls read the packed weights, with the tokens of unpacked ones; dispose hands them back', () => {
    const cpu = backendByName('cpu');
    const model = tinyLooped({ backend: cpu });
    const reqs = mixedRequests(40, model.cfg.vocabSize, { seed: 4, maxPrompt: 16, maxNew: 12 });
    const details = () => cpu.info().details;
    const packedBefore = Number(details().packedWeights);
    const serve = (packWeights: boolean): { tokens: number[][]; packedCalls: number } => {
      const calls = Number(details().packedMatmuls);
      const e = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 24, exitPolicy: maxProbExit(0.3), packWeights });
      // Every weight matrix: the embedding (the tied head) and 7 per block.
      expect(Number(details().packedWeights) - packedBefore).toBe(packWeights ? 1 + 7 * 2 : 0);
      const tokens = e.serve(reqs).map((r) => r.tokens);
      e.dispose();
      expect(Number(details().packedWeights)).toBe(packedBefore);
      return { tokens, packedCalls: Number(details().packedMatmuls) - calls };
    };
    const plain = serve(false), packed = serve(true);
    expect(plain.packedCalls).toBe(0);
    // Prompts share calls with decode tokens: many calls have more than the few rows read in place.
    expect(packed.packedCalls).toBeGreaterThan(20);
    expect(packed.tokens).toEqual(plain.tokens);
  });
});

describe('ServingEngine with early exit', () => {
  const model = tinyLooped({ seed: 6 });
  const reqs = mixedRequests(60, model.cfg.vocabSize, { seed: 31, maxNew: 14 });

  for (const kvFill of ['propagate', 'reuse', 'reuse-loop'] as const) {
    it(`${kvFill}: batching does not change any token (maxBatch 10 vs one at a time)`, () => {
      const policy = maxProbExit(0.15);
      const batched = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 10, exitPolicy: policy, kvFill });
      const got = batched.serve(reqs);
      const alone = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 1, exitPolicy: policy, kvFill }).serve(reqs);
      got.forEach((r, i) => {
        expect(r.tokens).toEqual(alone[i].tokens);
        expect(r.exitLoops).toEqual(alone[i].exitLoops);
      });
      const st = batched.stats();
      expect(st.exitsPerLoop[0]).toBeGreaterThan(0);
      expect(st.exitsPerLoop[1]).toBeGreaterThan(0);
      expect(st.meanLoopsPerToken).toBeLessThan(2);
      // Every early exit of a continuing request fills its 2 deeper depth positions.
      const early = got.reduce((a, r) => a + r.exitLoops.slice(0, -1).filter((l) => l === 0).length, 0);
      expect(st.kvFilled).toBe(2 * early);
      // The sequence-wise and static schedulers make the same exit decisions.
      for (const scheduler of ['sequence', 'static'] as const) {
        const other = new ServingEngine(model, { scheduler, maxBatch: 10, exitPolicy: policy, kvFill }).serve(reqs);
        other.forEach((r, i) => expect(r.tokens).toEqual(got[i].tokens));
      }
    });
  }

  it('folding the K/V fill into later calls equals filling right after the exit (propagate and predictor, all schedulers)', () => {
    // 3 loops: loop-1 logits read the depth-2 and -3 entries that loop-0 exits owe, so a wrong or
    // late fold shows in the logits the policy sees, not only in tokens.
    const three = tinyLooped({ seed: 8, schedule: [0, 1, 0, 1, 0, 1] });
    const rs = mixedRequests(40, three.cfg.vocabSize, { seed: 5, maxNew: 12 });
    const predictor = fitStatePredictor(three, rs.slice(0, 6).map((r) => [...r.prompt, 1, 2, 3]));
    const recording = (seen: number[][]): ExitPolicy => {
      const inner = maxProbExit(0.2);
      return { name: 'recording', shouldExit: (logits, loop, loops) => (seen.push([loop, ...logits]), inner.shouldExit(logits, loop, loops)) };
    };
    for (const kvFill of ['propagate', predictor] as const) {
      for (const scheduler of ['depthwise', 'sequence', 'static'] as const) {
        const run = (foldKvFill: boolean) => {
          const seen: number[][] = [];
          const engine = new ServingEngine(three, { scheduler, maxBatch: 7, exitPolicy: recording(seen), kvFill, foldKvFill });
          return { res: engine.serve(rs), seen, stats: engine.stats() };
        };
        const folded = run(true), separate = run(false);
        folded.res.forEach((r, i) => {
          expect(r.tokens).toEqual(separate.res[i].tokens);
          expect(r.exitLoops).toEqual(separate.res[i].exitLoops);
        });
        expect(folded.seen.length).toBe(separate.seen.length);
        let loop1 = 0, worst = 0;
        folded.seen.forEach((row, k) => {
          if (row[0] === 1) loop1++;
          for (let j = 0; j < row.length; j++) worst = Math.max(worst, Math.abs(row[j] - separate.seen[k][j]));
        });
        expect(loop1).toBeGreaterThan(20);
        expect(worst).toBeLessThan(1e-9);
        expect(folded.stats.exitsPerLoop[0]).toBeGreaterThan(20);
        // Everything the fold wrote went through later calls; what it did not write was owed by
        // requests that finished first, so it never wrote more than the separate fill.
        expect(folded.stats.kvFolded).toBe(folded.stats.kvFilled);
        expect(folded.stats.kvFilled).toBeGreaterThan(0);
        expect(folded.stats.kvFilled).toBeLessThanOrEqual(separate.stats.kvFilled);
        expect(separate.stats.kvFolded).toBe(0);
      }
    }
  });

  it('a request cancelled while it owes K/V frees everything it held', () => {
    const backend = exactBackend();
    const rs = mixedRequests(12, model.cfg.vocabSize, { seed: 8, maxNew: 10 });
    const run = () => {
      const engine: ServingEngine = new ServingEngine(model, {
        scheduler: 'depthwise', maxBatch: 4, exitPolicy: fixedDepthExit(1),
        // Cancel right after an exit: the request owes its depth-2 and -3 entries.
        onToken: (id, _t, loop) => {
          if (id === 3 && loop === 0) engine.cancel(3);
        },
      });
      const res = engine.serve(rs);
      expect(res[3].finishReason).toBe('cancelled');
      expect(engine.kvBytes()).toBe(0);
      engine.dispose();
    };
    run();
    const after1 = backend.memory().storages;
    run();
    expect(backend.memory().storages).toBeLessThanOrEqual(after1);
  });

  it('fixed depth 1: every decoded token exits after loop 0; the prompt token runs all loops', () => {
    const engine = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 8, exitPolicy: fixedDepthExit(1) });
    const res = engine.serve(reqs);
    for (const r of res) r.tokens.forEach((_, j) => expect(r.exitLoops[j]).toBe(j === 0 ? 1 : 0));
  });

  it('oracle: tokens are the full-depth ones and the exit loop is the first that agrees with the last', () => {
    const full = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 8 }).serve(reqs);
    const engine = new ServingEngine(model, { scheduler: 'depthwise', maxBatch: 8, exitPolicy: oracleExit() });
    const res = engine.serve(reqs);
    res.forEach((r, i) => expect(r.tokens).toEqual(full[i].tokens));
    const st = engine.stats();
    expect(st.exitsPerLoop[0]).toBeGreaterThan(0);
    expect(st.meanLoopsPerToken).toBe(2);
    expect(st.kvFilled).toBe(0);
  });

  it('a plain model (one block per depth) batches only equal depths and honours a loop grouping', () => {
    const cfg = defineConfig('gpt2', { vocabSize: 40, hiddenSize: 32, numLayers: 4, numHeads: 4, maxPositions: 48 });
    const plain = new CausalLM(cfg, { backend: exactBackend(), rng: new Generator(3), std: 0.3 }).eval();
    const rs = mixedRequests(30, 40, { seed: 2 });
    const want = greedyReference(plain, rs);
    const engine = new ServingEngine(plain, { scheduler: 'depthwise', maxBatch: 6, layout: { loops: 2 }, trace: true });
    engine.serve(rs).forEach((r, i) => expect(r.tokens).toEqual(want[i]));
    expect(engine.layout.ends).toEqual([2, 4]);
    const exits = new ServingEngine(plain, { scheduler: 'depthwise', maxBatch: 6, layout: { loops: 2 }, exitPolicy: maxProbExit(0.1) }).serve(rs);
    const alone = new ServingEngine(plain, { scheduler: 'depthwise', maxBatch: 1, layout: { loops: 2 }, exitPolicy: maxProbExit(0.1) }).serve(rs);
    exits.forEach((r: GenerationResult, i) => expect(r.tokens).toEqual(alone[i].tokens));
  });
});
