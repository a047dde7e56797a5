import { describe, expect, it } from 'vitest';
import { Generator, noGrad } from '@rrt/tensor';
import { evaluateExits, generationAgreement, servedTextNll } from './quality.js';
import type { CausalLM } from '@rrt/layers';
import { type ServeBenchReport, benchWorkload, formatServeBench, formatServeBenchTimes, serveBench, serveInTurns, servedContinuations } from './bench.js';
import { ServingEngine, type ServingEngineOptions } from './engine/index.js';
import { fixedDepthExit, maxProbExit, neverExit, oracleExit } from './policies.js';
import { tinyLooped } from './testing.test-util.js';

describe('evaluateExits', () => {
  const model = tinyLooped({ seed: 6 });
  const rng = new Generator(3);
  const seqs = Array.from({ length: 6 }, (_, i) => Array.from({ length: 10 + (i % 2) * 3 }, () => rng.int(0, model.cfg.vocabSize)));

  it('without exits, the cached token-by-token pass reproduces the full-depth perplexity', () => {
    const r = evaluateExits(model, seqs, { policy: neverExit(), batch: 4 });
    expect(r.tokens).toBe(seqs.reduce((a, s) => a + s.length - 1, 0));
    expect(Math.abs(r.nll - r.fullNll)).toBeLessThan(1e-5);
    expect(r.agreement).toBe(1);
    expect(r.meanLoops).toBe(2);
    expect(r.exitsPerLoop).toEqual([0, r.tokens]);
  });

  it('exiting everything after loop 0 scores the first exit; the oracle keeps full-depth K/V', () => {
    for (const kvFill of ['propagate', 'reuse', 'reuse-loop'] as const) {
      const r = evaluateExits(model, seqs, { policy: fixedDepthExit(1), kvFill });
      expect(r.meanLoops).toBe(1);
      expect(r.exitsPerLoop[1]).toBe(0);
      expect(r.agreement).toBeLessThan(1);
    }
    const o = evaluateExits(model, seqs, { policy: oracleExit() });
    expect(o.agreement).toBe(1);
    expect(o.meanLoops).toBe(2);
    expect(o.exitsPerLoop[0]).toBeGreaterThan(0);
    expect(o.nll).not.toBe(o.fullNll);
  });

  it('rejects sequences it cannot score', () => {
    expect(() => evaluateExits(model, [[1]], { policy: neverExit() })).toThrow(/>= 2 tokens/);
    expect(() => evaluateExits(model, [], { policy: neverExit() })).toThrow(/no sequences/);
  });

  it('generation agreement is 1 without exits and below 1 with aggressive exits', () => {
    const prompts = seqs.map((s) => s.slice(0, 4));
    expect(generationAgreement(model, prompts, { policy: neverExit(), maxNewTokens: 6 }).identical).toBe(1);
    const g = generationAgreement(model, prompts, { policy: maxProbExit(0.05), maxNewTokens: 6 });
    expect(g.agreement).toBeLessThan(1);
    expect(g.meanLoops).toBeLessThan(2);
  });
});

describe('serveBench', () => {
  it('runs every scheduler on one seeded workload and reports ratios', () => {
    const model = tinyLooped({ seed: 6 });
    const a = benchWorkload(model, { requests: 10, seed: 4, promptTokens: { min: 2, max: 6 }, newTokens: { min: 2, max: 8 } });
    const b = benchWorkload(model, { requests: 10, seed: 4, promptTokens: { min: 2, max: 6 }, newTokens: { min: 2, max: 8 } });
    expect(a).toEqual(b);
    const baseline = tinyLooped({ seed: 6, blocks: 4, schedule: [0, 1, 2, 3] });
    const seen: string[] = [];
    const rep = serveBench(model, {
      requests: 16, seed: 1, maxBatch: 4, promptTokens: { min: 2, max: 6 }, newTokens: { min: 2, max: 8 }, exitPolicy: fixedDepthExit(1), baseline, warmup: 2,
      onRun: (r) => seen.push(r.name),
    });
    // The exit run goes between the baseline runs it is compared with.
    expect(seen).toEqual(['baseline static', 'depthwise+exit', 'baseline sequence', 'static', 'sequence', 'depthwise']);
    expect(rep.rows.map((r) => r.name)).toEqual(['baseline static', 'baseline sequence', 'static', 'sequence', 'depthwise', 'depthwise+exit']);
    expect(rep.tokensAgree).toBe(true);
    const exit = rep.rows.find((r) => r.name === 'depthwise+exit')!;
    const tps = (name: string): number => rep.rows.find((r) => r.name === name)!.tokensPerSecond;
    expect(rep.exitVsBaseline).toEqual({
      static: exit.tokensPerSecond / tps('baseline static'), sequence: exit.tokensPerSecond / tps('baseline sequence'),
      perRepeat: { static: [exit.tokensPerSecond / tps('baseline static')], sequence: [exit.tokensPerSecond / tps('baseline sequence')] },
    });
    expect(formatServeBench(rep)).toMatch(/depthwise\+exit over the baseline, median of 1 per-repeat ratio: [0-9.]+x static \([0-9.]+\), [0-9.]+x sequence-wise/);
    expect(exit.meanLoopsPerToken).toBeLessThan(1.5);
    expect(rep.rows.find((r) => r.name === 'static')!.speedupVsStatic).toBe(1);
    expect(rep.depthwiseExitVsSequence).toBe(exit.speedupVsSequence);
    expect(formatServeBench(rep)).toMatch(/depthwise\+exit \(fixed:1, K\/V fill propagate\): .*x static[^]*tokens equal to the full-depth run.s at the same position: fixed:1/);
    // The time breakdown: one line per run, whose parts add up to the run's busy time.
    const times = formatServeBenchTimes(rep).split('\n');
    expect(times.length).toBe(rep.rows.length + 1);
    expect(times[0]).toMatch(/prefill.*decode.*head.*kvFill.*other/);
    expect(exit.timeMs.kvFill).toBeGreaterThan(0);
    expect(exit.timeMs.head).toBeGreaterThan(0);
    const parts = exit.timeMs.prefill + exit.timeMs.decode + exit.timeMs.head + exit.timeMs.kvFill + exit.timeMs.other;
    expect(Math.abs(parts - exit.seconds * 1000)).toBeLessThan(1e-6 * Math.max(1, parts));
    expect(times[times.length - 1]).toMatch(new RegExp(`^depthwise\\+exit\\s+.*\\s${Math.round(parts)}\\s+[0-9.]+$`));
    expect(() => benchWorkload(model, { newTokens: { min: 1, max: 80 } })).toThrow(/do not fit the context/);
    // Several policies: one run each; repeats keep the fastest of each run.
    const times2: Record<string, number[]> = {};
    const two = serveBench(model, {
      requests: 6, seed: 2, maxBatch: 3, promptTokens: { min: 2, max: 4 }, newTokens: { min: 2, max: 4 }, exitPolicy: [fixedDepthExit(1), maxProbExit(0.2)], repeats: 2, warmup: 0,
      onRun: (r) => (times2[r.name] ??= []).push(r.tokensPerSecond),
    });
    expect(two.rows.map((r) => r.name)).toEqual(['static', 'sequence', 'depthwise', 'depthwise+exit fixed:1', 'depthwise+exit max-prob:0.2']);
    expect(two.repeats).toBe(2);
    expect(two.exitVsBaseline).toBeUndefined();
    for (const r of two.rows) expect(r.tokensPerSecond).toBe(Math.max(...times2[r.name]));
    // With a baseline and 3 repeats: the median of the per-repeat ratios of the first exit run.
    const per: Record<string, number[]> = {};
    const three = serveBench(model, {
      requests: 6, seed: 2, maxBatch: 3, promptTokens: { min: 2, max: 4 }, newTokens: { min: 2, max: 4 }, exitPolicy: [fixedDepthExit(1), maxProbExit(0.2)], repeats: 3, warmup: 0, baseline,
      onRun: (r) => (per[r.name] ??= []).push(r.tokensPerSecond),
    });
    const ratios = per['depthwise+exit fixed:1'].map((t, i) => t / per['baseline sequence'][i]);
    expect(three.exitVsBaseline!.perRepeat.sequence).toEqual(ratios);
    expect(three.exitVsBaseline!.sequence).toBe([...ratios].sort((x, y) => x - y)[1]);
    for (const r of two.rows) expect(r.tokensPerCpuSecond).toBeGreaterThan(0);
  });

  it('the runs of a repeat take turns: the same tokens, calls and rows as one after another', () => {
    const model = tinyLooped({ seed: 6 });
    const baseline = tinyLooped({ seed: 6, blocks: 4, schedule: [0, 1, 2, 3] });
    const opts = { requests: 10, seed: 5, maxBatch: 3, promptTokens: { min: 2, max: 5 }, newTokens: { min: 2, max: 6 }, exitPolicy: fixedDepthExit(1), baseline, warmup: 0 };
    const apart = serveBench(model, { ...opts, sliceMs: 0 });
    const turns = serveBench(model, { ...opts, sliceMs: 1 });
    expect(apart.sliceMs).toBe(0);
    expect(turns.sliceMs).toBe(1);
    const facts = (r: typeof apart): unknown[] => r.rows.map((x) => [x.name, x.tokens, x.steps, x.blockRows, x.exitsPerLoop, x.agreement]);
    expect(facts(turns)).toEqual(facts(apart));
    expect(turns.tokensAgree).toBe(true);
    expect(formatServeBench(turns)).toMatch(/the runs taking turns of 1 ms/);
    expect(formatServeBench(apart)).not.toMatch(/taking turns/);
    expect(() => serveBench(model, { ...opts, sliceMs: -1 })).toThrow(/sliceMs must be a number >= 0/);
  });

  it('warms every run before timing: the baseline too, and the tokens stay the same', () => {
    const model = tinyLooped({ seed: 6 });
    const baseline = tinyLooped({ seed: 6, blocks: 4, schedule: [0, 1, 2, 3] });
    const calls = new Map<CausalLM, number>();
    for (const m of [model, baseline]) {
      const block = m.blocks[0];
      const forward = block.forward.bind(block);
      block.forward = (...args: Parameters<typeof forward>) => (calls.set(m, (calls.get(m) ?? 0) + 1), forward(...args));
    }
    const workload = { requests: 8, seed: 5, promptTokens: { min: 2, max: 5 }, newTokens: { min: 2, max: 6 } };
    const run = (warmup: number): [ServeBenchReport, number, number] => {
      calls.clear();
      const r = serveBench(model, { ...workload, maxBatch: 3, exitPolicy: fixedDepthExit(1), baseline, warmup });
      return [r, calls.get(model)!, calls.get(baseline)!];
    };
    const [cold, coldModel, coldBaseline] = run(0);
    const [warm, warmModel, warmBaseline] = run(3);
    const facts = (r: ServeBenchReport): unknown[] => r.rows.map((x) => [x.name, x.tokens, x.steps, x.blockRows, x.exitsPerLoop, x.agreement]);
    expect(facts(warm)).toEqual(facts(cold));
    // The extra calls are those of serving the first 3 requests in every run.
    const firstThree = benchWorkload(model, workload).slice(0, 3);
    const callsOf = (m: CausalLM, opts: ServingEngineOptions[]): number => {
      calls.clear();
      for (const o of opts) new ServingEngine(m, { maxBatch: 3, ...o }).serve(firstThree);
      return calls.get(m)!;
    };
    const plain: ServingEngineOptions[] = [{ scheduler: 'static' }, { scheduler: 'sequence' }];
    expect(warmBaseline - coldBaseline).toBe(callsOf(baseline, plain));
    expect(warmModel - coldModel).toBe(callsOf(model, [...plain, { scheduler: 'depthwise' }, { scheduler: 'depthwise', exitPolicy: fixedDepthExit(1) }]));
  });

  it('serveInTurns alternates the engines slice by slice, or serves each to the end', () => {
    const model = tinyLooped({ seed: 6 });
    const reqs = benchWorkload(model, { requests: 4, seed: 2, promptTokens: { min: 2, max: 3 }, newTokens: { min: 4, max: 4 } });
    const order = (sliceMs: number): string[] => {
      const seen: string[] = [];
      const served = ['a', 'b'].map((name) => {
        const engine = new ServingEngine(model, { scheduler: 'sequence', maxBatch: 4, onToken: () => seen.push(name) });
        for (const r of reqs) engine.submit(r);
        return { engine, cpu: 0 };
      });
      serveInTurns(served, sliceMs);
      for (const s of served) {
        expect(s.engine.idle).toBe(true);
        expect(s.cpu).toBeGreaterThanOrEqual(0);
        s.engine.dispose();
      }
      return seen;
    };
    // A slice shorter than any call: one call each in turn, so every step's tokens alternate.
    const tiny = order(1e-9);
    expect(tiny.length).toBe(32);
    expect(tiny.slice(0, 8)).toEqual(['a', 'a', 'a', 'a', 'b', 'b', 'b', 'b']);
    expect(tiny.join('')).toBe('aaaabbbb'.repeat(4));
    expect(order(Infinity).join('')).toBe('a'.repeat(16) + 'b'.repeat(16));
  });

  it('several K/V fills: one exit run each, all between the baseline runs, each with its own ratios', () => {
    const model = tinyLooped({ seed: 6 });
    const baseline = tinyLooped({ seed: 6, blocks: 4, schedule: [0, 1, 2, 3] });
    const order: string[] = [];
    const per: Record<string, number[]> = {};
    const rep = serveBench(model, {
      requests: 8, seed: 3, maxBatch: 3, promptTokens: { min: 2, max: 5 }, newTokens: { min: 3, max: 6 }, exitPolicy: fixedDepthExit(1),
      kvFill: ['propagate', 'reuse-loop'], repeats: 2, warmup: 0, baseline,
      onRun: (r) => (order.push(r.name), (per[r.name] ??= []).push(r.tokensPerSecond)),
    });
    expect(order.slice(0, 4)).toEqual(['baseline static', 'depthwise+exit propagate', 'depthwise+exit reuse-loop', 'baseline sequence']);
    const exits = rep.rows.filter((r) => r.earlyExit);
    expect(exits.map((r) => [r.name, r.kvFill])).toEqual([['depthwise+exit propagate', 'propagate'], ['depthwise+exit reuse-loop', 'reuse-loop']]);
    expect(rep.rows.filter((r) => !r.earlyExit).every((r) => r.kvFill === null && r.vsBaseline === undefined)).toBe(true);
    // propagate computes the fill inside later calls; reuse-loop copies entries and computes none.
    expect(exits[0].kvFolded).toBeGreaterThan(0);
    expect(exits[1].kvFolded).toBe(0);
    expect(exits[1].kvFilled).toBeGreaterThan(0);
    for (const r of exits) {
      const st = per[r.name].map((t, i) => t / per['baseline static'][i]);
      const sq = per[r.name].map((t, i) => t / per['baseline sequence'][i]);
      expect(r.vsBaseline).toEqual({ static: (st[0] + st[1]) / 2, sequence: (sq[0] + sq[1]) / 2, perRepeat: { static: st, sequence: sq } });
    }
    expect(rep.exitVsBaseline).toEqual(exits[0].vsBaseline);
    expect(rep.kvFill).toBe('propagate');
    expect(formatServeBench(rep)).toMatch(/depthwise\+exit reuse-loop over the baseline: [0-9.]+x static, [0-9.]+x sequence-wise/);
    expect(() => serveBench(model, { requests: 2, kvFill: [], warmup: 0 })).toThrow(/kvFill lists no fill/);
  });
});

describe('servedContinuations', () => {
  it('is each workload prompt followed by its greedy full-depth continuation', () => {
    const model = tinyLooped({ seed: 6 });
    const corpus = Array.from({ length: 200 }, (_, i) => (i * 7) % model.cfg.vocabSize);
    const opts = { count: 9, seed: 3, promptTokens: { min: 2, max: 5 }, newTokens: { min: 3, max: 6 } };
    const got = servedContinuations(model, corpus, { ...opts, maxBatch: 4 });
    const reqs = benchWorkload(model, { requests: 9, seed: 3, promptTokens: opts.promptTokens, newTokens: opts.newTokens, corpus });
    const alone = new ServingEngine(model, { maxBatch: 1 }).serve(reqs);
    expect(got).toEqual(reqs.map((r, i) => [...r.prompt, ...alone[i].tokens]));
    for (const [i, s] of got.entries()) expect(s.length).toBe(reqs[i].prompt.length + reqs[i].maxNewTokens);
  });
});

describe('servedTextNll', () => {
  it('is the mean of -log p(token) over the generated tokens only, from one full forward per request', () => {
    const model = tinyLooped();
    const requests = [{ prompt: [3, 7, 1] }, { prompt: [9] }];
    const results = [{ tokens: [4, 4] }, { tokens: [2, 8, 5] }];
    // By hand: softmax of the row that predicts each generated token.
    let sum = 0;
    for (const [i, r] of results.entries()) {
      const ids = [...requests[i]!.prompt, ...r.tokens];
      const logits = noGrad(() => model.forward(ids, [1, ids.length]).logits.dataSync());
      const V = model.cfg.vocabSize;
      r.tokens.forEach((tok, j) => {
        const row = logits.subarray((requests[i]!.prompt.length - 1 + j) * V, (requests[i]!.prompt.length + j) * V);
        const m = Math.max(...row);
        const z = row.reduce((a, x) => a + Math.exp(x - m), 0);
        sum += Math.log(z) + m - row[tok]!;
      });
    }
    expect(servedTextNll(model, requests, results)).toBeCloseTo(sum / 5, 5);
    expect(() => servedTextNll(model, requests, results.slice(1))).toThrow(/1 results for 2 requests/);
  });
});
