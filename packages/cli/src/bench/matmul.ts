// `rrt bench matmul`: float32 matmul throughput (GFLOP/s, median of repeats) of the active
// backend's kernel, an elementwise add of 4096 floats in microseconds, and optionally the same
// matmuls on TensorFlow.js's WebAssembly backend in this process, for a ratio.

import { add, fromValues, getBackend, type Backend, type MatmulSpec, type Storage } from '@rrt/tensor';
import { loadTfjsWasm, type TfjsInfo } from './tfjs.js';

export interface BenchMatmulOptions {
  /** m x k x n shapes (default 512x512x512 and 2048x256x1024). */
  shapes?: [number, number, number][];
  /** Timed repetitions per shape (default 10; the median is reported). */
  repeats?: number;
  /** Also time TensorFlow.js (tfjs-backend-wasm) on the same shapes (default false). */
  tfjs?: boolean;
  /**
   * Also time each shape as a Linear product x W^T (W [n, k], read transposed) with W packed by
   * every call and kept packed beforehand (Backend.packWeight), as a serving engine keeps it
   * (default false; backends that keep no packed form report no packed time).
   */
  linear?: boolean;
}

export interface MatmulResult {
  shape: string;
  m: number;
  k: number;
  n: number;
  medianMs: number;
  gflops: number;
  /** With one thread, when the backend is cpu with more than one. */
  gflops1Thread?: number;
  tfjsMedianMs?: number;
  tfjsGflops?: number;
  /** gflops / tfjsGflops. */
  speedupVsTfjs?: number;
  /** With `linear`: x W^T, W packed by the call, and W kept packed. */
  linearMedianMs?: number;
  linearPackedMedianMs?: number;
  /** linearMedianMs / linearPackedMedianMs. */
  packedSpeedup?: number;
}

export interface BenchMatmulReport {
  [key: string]: unknown;
  backend: string;
  details: Record<string, string | number | boolean>;
  matmul: MatmulResult[];
  /** binary('add') of two 4096-float storages into a third, per call. */
  add4096Us: number;
  /** The same with the output allocated and freed each call (what an op costs). */
  add4096WithAllocUs: number;
  /** The public op add(a, b) on two 4096-float tensors, including dispatch, allocation and dispose. */
  add4096OpUs: number;
  tfjs?: TfjsInfo | { error: string };
}

const DEFAULT_SHAPES: [number, number, number][] = [[512, 512, 512], [2048, 256, 1024]];

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const round = (x: number, digits = 2): number => Number(x.toFixed(digits));

function randomValues(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    out[i] = (s >>> 0) / 4294967296 - 0.5;
  }
  return out;
}

interface ThreadedBackend extends Backend {
  threads?: number;
  whenThreadsReady?: (timeoutMs?: number) => Promise<number>;
  close?: () => void;
}

/**
 * Median milliseconds of `repeats` calls of the backend's matmul kernel at m x k x n; `linear`:
 * B stored [n, k] and read transposed, kept packed when `packed` (null: the backend keeps none).
 */
function timeMatmul(backend: Backend, m: number, k: number, n: number, repeats: number, linear?: { packed: boolean }): number | null {
  const a = backend.upload(randomValues(m * k, 1)), b = backend.upload(randomValues(k * n, 2)), c = backend.alloc(m * n);
  const spec: MatmulSpec = {
    batch: 1, m, k, n, transA: false, transB: linear !== undefined,
    aBatchOffsets: new Int32Array(1), bBatchOffsets: new Int32Array(1), accumulate: false,
  };
  const packed = linear?.packed === true && backend.packWeight?.(b, n, k) === true;
  try {
    if (linear?.packed && !packed) return null;
    // Warm-up: lets the engine tier up the wasm code and the workers pick up jobs.
    const warmEnd = performance.now() + 300;
    let warm = 0;
    while (warm < 3 || (performance.now() < warmEnd && warm < 50)) {
      backend.kernels.matmul(a, b, c, spec);
      warm++;
    }
    const times: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const t = performance.now();
      backend.kernels.matmul(a, b, c, spec);
      times.push(performance.now() - t);
    }
    return median(times);
  } finally {
    if (packed) backend.releaseWeight?.(b);
    for (const s of [a, b, c]) backend.free(s);
  }
}

function timeAdd(backend: Backend, withAlloc: boolean): number {
  const n = 4096, shape = [n];
  const x = backend.upload(randomValues(n, 3)), y = backend.upload(randomValues(n, 4));
  const out0 = backend.alloc(n);
  const k = backend.kernels;
  const run = (iters: number): number => {
    const t = performance.now();
    if (withAlloc) {
      for (let i = 0; i < iters; i++) {
        const o: Storage = backend.alloc(n);
        k.binary('add', x, shape, y, shape, o, shape);
        backend.free(o);
      }
    } else {
      for (let i = 0; i < iters; i++) k.binary('add', x, shape, y, shape, out0, shape);
    }
    return ((performance.now() - t) * 1000) / iters;
  };
  try {
    run(20_000);
    const samples: number[] = [];
    for (let r = 0; r < 7; r++) samples.push(run(20_000));
    return median(samples);
  } finally {
    for (const s of [x, y, out0]) backend.free(s);
  }
}

function timeAddOp(backend: Backend): number {
  const n = 4096;
  const a = fromValues(randomValues(n, 5), [n], backend), b = fromValues(randomValues(n, 6), [n], backend);
  const run = (iters: number): number => {
    const t = performance.now();
    for (let i = 0; i < iters; i++) add(a, b).dispose();
    return ((performance.now() - t) * 1000) / iters;
  };
  try {
    run(20_000);
    const samples: number[] = [];
    for (let r = 0; r < 7; r++) samples.push(run(20_000));
    return median(samples);
  } finally {
    a.dispose();
    b.dispose();
  }
}

interface TfjsHandle {
  time(m: number, k: number, n: number, repeats: number): number;
  info: TfjsInfo;
}

async function loadTfjs(): Promise<TfjsHandle> {
  const { tf, info } = await loadTfjsWasm();
  return {
    info,
    time(m, k, n, repeats) {
      const a = tf.tensor2d(randomValues(m * k, 1), [m, k]), b = tf.tensor2d(randomValues(k * n, 2), [k, n]);
      try {
        for (let i = 0; i < 3; i++) tf.matMul(a, b).dispose();
        const times: number[] = [];
        for (let r = 0; r < repeats; r++) {
          const t = performance.now();
          // The wasm backend runs the kernel synchronously inside matMul.
          tf.matMul(a, b).dispose();
          times.push(performance.now() - t);
        }
        return median(times);
      } finally {
        a.dispose();
        b.dispose();
      }
    },
  };
}

/** Runs the benchmark; every number is a median over repeats, measured in this process. */
export async function benchMatmul(opts: BenchMatmulOptions = {}): Promise<BenchMatmulReport> {
  const shapes = opts.shapes ?? DEFAULT_SHAPES;
  const repeats = opts.repeats ?? 10;
  const backend = getBackend() as ThreadedBackend;
  if (backend.whenThreadsReady) {
    // Workers start on the first large matmul; time them once they take jobs.
    const [m, k, n] = shapes[0] ?? [512, 512, 512];
    timeMatmul(backend, Math.min(m, 256), Math.min(k, 256), Math.min(n, 256), 1);
    await backend.whenThreadsReady();
  }
  let single: ThreadedBackend | null = null;
  if (backend.name === 'cpu' && (backend.threads ?? 1) > 1) {
    const tensor = (await import('@rrt/tensor')) as unknown as Record<string, unknown>;
    const create = tensor.createCpuBackend as ((o: { threads: number }) => ThreadedBackend) | undefined;
    if (typeof create === 'function') single = create({ threads: 1 });
  }
  let tfjs: TfjsHandle | null = null;
  let tfjsError: string | null = null;
  if (opts.tfjs) {
    try {
      tfjs = await loadTfjs();
    } catch (e) {
      tfjsError = e instanceof Error ? e.message : String(e);
    }
  }
  const results: MatmulResult[] = [];
  for (const [m, k, n] of shapes) {
    const flop = 2 * m * n * k;
    const ms = timeMatmul(backend, m, k, n, repeats)!;
    const r: MatmulResult = { shape: `${m}x${k}x${n}`, m, k, n, medianMs: round(ms, 3), gflops: round(flop / ms / 1e6, 1) };
    if (single) r.gflops1Thread = round(flop / timeMatmul(single, m, k, n, repeats)! / 1e6, 1);
    if (opts.linear) {
      const plain = timeMatmul(backend, m, k, n, repeats, { packed: false })!;
      const packed = timeMatmul(backend, m, k, n, repeats, { packed: true });
      r.linearMedianMs = round(plain, 4);
      if (packed !== null) {
        r.linearPackedMedianMs = round(packed, 4);
        r.packedSpeedup = round(plain / packed, 2);
      }
    }
    if (tfjs) {
      const tms = tfjs.time(m, k, n, repeats);
      r.tfjsMedianMs = round(tms, 3);
      r.tfjsGflops = round(flop / tms / 1e6, 1);
      r.speedupVsTfjs = round(tms / ms, 2);
    }
    results.push(r);
  }
  single?.close?.();
  const report: BenchMatmulReport = {
    backend: backend.name,
    details: backend.info().details,
    matmul: results,
    add4096Us: round(timeAdd(backend, false), 3),
    add4096WithAllocUs: round(timeAdd(backend, true), 3),
    add4096OpUs: round(timeAddOp(backend), 3),
  };
  if (tfjs) report.tfjs = tfjs.info;
  else if (tfjsError) report.tfjs = { error: tfjsError };
  return report;
}
