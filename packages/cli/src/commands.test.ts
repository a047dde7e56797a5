// exit-train, serve-bench, report and bench matmul --backend gpu on tiny models (fast on any backend).

import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Generator } from '@rrt/tensor';
import { ByteTokenizer, CausalLM, defaultCorpusPath, defineConfig, savePretrained, saveTokenizer } from '@rrt/layers';
import { errorLines, lines, rrt } from './test-util.js';

let dir: string;
let corpus: string;
let teacherDir: string;
let recDir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rrt-commands-'));
  corpus = join(dir, 'corpus.txt');
  writeFileSync(corpus, readFileSync(defaultCorpusPath(), 'utf8').slice(0, 120_000));
  const tokenizer = new ByteTokenizer();
  const cfg = defineConfig('llama', { vocabSize: tokenizer.vocabSize, hiddenSize: 16, numLayers: 2, numHeads: 2, numKvHeads: 2, intermediateSize: 32, maxPositions: 32 });
  teacherDir = join(dir, 'teacher');
  const teacher = new CausalLM(cfg, { rng: new Generator(5) });
  savePretrained(teacher, teacherDir);
  teacher.dispose();
  await saveTokenizer(tokenizer, join(teacherDir, 'tokenizer.json'));
  recDir = join(dir, 'rec2');
  const c = await rrt(['convert', '--model', teacherDir, '--out', recDir, '--loops', '2', '--backend', 'ref']);
  expect(c.code, c.stderr).toBe(0);
});

const DATA = () => ['--data', corpus, '--seq-len', '16', '--batch-size', '2', '--eval-batches', '2', '--no-cache'];

describe('rrt exit-train', () => {
  it('post-trains every exit with aggressive CE + KD, reports held-out loss per exit, saves a loadable model and resumes', async () => {
    const out = join(dir, 'exit');
    const r = await rrt(['exit-train', '--model', recDir, '--teacher', teacherDir, '--out', out, ...DATA(), '--steps', '4', '--lr', '1e-2', '--backend', 'ref', '--seed', '2', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ command: 'exit-train', kind: 'recursive', loops: 2, exitSchedule: 'aggressive', kd: true, kdWeight: 0.5, seed: 2, startStep: 0, steps: 4, interrupted: false });
    expect(doc.heldOutExitLoss.before).toHaveLength(2);
    expect(doc.heldOutExitLoss.after).toHaveLength(2);
    // Training the exits at this learning rate moves the first exit's held-out loss.
    expect(doc.heldOutExitLoss.after[0]).not.toBeCloseTo(doc.heldOutExitLoss.before[0], 4);
    for (const f of ['recursive.json', 'model.safetensors', 'tokenizer.json', 'rrt-exit-train.json', 'checkpoints/step-00000004.json']) expect(existsSync(join(out, f)), f).toBe(true);
    expect(lines(r.stderr)[0]).toMatch(/^backend: ref/);
    expect(r.stderr).toMatch(/held-out loss per exit before: \d+\.\d{4} \/ \d+\.\d{4}/);
    const more = await rrt(['exit-train', '--out', out, '--resume', '--steps', '5', '--backend', 'ref', '--json']);
    expect(more.code, more.stderr).toBe(0);
    expect(JSON.parse(more.stdout)).toMatchObject({ startStep: 4, steps: 5, kd: true });
    const g = await rrt(['generate', '--model', out, '--backend', 'ref', '--max-new-tokens', '2', '--json', 'In']);
    expect(g.code, g.stderr).toBe(0);
  });

  it('human output; weighted CE without a teacher; a model with one loop is bad usage', async () => {
    const r = await rrt(['exit-train', '--model', recDir, '--out', join(dir, 'exit-ce'), ...DATA(), '--steps', '2', '--exit-schedule', 'weighted', '--backend', 'ref']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^model: .* \(recursive, 2 loops\); teacher: none \(CE only\); exit schedule weighted$/m);
    expect(r.stdout).toMatch(/^held-out loss per exit: exit 1 \d+\.\d+ -> \d+\.\d+, exit 2 \d+\.\d+ -> \d+\.\d+$/m);
    const one = await rrt(['exit-train', '--model', teacherDir, '--out', join(dir, 'exit-one'), ...DATA(), '--steps', '1', '--backend', 'ref']);
    expect(one.code).toBe(2);
    expect(lines(one.stderr).at(-1)).toContain('has one loop, so it has no early exit to train');
    const bad = await rrt(['exit-train', '--model', recDir, '--out', join(dir, 'exit-bad'), '--exit-schedule', 'sometimes']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--exit-schedule');
  });
});

describe('rrt serve-bench', () => {
  const WORKLOAD = ['--requests', '3', '--max-batch', '2', '--prompt-tokens', '2-4', '--new-tokens', '2-3', '--warmup', '0', '--no-cache', '--data', '', '--backend', 'ref'];
  const workload = () => WORKLOAD.map((a) => (a === '' ? corpus : a));

  it('--json: every scheduler on a given model, one run per policy, and the baseline', async () => {
    const r = await rrt(['serve-bench', '--model', recDir, '--baseline', teacherDir, ...workload(), '--policies', 'max-prob:0.5,fixed:1', '--seed', '4', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.command).toBe('serve-bench');
    expect(doc.seed).toBe(4);
    const rows = doc.report.rows as { name: string; model: string; earlyExit: boolean; policy: string; tokens: number }[];
    expect(rows.filter((x) => x.model === 'baseline').length).toBeGreaterThanOrEqual(2);
    expect(rows.filter((x) => x.earlyExit).map((x) => x.policy)).toEqual(['max-prob:0.5', 'fixed:1']);
    expect(doc.report.workload).toMatchObject({ requests: 3, seed: 4, maxBatch: 2 });
    expect(doc.report.tokensAgree).toBe(true);
    for (const row of rows) expect(row.tokens).toBeGreaterThan(0);
  });

  it('--no-kv-fold fills exited tokens\' K/V apart; by default the fill is folded into later calls', async () => {
    const run = async (...extra: string[]) => {
      const r = await rrt(['serve-bench', '--model', recDir, ...workload().map((a) => (a === '3' ? '4' : a)), '--new-tokens', '3-4', '--policies', 'fixed:1', '--no-baseline', '--json', ...extra]);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout).report.rows as { earlyExit: boolean; kvFilled: number; kvFolded: number; tokens: number }[]).find((x) => x.earlyExit)!;
    };
    const folded = await run(), apart = await run('--no-kv-fold');
    expect(folded.kvFilled).toBeGreaterThan(0);
    expect(folded.kvFolded).toBe(folded.kvFilled);
    expect(apart.kvFolded).toBe(0);
    expect(apart.kvFilled).toBeGreaterThanOrEqual(folded.kvFilled);
    expect(apart.tokens).toBe(folded.tokens);
  });

  it('--no-mix-prefill gives prompts calls of their own; by default they join decode calls, with the same tokens', async () => {
    const run = async (...extra: string[]) => {
      // Requests of different lengths, so that prompts arrive while others decode.
      const r = await rrt(['serve-bench', '--model', recDir, ...workload().map((a) => (a === '3' ? '6' : a)), '--new-tokens', '2-5', '--policies', 'fixed:1', '--no-baseline', '--json', ...extra]);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout).report.rows as { name: string; prefillCalls: number; mixedCalls: number; tokens: number }[]).find((x) => x.name === 'depthwise')!;
    };
    const mixed = await run(), apart = await run('--no-mix-prefill');
    expect(mixed.mixedCalls).toBeGreaterThan(0);
    expect(mixed.prefillCalls).toBeLessThan(apart.prefillCalls);
    expect(apart.mixedCalls).toBe(0);
    expect(apart.tokens).toBe(mixed.tokens);
  });

  it('--kv-fill takes a list: one early-exit run per fill; an unknown or repeated fill is refused', async () => {
    const base = ['serve-bench', '--model', recDir, ...workload(), '--policies', 'fixed:1', '--no-baseline', '--json'];
    const r = await rrt([...base, '--kv-fill', 'propagate,reuse-loop']);
    expect(r.code, r.stderr).toBe(0);
    const rows = (JSON.parse(r.stdout).report.rows as { name: string; earlyExit: boolean; kvFill: string | null; kvFolded: number }[]).filter((x) => x.earlyExit);
    expect(rows.map((x) => [x.name, x.kvFill])).toEqual([['depthwise+exit propagate', 'propagate'], ['depthwise+exit reuse-loop', 'reuse-loop']]);
    expect(rows[1]!.kvFolded).toBe(0);
    for (const [fills, message] of [['propagate,copy', /unknown fill 'copy'/], ['reuse,reuse', /listed twice/], [',', /one or more of/]] as const) {
      const bad = await rrt([...base, '--kv-fill', fills]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(message);
    }
  });

  it('router:<p> and --kv-fill predict fit a router and a state predictor once, save them, and reuse them', async () => {
    const routerFile = join(dir, 'router.json');
    const predictorFile = join(dir, 'predictor.json');
    const args = [
      'serve-bench', '--model', recDir, ...workload().map((a) => (a === 'ref' ? 'cpu' : a)), '--policies', 'router:0.5,max-prob:0.5', '--router', routerFile,
      '--kv-fill', 'predict', '--state-predictor', predictorFile, '--no-baseline', '--json',
    ];
    const first = await rrt(args);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain('fitting an exit router');
    expect(first.stderr).toContain('fitting a state predictor');
    // Both learn from the same continuations, made once.
    expect(first.stderr.match(/training prompts at full depth/g)).toHaveLength(1);
    expect(JSON.parse(readFileSync(routerFile, 'utf8')).format).toBe('rrt-exit-router');
    expect(JSON.parse(readFileSync(predictorFile, 'utf8')).format).toBe('rrt-state-predictor');
    const report = JSON.parse(first.stdout).report;
    expect(report.kvFill).toBe('predict');
    const rows = report.rows as { earlyExit: boolean; policy: string; tokens: number }[];
    expect(rows.filter((x) => x.earlyExit).map((x) => x.policy)).toEqual(['router:0.5', 'max-prob:0.5']);
    const again = await rrt(args);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toMatch(/fitting|at full depth/);
    expect(JSON.parse(again.stdout).report.rows.map((r: { tokens: number }) => r.tokens)).toEqual(rows.map((r) => r.tokens));
    writeFileSync(predictorFile, '{"format": "something else"}');
    const badPredictor = await rrt(args);
    expect(badPredictor.code).toBe(2);
    expect(badPredictor.stderr).toContain('--state-predictor');
    expect(badPredictor.stderr).toContain('not an rrt state predictor');
    writeFileSync(routerFile, '{"format": "something else"}');
    const bad = await rrt(args);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('not an rrt exit router');
  });

  it('human output is the table; bad policies and misplaced flags are bad usage', async () => {
    const r = await rrt(['serve-bench', '--model', recDir, ...workload(), '--policies', 'fixed:1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^workload: 3 requests, seed 0, max batch 2/m);
    expect(r.stdout).toMatch(/^depthwise\+exit/m);
    const bad = await rrt(['serve-bench', '--model', recDir, '--policies', 'sometimes']);
    expect(bad.code).toBe(2);
    expect(errorLines(bad.stderr)).toHaveLength(1);
    const rank = await rrt(['serve-bench', '--model', recDir, '--rank', '4']);
    expect(rank.code).toBe(2);
    expect(rank.stderr).toContain('--rank only sizes the embedded relaxed model');
    const range = await rrt(['serve-bench', '--new-tokens', '9-3']);
    expect(range.code).toBe(2);
    expect(range.stderr).toContain('expected a token count like 16 or a range like 8-24');
  });

  it('without --model it serves the embedded relaxed model built from the shipped teacher', async () => {
    const r = await rrt(['serve-bench', '--requests', '2', '--max-batch', '2', '--prompt-tokens', '2-3', '--new-tokens', '2', '--warmup', '0', '--rank', '2', '--no-baseline', '--no-cache', '--policies', 'fixed:1', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.model).toMatch(/^the shipped model converted to \d+ blocks x 2 loops \(CYCLE, stepwise\) and relaxed with rank-2 SVD-init LoRA/);
    expect(doc.report.model.loops).toBe(2);
    expect(doc.report.rows.every((x: { model: string }) => x.model === 'model')).toBe(true);
    // The relaxed model serves on per-depth merged weights unless --lora hooks: same tokens either way.
    expect(doc.lora).toBe('merged');
    const hooks = await rrt(['serve-bench', '--requests', '2', '--max-batch', '2', '--prompt-tokens', '2-3', '--new-tokens', '2', '--warmup', '0', '--rank', '2', '--no-baseline', '--no-cache', '--policies', 'fixed:1', '--lora', 'hooks', '--json']);
    expect(hooks.code, hooks.stderr).toBe(0);
    expect(JSON.parse(hooks.stdout).lora).toBe('hooks');
    const counts = (d: { report: { rows: { tokens: number; exitsPerLoop: number[] }[] } }) => d.report.rows.map((x) => [x.tokens, x.exitsPerLoop]);
    expect(counts(JSON.parse(hooks.stdout))).toEqual(counts(doc));
  });
});

describe('rrt bench matmul --backend gpu', () => {
  it('reports GFLOP/s per gpu.js mode and the mode used', async () => {
    const r = await rrt(['bench', 'matmul', '--backend', 'gpu', '--modes', 'webasm,cpu', '--size', '16', '--repeats', '1', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.command).toBe('bench matmul');
    expect(doc.backend.name).toBe('gpu');
    expect(doc.size).toBe(16);
    expect(doc.modes.map((m: { mode: string }) => m.mode)).toEqual(['webasm', 'cpu']);
    for (const m of doc.modes) {
      expect(m.ran).toBe(true);
      expect(m.matmul.gflops).toBeGreaterThan(0);
      expect(m.matmul.maxRelError).toBeLessThan(1e-4);
    }
    expect(Object.keys(doc.gflops)).toEqual(['webasm', 'cpu']);
    expect(['webgpu', 'headlessgl', 'webasm', 'cpu']).toContain(doc.modeUsed);
    const human = await rrt(['bench', 'matmul', '--backend', 'gpu', '--modes', 'cpu', '--size', '8', '--repeats', '1']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^cpu +\d+\.\d\d /m);
    expect(human.stdout).toMatch(/^mode used by --backend gpu: (webgpu|headlessgl|webasm|cpu)/m);
    const shapes = await rrt(['bench', 'matmul', '--backend', 'gpu', '--shapes', '8x8x8']);
    expect(shapes.code).toBe(2);
    expect(shapes.stderr).toContain('give --size');
    const notGpu = await rrt(['bench', 'matmul', '--backend', 'ref', '--size', '8']);
    expect(notGpu.code).toBe(2);
    expect(notGpu.stderr).toContain('--size needs --backend gpu');
  });
});
