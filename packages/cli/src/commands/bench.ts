// `rrt bench <what>`: micro-benchmarks of the active backend. The measurement code lives in
// src/bench/; this file only parses flags and prints.

import type { Command } from 'commander';
import { parsePositiveInt, parseShapes } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatTable } from '../ui/format.js';
import type { BenchMatmulReport } from '../bench/matmul.js';

/** Human-readable form of a matmul benchmark report. */
export function matmulLines(report: BenchMatmulReport, repeats: number | undefined): string[] {
  const rows = report.matmul;
  const single = rows.some((r) => r.gflops1Thread !== undefined);
  const tfjs = rows.some((r) => r.tfjsGflops !== undefined);
  const header = ['shape (m x k x n)', 'median ms', 'GFLOP/s', ...(single ? ['1 thread'] : []), ...(tfjs ? ['tfjs GFLOP/s', 'vs tfjs'] : [])];
  const body = rows.map((r) => [
    r.shape,
    r.medianMs.toFixed(3),
    r.gflops.toFixed(1),
    ...(single ? [r.gflops1Thread?.toFixed(1) ?? '-'] : []),
    ...(tfjs ? [r.tfjsGflops?.toFixed(1) ?? '-', r.speedupVsTfjs !== undefined ? `${r.speedupVsTfjs.toFixed(2)}x` : '-'] : []),
  ]);
  const lines = [`matmul, float32, median of ${repeats ?? 'the default'} repeats:`, ...formatTable(header, body)];
  lines.push(`add of 4096 floats: ${report.add4096Us.toFixed(2)} us per call (${report.add4096WithAllocUs.toFixed(2)} us with output allocation, ${report.add4096OpUs.toFixed(2)} us through the add() op)`);
  if (report.tfjs) {
    lines.push(
      'error' in report.tfjs
        ? `tfjs: not measured (${report.tfjs.error})`
        : `tfjs: ${report.tfjs.backend} ${report.tfjs.version}, simd ${report.tfjs.simd ? 'yes' : 'no'}, ${report.tfjs.threads} thread(s)`,
    );
  }
  return lines;
}

export function register(parent: Command, state: RunState): void {
  const bench = parent.command('bench').description('micro-benchmarks of the tensor backend');
  const matmul = bench
    .command('matmul')
    .description('time float32 matrix multiplication (GFLOP/s) on the active backend')
    .option('--shapes <list>', 'm x k x n shapes, comma-separated, e.g. 256x256x256,1024x1024x1024', parseShapes)
    .option('--repeats <n>', 'timed repetitions per shape', parsePositiveInt)
    .option('--no-tfjs', "skip timing TensorFlow.js's WebAssembly backend on the same shapes")
    .option('--config <file>', 'JSON file of option values (flags override it)');
  withExamples(matmul, [
    ['rrt bench matmul', 'default shapes on the default backend'],
    ['rrt bench matmul --backend ref --shapes 128x128x128 --repeats 3', 'one small shape on the reference backend'],
    ['rrt bench matmul --json > matmul.json', 'the report as JSON'],
  ]);
  defineAction(matmul, state, {
    config: 'options',
    run: async (ctx, opts) => {
      const { benchMatmul } = await import('../bench/matmul.js');
      const report = await benchMatmul({
        ...(opts.shapes ? { shapes: opts.shapes as [number, number, number][] } : {}),
        ...(opts.repeats ? { repeats: opts.repeats as number } : {}),
        tfjs: opts.tfjs !== false,
      });
      // The document's `backend` (name and details) comes from the context.
      const { backend: _name, details: _details, ...rest } = report;
      ctx.output(
        () => matmulLines(report, opts.repeats as number | undefined),
        () => rest,
      );
    },
  });
}
