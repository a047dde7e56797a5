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

describe('demo pipeline', () => {
  it('runs end to end on a tiny random teacher and writes the report', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-demo-test-'));
    // A small slice of the shipped corpus: enough chapters for a held-out split.
    const corpus = join(dir, 'corpus.txt');
    writeFileSync(corpus, readFileSync(defaultCorpusPath(), 'utf8').slice(0, 120_000));
    const tokenizer = new ByteTokenizer();
    const cfg = defineConfig('llama', { vocabSize: tokenizer.vocabSize, hiddenSize: 16, numLayers: 4, numHeads: 2, numKvHeads: 2, intermediateSize: 32, maxPositions: 32 });
    const teacher = new CausalLM(cfg, { rng: new Generator(1) });
    const lines: string[] = [];
    const result = await runPipeline({
      teacher, tokenizer, corpus, steps: 2, seed: 0, seqLen: 16, batchSize: 2, evalBatches: 1, rank: 2, lr: 1e-3,
      bench: { requests: 3, maxBatch: 2, newTokens: { min: 2, max: 3 } }, cacheDir: null, log: (l) => lines.push(l),
    });
    teacher.dispose();
    expect(result.conversion.depthMap).toEqual([0, 1, 0, 1]);
    expect(result.curves.recursive).toHaveLength(2);
    expect(result.curves.exits).toHaveLength(1);
    expect(result.exitAccuracy.before).toHaveLength(2);
    expect(result.models.map((m) => m.name)[0]).toBe('teacher (full size)');
    for (const m of result.models) expect(Number.isFinite(m.perplexity)).toBe(true);
    expect(result.models[2]!.parameters).toBeLessThan(result.models[0]!.parameters);
    expect(result.bench.rows.length).toBeGreaterThan(0);

    const provenance = { command: 'rrt demo --steps 2', seed: 0, backend: 'test', date: '2026-01-01T00:00:00Z' };
    const out = join(dir, 'report');
    const index = writeReport(result, provenance, out);
    expect(existsSync(index)).toBe(true);
    const html = readFileSync(index, 'utf8');
    for (const id of ['perplexity', 'loss-curves', 'early-exit', 'throughput', 'schedule']) expect(html).toContain(`<h2 id="${id}">`);
    // Every section states the command and seed.
    expect(html.split('Produced by <code>rrt demo --steps 2</code>, seed 0').length - 1).toBeGreaterThanOrEqual(6);
    for (const [name, svg] of Object.entries(reportCharts(result))) {
      expect(existsSync(join(out, name))).toBe(true);
      checkXml(svg);
    }
    const summary = summaryLines(result, provenance).join('\n');
    expect(summary).toContain('summary of `rrt demo --steps 2` (seed 0');
    expect(summary).toContain('relaxed r=2, uptrained (KD)');
    expect(lines.some((l) => l.startsWith('uptrain recursive (KD): step 2/2'))).toBe(true);
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
    const r = await rrt(['demo', '--teacher', teacherDir, '--data', corpus, '--steps', '2', '--seq-len', '16', '--batch-size', '2', '--eval-batches', '1', '--rank', '2', '--no-cache', '--out', out, '--seed', '3']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`summary of \`rrt demo --teacher ${teacherDir} --rank 2 --data ${corpus} --seq-len 16 --batch-size 2 --steps 2 --eval-batches 1 --no-cache --seed 3\` (seed 3, backend cpu)`);
    expect(lines(r.stdout).at(-1)).toBe(`report: ${join(out, 'index.html')}`);
    expect(existsSync(join(out, 'depthwise-schedule.svg'))).toBe(true);
    expect(r.stderr).toMatch(/^uptrain recursive \(KD\): step 2\/2/m);
  }, 60_000);
});
