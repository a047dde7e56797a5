// `rrt bench <what>`: micro-benchmarks of the active backend. The measurement code lives in
// src/bench/; this file only parses flags and prints.

import type { Command } from 'commander';
import { GPU_MODES, type GpuMode } from '@rrt/tensor';
import { UsageError } from '../errors.js';
import { parseList, parsePositiveInt, parseShapes } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatTable } from '../ui/format.js';
import type { BenchMatmulReport } from '../bench/matmul.js';
import type { BenchTrainReport, KernelShare } from '../bench/train.js';
import type { BenchDecodeReport } from '../bench/decode.js';
import type { BenchGpuReport } from '../bench/gpu.js';

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** Per-kernel time shares as table lines. */
function profileTable(profile: KernelShare[]): string[] {
  return formatTable(['kernel', 'calls', 'ms', 'share'], profile.map((k) => [k.kernel, String(k.calls), k.ms.toFixed(2), `${(k.fraction * 100).toFixed(1)}%`]));
}

/** Human-readable form of a training-step benchmark report. */
export function trainLines(r: BenchTrainReport): string[] {
  const s = r.shape;
  const lines = [
    `training step: vocab ${s.vocab}, d ${s.d}, ${s.layers} layers, ${s.heads} heads, ffn ${s.ffn}, seq ${s.seq}, batch ${s.batch} (${r.params} parameters)`,
    `median of ${r.steps} steps: ${r.medianStepMs.toFixed(1)} ms, ${r.tokensPerS} tokens/s (first step ${r.firstStepMs.toFixed(1)} ms; loss ${r.firstLoss} -> ${r.lastLoss})`,
    `memory: peak RSS ${mib(r.peakRssBytes)}, backend heap ${mib(r.heap.bytesReserved)} reserved, ${mib(r.heap.bytesInUse)} live after the steps`,
    `  live during the step: ${mib(r.measured.afterForwardBytes)} after forward, ${mib(r.measured.afterBackwardBytes)} after backward`,
    `  estimate: ${mib(r.estimate.totalBytes)} = params ${mib(r.estimate.paramsBytes)} + grads ${mib(r.estimate.gradsBytes)} + AdamW ${mib(r.estimate.adamwBytes)} + activations ${mib(r.estimate.activationsBytes)}`,
  ];
  if (r.memoryTrace) {
    lines.push('memory by step:');
    lines.push(...formatTable(['step', 'RSS', 'live', 'wasm heap carved'], r.memoryTrace.map((m) => [String(m.step), mib(m.rssBytes), mib(m.heapBytesInUse), mib(m.heapBytesCarved)])));
  }
  if (r.profile) lines.push('profile (per step):', ...profileTable(r.profile));
  if (r.tfjs) {
    lines.push(
      'error' in r.tfjs
        ? `tfjs: not measured (${r.tfjs.error})`
        : `tfjs ${r.tfjs.info.backend} ${r.tfjs.info.version} (simd ${r.tfjs.info.simd ? 'yes' : 'no'}, ${r.tfjs.info.threads} thread(s)): ${r.tfjs.medianStepMs.toFixed(1)} ms, ${r.tfjs.tokensPerS} tokens/s; rrt is ${r.speedupVsTfjs?.toFixed(2)}x`,
    );
  }
  return lines;
}

/** Human-readable form of a decode benchmark report. */
export function decodeLines(r: BenchDecodeReport): string[] {
  const s = r.shape;
  return [
    `greedy decode with the KV cache: vocab ${s.vocab}, d ${s.d}, ${s.layers} layers, ${s.heads} heads, ffn ${s.ffn}; ${r.promptTokens}-token prompt, ${r.newTokens} new tokens`,
    ...formatTable(
      ['batch', 'prefill ms', 'ms per step', 'tokens/s', 'decode tokens/s'],
      r.runs.map((x) => [String(x.batch), x.prefillMs.toFixed(1), x.stepMs.toFixed(2), String(x.tokensPerS), String(x.decodeTokensPerS)]),
    ),
    ...r.runs.flatMap((x) => (x.profile ? [`profile (per decode step, batch ${x.batch}):`, ...profileTable(x.profile)] : [])),
    `tfjs: ${r.tfjs.note}`,
  ];
}

/** Human-readable form of a matmul benchmark report. */
export function matmulLines(report: BenchMatmulReport, repeats: number | undefined): string[] {
  const rows = report.matmul;
  const single = rows.some((r) => r.gflops1Thread !== undefined);
  const tfjs = rows.some((r) => r.tfjsGflops !== undefined);
  const linear = rows.some((r) => r.linearMedianMs !== undefined);
  const header = [
    'shape (m x k x n)', 'median ms', 'GFLOP/s', ...(single ? ['1 thread'] : []), ...(tfjs ? ['tfjs GFLOP/s', 'vs tfjs'] : []),
    ...(linear ? ['x W^T ms', 'W packed ms', 'packed gain'] : []),
  ];
  const body = rows.map((r) => [
    r.shape,
    r.medianMs.toFixed(3),
    r.gflops.toFixed(1),
    ...(single ? [r.gflops1Thread?.toFixed(1) ?? '-'] : []),
    ...(tfjs ? [r.tfjsGflops?.toFixed(1) ?? '-', r.speedupVsTfjs !== undefined ? `${r.speedupVsTfjs.toFixed(2)}x` : '-'] : []),
    ...(linear ? [r.linearMedianMs?.toFixed(4) ?? '-', r.linearPackedMedianMs?.toFixed(4) ?? '-', r.packedSpeedup !== undefined ? `${r.packedSpeedup.toFixed(2)}x` : '-'] : []),
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

/** Human-readable form of a gpu backend benchmark report: GFLOP/s per gpu.js mode, and the mode used. */
export function gpuLines(r: BenchGpuReport & { modeUsed: GpuMode | null }, size: number): string[] {
  const ran = r.modes.filter((m) => m.ran);
  const lines = [
    `gpu backend (gpu.js), float32 matmul ${size}x${size}x${size}, median of the repeats, kernel compile excluded:`,
    ...formatTable(
      ['mode', 'GFLOP/s', 'median ms', 'first call ms', 'max rel. error', 'note'],
      r.modes.map((m) =>
        m.matmul
          ? [m.mode, m.matmul.gflops.toFixed(2), m.matmul.medianMs.toFixed(2), m.matmul.firstMs.toFixed(1), m.matmul.maxRelError.toExponential(1), m.adapter ?? m.error ?? '']
          : [m.mode, '-', '-', '-', '-', m.ran ? (m.error ?? 'failed') : `skipped: ${m.reason ?? 'not available'}`],
      ),
    ),
  ];
  for (const m of ran) {
    if (m.train) lines.push(`${m.mode}: training step ${m.train.medianMs} ms (${m.train.tokensPerSecond} tokens/s; first step ${m.train.firstMs} ms, ${m.train.compiledKernels} kernels compiled)`);
  }
  lines.push(`mode used by --backend gpu: ${r.modeUsed ?? 'none'}; best mode that runs here: ${r.best ?? 'none'}`);
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
    .option('--linear', 'also time each shape as a Linear product x W^T, with W packed by every call and with W kept packed (as a serving engine keeps its weights)')
    .option('--size <n>', 'with --backend gpu: m = k = n of the timed matmul (default 1024)', parsePositiveInt)
    .option('--modes <list>', `with --backend gpu: gpu.js modes to measure, comma-separated (default: all of ${GPU_MODES.join(', ')})`, parseList(GPU_MODES))
    .option('--train', 'with --backend gpu: also time training steps of a small decoder in the mode used')
    .option('--config <file>', 'JSON file of option values (flags override it)');
  withExamples(matmul, [
    ['rrt bench matmul', 'default shapes on the default backend'],
    ['rrt bench matmul --backend ref --shapes 128x128x128 --repeats 3', 'one small shape on the reference backend'],
    ['rrt bench matmul --json > matmul.json', 'the report as JSON'],
    ['rrt bench matmul --shapes 32x256x256,32x256x2048 --linear --no-tfjs', 'serving-size Linear products, weights packed per call and kept packed'],
    ['rrt bench matmul --backend gpu --json', 'GFLOP/s per gpu.js mode (webgpu, headlessgl, webasm, cpu) and the mode used'],
    ['rrt bench matmul --backend gpu --modes webasm,cpu --size 256', 'two modes, a small matmul'],
  ]);
  defineAction(matmul, state, {
    config: 'options',
    run: async (ctx, opts) => {
      const gpuOnly = ['size', 'modes', 'train'].filter((k) => opts[k] !== undefined);
      if (ctx.backendChoice.backend.name === 'gpu') {
        if (opts.shapes !== undefined) throw new UsageError('--shapes is for the cpu and ref backends; with --backend gpu give --size <n> (an n x n x n matmul)');
        const { benchGpu } = await import('../bench/gpu.js');
        const size = (opts.size as number | undefined) ?? 1024;
        const modeUsed = (ctx.backendChoice.backend as unknown as { mode?: GpuMode }).mode ?? null;
        const report = {
          ...benchGpu({
            size,
            ...(opts.repeats ? { repeats: opts.repeats as number } : {}),
            ...(opts.modes ? { modes: opts.modes as GpuMode[] } : {}),
            ...(opts.train ? { train: true, ...(modeUsed ? { trainModes: [modeUsed] } : {}) } : {}),
            log: (line) => ctx.note(line),
          }),
          modeUsed,
        };
        ctx.output(() => gpuLines(report, size), () => ({ size, ...report }));
        return;
      }
      if (gpuOnly.length > 0) throw new UsageError(`--${gpuOnly[0]} needs --backend gpu (the gpu.js benchmark); this run uses ${ctx.backendChoice.backend.name}`);
      const { benchMatmul } = await import('../bench/matmul.js');
      const report = await benchMatmul({
        ...(opts.shapes ? { shapes: opts.shapes as [number, number, number][] } : {}),
        ...(opts.repeats ? { repeats: opts.repeats as number } : {}),
        tfjs: opts.tfjs !== false,
        linear: opts.linear === true,
      });
      // The document's `backend` (name and details) comes from the context.
      const { backend: _name, details: _details, ...rest } = report;
      ctx.output(
        () => matmulLines(report, opts.repeats as number | undefined),
        () => rest,
      );
    },
  });

  const train = bench
    .command('train')
    .description('time training steps (forward + backward + AdamW) of the reference byte-level GPT')
    .option('--steps <n>', 'timed steps after one warm-up step (the median is reported)', parsePositiveInt)
    .option('--profile', "report each kernel's share of the step time")
    .option('--memory', 'record RSS and heap use at chosen steps (on by default from 100 steps), to show memory stays flat')
    .option('--tiny', 'a tiny model (d 32, 2 layers, seq 16, batch 2) for smoke tests')
    .option('--no-tfjs', "skip timing TensorFlow.js's WebAssembly backend on the same step")
    .option('--config <file>', 'JSON file of option values (flags override it)');
  withExamples(train, [
    ['rrt bench train', 'd 256, 4 layers, seq 128, batch 8, against tfjs'],
    ['rrt bench train --profile --no-tfjs', 'where the step time goes, by kernel'],
    ['rrt bench train --steps 1000 --memory --no-tfjs', 'memory over 1,000 steps'],
    ['rrt bench train --json > train.json', 'the report as JSON'],
  ]);
  defineAction(train, state, {
    config: 'options',
    run: async (ctx, opts) => {
      const { benchTrain, TINY_SHAPE } = await import('../bench/train.js');
      const report = await benchTrain({
        ...(opts.steps ? { steps: opts.steps as number } : {}),
        ...(opts.tiny ? { shape: TINY_SHAPE } : {}),
        profile: opts.profile === true,
        ...(opts.memory ? { memory: true } : {}),
        tfjs: opts.tfjs !== false,
      });
      const { backend: _name, details: _details, ...rest } = report;
      ctx.output(() => trainLines(report), () => rest);
    },
  });

  const decode = bench
    .command('decode')
    .description('time greedy generation with the KV cache (batch 1 and 16, 64-token prompt, 256 new tokens)')
    .option('--profile', "report each kernel's share of a decode step")
    .option('--tiny', 'a tiny model and 8 + 8 tokens, for smoke tests')
    .option('--config <file>', 'JSON file of option values (flags override it)');
  withExamples(decode, [
    ['rrt bench decode', 'the reference model on the default backend'],
    ['rrt bench decode --profile', 'where a decode step goes, by kernel'],
    ['rrt bench decode --json > decode.json', 'the report as JSON'],
  ]);
  defineAction(decode, state, {
    config: 'options',
    run: async (ctx, opts) => {
      const { benchDecode } = await import('../bench/decode.js');
      const { TINY_SHAPE } = await import('../bench/train.js');
      const report = await benchDecode({
        ...(opts.tiny ? { shape: TINY_SHAPE, batches: [1, 3], promptTokens: 8, newTokens: 8 } : {}),
        profile: opts.profile === true,
      });
      const { backend: _name, details: _details, ...rest } = report;
      ctx.output(() => decodeLines(report), () => rest);
    },
  });
}
