import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Generator } from '@rrt/tensor';
import { ByteTokenizer, CausalLM, defaultCorpusPath, defineConfig, savePretrained, saveTokenizer } from '@rrt/layers';
import { lines, rrt } from '../test-util.js';
import { runPipeline } from './pipeline.js';
import { reportCharts, summaryLines, writeReport } from './report.js';

/** Balanced tags, quoted attributes, no stray '<' or '&' in text. */
function checkXml(svg: string): void {
  const stack: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (const m of svg.matchAll(tag)) {
    const text = svg.slice(last, m.index);
    expect(text).not.toMatch(/[<>]/);
    expect(text).not.toMatch(/&(?!(amp|lt|gt|quot|apos);)/);
    last = m.index! + m[0].length;
    const [, close, name, , selfClose] = m;
    if (close) expect(stack.pop()).toBe(name);
    else if (!selfClose) stack.push(name);
  }
  expect(svg.slice(last).trim()).toBe('');
  expect(stack).toEqual([]);
  expect(svg.trimStart().startsWith('<svg')).toBe(true);
}

/** A folder with a slice of the shipped corpus (enough chapters for a held-out split) and a tiny random llama teacher. */
function tinySetup(prefix: string, layers: number, seed: number): { dir: string; corpus: string; tokenizer: ByteTokenizer; teacher: CausalLM } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const corpus = join(dir, 'corpus.txt');
  writeFileSync(corpus, readFileSync(defaultCorpusPath(), 'utf8').slice(0, 120_000));
  const tokenizer = new ByteTokenizer();
  const cfg = defineConfig('llama', { vocabSize: tokenizer.vocabSize, hiddenSize: 16, numLayers: layers, numHeads: 2, numKvHeads: 2, intermediateSize: 32, maxPositions: 32 });
  return { dir, corpus, tokenizer, teacher: new CausalLM(cfg, { rng: new Generator(seed) }) };
}

describe('demo pipeline', () => {
  it('runs end to end on a tiny random teacher and writes the report', async () => {
    const { dir, corpus, tokenizer, teacher } = tinySetup('rrt-demo-test-', 4, 1);
    const lines: string[] = [];
    const result = await runPipeline({
      teacher, tokenizer, corpus, steps: 2, seed: 0, seqLen: 16, batchSize: 2, evalBatches: 1, rank: 2, lr: 1e-3,
      bench: { requests: 3, maxBatch: 2, newTokens: { min: 2, max: 3 } }, cacheDir: null, log: (l) => lines.push(l),
    });
    teacher.dispose();
    expect(result.conversion.depthMap).toEqual([0, 1, 0, 1]);
    expect(result.curves.recursive).toHaveLength(2);
    expect(result.curves.exits).toHaveLength(1);
    expect(result.interrupted).toBeUndefined();
    expect(result.curves.exitAdapters).toHaveLength(1);
    expect(result.exitTraining.map((r) => r.trained)).toEqual(['everything', 'exit adapters (rank 16), trunk frozen']);
    for (const run of result.exitTraining) expect(run.before.accuracy).toHaveLength(2);
    // The frozen trunk and the plain head of the last exit: full depth is exactly as uptrained.
    const frozen = result.exitTraining[1]!;
    expect(frozen.after.loss[1]).toBe(frozen.before.loss[1]);
    expect(frozen.after.accuracy[1]).toBe(frozen.before.accuracy[1]);
    expect(result.models.map((m) => m.name)[0]).toBe('teacher (full size)');
    for (const m of result.models) expect(Number.isFinite(m.perplexity)).toBe(true);
    expect(result.models[2]!.parameters).toBeLessThan(result.models[0]!.parameters);
    expect(result.serving.map((s) => s.model)).toEqual(['recursive', 'relaxed r=2']);
    for (const { bench, served } of result.serving) {
      expect(bench.rows.map((r) => r.name)).toEqual(['baseline static', 'baseline sequence', 'static', 'sequence', 'depthwise', 'depthwise+exit predict', 'depthwise+exit reuse-loop']);
      expect(bench.exitVsBaseline).toBeDefined();
      expect(bench.tokensAgree).toBe(true);
      expect(served.map((s) => s.kvFill)).toEqual(['predict', 'reuse-loop']);
      expect(bench.rows.filter((r) => r.earlyExit).map((r) => r.kvFill)).toEqual(['predict', 'reuse-loop']);
      for (const s of served) {
        expect(s.policy).toBe('router:0.6');
        expect(s.agreement).toBeGreaterThanOrEqual(0);
        expect(s.agreement).toBeLessThanOrEqual(1);
        for (const v of Object.values(s.nll)) expect(Number.isFinite(v)).toBe(true);
        expect(s.heldOut.nll).toBeGreaterThan(0);
        expect(s.heldOut.agreement).toBeGreaterThanOrEqual(0);
        expect(s.heldOut.agreement).toBeLessThanOrEqual(1);
      }
      // The fills change only the K/V of exited tokens: full depth scores the same either way.
      expect(served[1]!.heldOut.fullNll).toBe(served[0]!.heldOut.fullNll);
    }
    expect(result.samples.map((s) => s.model)).toEqual(['teacher', 'recursive, uptrained', 'relaxed r=2, uptrained']);
    expect(result.scheduleShown!.calls).toBeGreaterThan(0);

    const provenance = { command: 'rrt demo --steps 2', seed: 0, backend: 'test', date: '2026-01-01T00:00:00Z' };
    const out = join(dir, 'report');
    const index = writeReport(result, provenance, out);
    expect(existsSync(index)).toBe(true);
    const html = readFileSync(index, 'utf8');
    for (const id of ['perplexity', 'loss-curves', 'early-exit', 'samples', 'throughput', 'schedule']) expect(html).toContain(`<h2 id="${id}">`);
    // The page states the command and seed once, at the top; the schedule text says how many calls its plot shows.
    expect(html.split('produced by <code>rrt demo --steps 2</code> (seed 0').length - 1).toBe(1);
    expect(html).toContain(`the first ${result.scheduleShown!.calls} of ${result.scheduleShown!.total} calls`);
    expect(Object.keys(reportCharts(result)).sort()).toEqual(['depthwise-schedule.svg', 'exit-accuracy.svg', 'exit-curves.svg', 'loss-curves.svg', 'perplexity.svg', 'throughput.svg']);
    for (const [name, svg] of Object.entries(reportCharts(result))) {
      expect(existsSync(join(out, name))).toBe(true);
      checkXml(svg);
    }
    const summary = summaryLines(result, provenance).join('\n');
    expect(summary).toContain('summary of `rrt demo --steps 2` (seed 0');
    expect(summary).toContain('relaxed r=2, uptrained (KD)');
    // Each exit run states the rows it computed against the teacher's static batching.
    const rowLines = summary.split('\n').filter((l) => l.startsWith('  rows through the blocks: '));
    expect(rowLines).toHaveLength(4);
    const exit = result.serving[0]!.bench.rows.find((r) => r.name === 'depthwise+exit reuse-loop')!;
    const vsStatic = result.serving[0]!.bench.rows.find((r) => r.name === 'baseline static')!;
    const fewer = (vsStatic.blockRows.prompt + vsStatic.blockRows.decode) / (exit.blockRows.prompt + exit.blockRows.decode);
    expect(rowLines[1]).toMatch(new RegExp(`: ${fewer.toFixed(2).replace('.', '\\.')}x fewer$`));
    // A prompt runs every depth in every scheduler: the same prompt rows for all of them.
    expect(exit.blockRows.prompt).toBe(vsStatic.blockRows.prompt);
    expect(lines.some((l) => l.startsWith('uptrain recursive (KD): step 2/2'))).toBe(true);

    // rrt report redraws the same index.html and plots from result.json alone.
    const again = join(dir, 'again');
    const r = await rrt(['report', join(out, 'result.json'), '--out', again, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ command: 'report', report: join(again, 'index.html') });
    expect(readFileSync(join(again, 'index.html'), 'utf8')).toBe(html);
    for (const name of Object.keys(reportCharts(result))) expect(readFileSync(join(again, name), 'utf8'), name).toBe(readFileSync(join(out, name), 'utf8'));
    const missing = await rrt(['report', join(dir, 'nowhere')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('run rrt demo first');
    writeFileSync(join(dir, 'other.json'), '{"models": []}');
    const notDemo = await rrt(['report', join(dir, 'other.json')]);
    expect(notDemo.code).toBe(2);
    expect(notDemo.stderr).toContain('not a result.json of rrt demo (missing provenance');
  }, 60_000);

  it('a stop request ends the running stage after its step; the report covers the finished stages and rrt report redraws it', async () => {
    const { dir, corpus, tokenizer, teacher } = tinySetup('rrt-demo-stop-', 4, 1);
    const log: string[] = [];
    // Ctrl-C while the relaxed model uptrains.
    const result = await runPipeline({
      teacher, tokenizer, corpus, steps: 4, seed: 0, seqLen: 16, batchSize: 2, evalBatches: 1, rank: 2, lr: 1e-3,
      bench: { requests: 3, maxBatch: 2, newTokens: { min: 2, max: 3 } }, cacheDir: null, log: (l) => log.push(l),
      stopRequested: () => log.some((l) => l.startsWith('relax: ')),
    });
    teacher.dispose();
    expect(result.interrupted).toEqual({ stage: 'relax' });
    expect(result.curves.recursive).toHaveLength(4);
    expect(result.curves.relaxed).toHaveLength(1);
    expect(result.curves.exits).toEqual([]);
    expect(result.models).toEqual([]);
    expect(result.serving).toEqual([]);
    expect(result.exitTraining).toEqual([]);
    expect(log.at(-1)).toBe('interrupted during relax: reporting the stages before it');
    const provenance = { command: 'rrt demo --steps 4', seed: 0, backend: 'test', date: '2026-01-01T00:00:00Z' };
    const out = join(dir, 'report');
    const html = readFileSync(writeReport(result, provenance, out), 'utf8');
    expect(html).toContain('interrupted (Ctrl-C) during relax');
    expect(html).toContain('<h2 id="loss-curves">');
    for (const id of ['perplexity', 'early-exit', 'samples', 'throughput', 'schedule']) expect(html).not.toContain(`<h2 id="${id}">`);
    expect(Object.keys(reportCharts(result))).toEqual(['loss-curves.svg']);
    expect(summaryLines(result, provenance)[1]).toContain('interrupted (Ctrl-C) during relax');
    const again = join(dir, 'again');
    const r = await rrt(['report', join(out, 'result.json'), '--out', again]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(again, 'index.html'), 'utf8')).toBe(html);
  }, 60_000);

  it('--full adds the init, rank, zero-init and from-scratch rows, trained with the same budget, to the report', async () => {
    const { dir, corpus, tokenizer, teacher } = tinySetup('rrt-demo-full-', 2, 3);
    const log: string[] = [];
    const result = await runPipeline({
      teacher, tokenizer, corpus, steps: 2, seed: 0, seqLen: 16, batchSize: 2, evalBatches: 1, rank: 2, lr: 1e-3,
      full: { inits: ['stepwise', 'average'], ranks: [1, 2] },
      bench: { requests: 2, maxBatch: 2, newTokens: { min: 2, max: 2 } }, cacheDir: null, log: (l) => log.push(l),
    });
    teacher.dispose();
    const rows = result.full!.rows;
    expect(rows.map((r) => r.name)).toEqual([
      'recursive, stepwise init', 'recursive, average init', 'relaxed r=1, SVD init', 'relaxed r=2, SVD init', 'relaxed r=2, zero init',
      'vanilla 1 layers, from scratch (CE)', 'vanilla 1 layers, from scratch (KD)',
    ]);
    // The pipeline's own models are reused, not trained again.
    expect(rows[0]!.perplexityAfter).toBe(result.models[2]!.perplexity);
    expect(rows[3]!.perplexityAfter).toBe(result.models[4]!.perplexity);
    expect(log.filter((l) => l.startsWith('full: ')).map((l) => l.split(':')[1]!.trim())).toEqual([
      'recursive, average init', 'relaxed r=1, SVD init', 'relaxed r=2, zero init', 'vanilla 1 layers, from scratch (CE)', 'vanilla 1 layers, from scratch (KD)',
    ]);
    for (const r of rows) {
      expect(r.curve).toHaveLength(2);
      expect(Number.isFinite(r.perplexityAfter)).toBe(true);
    }
    // Zero init starts as the plain recursive model of the relaxed models' (average) init; the same-size vanilla model has the recursive model's size.
    expect(rows[4]!.perplexityBefore).toBeCloseTo(rows[1]!.perplexityBefore, 3);
    expect(rows[5]!.parameters).toBe(result.models[1]!.parameters);
    const out = join(dir, 'report');
    writeReport(result, { command: 'rrt demo --full', seed: 0, backend: 'test', date: '2026-01-01T00:00:00Z' }, out);
    const html = readFileSync(join(out, 'index.html'), 'utf8');
    expect(html).toContain('<h2 id="full-study">');
    expect(html).toContain('<td>vanilla 1 layers, from scratch (KD)</td>');
    checkXml(readFileSync(join(out, 'full-study.svg'), 'utf8'));
  }, 60_000);

  it('rrt demo runs the pipeline from a teacher folder and prints the summary with its command', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-demo-cli-'));
    const corpus = join(dir, 'corpus.txt');
    writeFileSync(corpus, readFileSync(defaultCorpusPath(), 'utf8').slice(0, 120_000));
    const tokenizer = new ByteTokenizer();
    const cfg = defineConfig('llama', { vocabSize: tokenizer.vocabSize, hiddenSize: 16, numLayers: 2, numHeads: 2, numKvHeads: 2, intermediateSize: 32, maxPositions: 64 });
    const teacherDir = join(dir, 'teacher');
    const teacher = new CausalLM(cfg, { rng: new Generator(2) });
    savePretrained(teacher, teacherDir);
    teacher.dispose();
    await saveTokenizer(tokenizer, join(teacherDir, 'tokenizer.json'));
    const out = join(dir, 'report');
    const r = await rrt(['demo', '--teacher', teacherDir, '--data', corpus, '--steps', '2', '--seq-len', '16', '--batch-size', '2', '--eval-batches', '1', '--rank', '2', '--requests', '8', '--no-cache', '--out', out, '--seed', '3']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`summary of \`rrt demo --teacher ${teacherDir} --rank 2 --requests 8 --data ${corpus} --seq-len 16 --batch-size 2 --steps 2 --eval-batches 1 --no-cache --seed 3\` (seed 3, backend cpu)`);
    expect(lines(r.stdout).at(-1)).toBe(`report: ${join(out, 'index.html')}`);
    expect(existsSync(join(out, 'depthwise-schedule.svg'))).toBe(true);
    expect(r.stderr).toMatch(/^uptrain recursive \(KD\): step 2\/2/m);

    // Ctrl-C during the first stage: a report of what finished, exit status 130.
    const cut = join(dir, 'cut');
    const stopped = await rrt(['demo', '--teacher', teacherDir, '--data', corpus, '--steps', '50', '--seq-len', '16', '--batch-size', '2', '--eval-batches', '1', '--rank', '2', '--no-cache', '--out', cut], {
      onInterrupt: (handler) => {
        // Fires once the first training step has run and the trainer yields to the event loop.
        const t = setImmediate(handler);
        return () => clearImmediate(t);
      },
    });
    expect(stopped.code, stopped.stderr).toBe(130);
    expect(stopped.stderr).toContain('interrupt: stopping this stage and writing a report of the finished ones');
    expect(stopped.stdout).toContain('interrupted (Ctrl-C) during uptrain');
    expect(readFileSync(join(cut, 'index.html'), 'utf8')).toContain('interrupted (Ctrl-C) during uptrain');
  }, 60_000);
});
