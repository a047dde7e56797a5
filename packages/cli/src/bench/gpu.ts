// `rrt bench gpu`: the gpu backend (gpu.js kernels) in each of its modes: float32 matmul
// throughput (GFLOP/s, median of repeats, kernel compile excluded) and, optionally, the time of
// one AdamW training step of a small decoder, each timed to the device's completion (sync()).

import { CausalLM, defineConfig, nextTokenLoss } from '@rrt/layers';
import { AdamW, GPU_MODES, Generator, createGpuBackend, tidy, type GpuBackend, type GpuMode, type MatmulSpec } from '@rrt/tensor';

export interface GpuTrainBenchConfig {
  layers: number;
  hidden: number;
  heads: number;
  ffn: number;
  vocab: number;
  seq: number;
  batch: number;
}

export interface BenchGpuOptions {
  /** Modes to measure (default: every mode that runs here, best first). */
  modes?: GpuMode[];
  /** m = k = n of the timed matmul (default 1024). */
  size?: number;
  /** Timed repetitions (default 5; the median is reported). */
  repeats?: number;
  /**
   * Also time training steps: true for the default model (4 layers, d 256, 4 heads, ffn 1024,
   * vocab 256, seq 128, batch 8), or a model of one's own; only in the modes listed in
   * trainModes (default: the first mode that runs).
   */
  train?: boolean | Partial<GpuTrainBenchConfig>;
  trainModes?: GpuMode[];
  /** Reports progress lines (e.g. to stderr). */
  log?: (line: string) => void;
}

export interface GpuMatmulResult {
  m: number;
  k: number;
  n: number;
  /** First call: kernel compile plus one run. */
  firstMs: number;
  medianMs: number;
  gflops: number;
  /** Largest |difference| from a float64 reference over a sample of outputs, relative to the largest output. */
  maxRelError: number;
}

export interface GpuTrainResult {
  config: GpuTrainBenchConfig;
  /** First step: kernel compiles included. */
  firstMs: number;
  medianMs: number;
  tokensPerSecond: number;
  lossFirst: number;
  lossLast: number;
  compiledKernels: number;
}

export interface GpuModeResult {
  mode: GpuMode;
  ran: boolean;
  /** Why the mode did not run. */
  reason?: string;
  /** WebGPU adapter, when the mode is webgpu. */
  adapter?: string;
  matmul?: GpuMatmulResult;
  train?: GpuTrainResult;
  error?: string;
}

export interface BenchGpuReport {
  [key: string]: unknown;
  modes: GpuModeResult[];
  /** Matmul GFLOP/s per mode that ran. */
  gflops: Partial<Record<GpuMode, number>>;
  best: GpuMode | null;
}

const DEFAULT_TRAIN: GpuTrainBenchConfig = { layers: 4, hidden: 256, heads: 4, ffn: 1024, vocab: 256, seq: 128, batch: 8 };

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

function benchMatmul(b: GpuBackend, size: number, repeats: number): GpuMatmulResult {
  const m = size, k = size, n = size;
  const av = randomValues(m * k, 1), bv = randomValues(k * n, 2);
  const a = b.upload(av), bs = b.upload(bv), c = b.alloc(m * n);
  const spec: MatmulSpec = {
    batch: 1, m, k, n, transA: false, transB: false,
    aBatchOffsets: new Int32Array(1), bBatchOffsets: new Int32Array(1), accumulate: false,
  };
  try {
    b.sync();
    let t = performance.now();
    b.kernels.matmul(a, bs, c, spec);
    b.sync();
    const firstMs = performance.now() - t;
    const times: number[] = [];
    for (let r = 0; r < repeats; r++) {
      t = performance.now();
      b.kernels.matmul(a, bs, c, spec);
      b.sync();
      times.push(performance.now() - t);
    }
    // Spot-check 64 outputs against float64.
    const got = b.read(c);
    let err = 0, scale = 1e-12;
    for (let s = 0; s < 64; s++) {
      const i = (s * 7919) % m, j = (s * 104729) % n;
      let want = 0;
      for (let p = 0; p < k; p++) want += av[i * k + p] * bv[p * n + j];
      err = Math.max(err, Math.abs(got[i * n + j] - want));
      scale = Math.max(scale, Math.abs(want));
    }
    const medianMs = median(times);
    return { m, k, n, firstMs: round(firstMs), medianMs: round(medianMs, 3), gflops: Number(((2 * m * k * n) / (medianMs * 1e6)).toPrecision(3)), maxRelError: Number((err / scale).toPrecision(3)) };
  } finally {
    for (const s of [a, bs, c]) b.free(s);
  }
}

function benchTrain(b: GpuBackend, cfg: GpuTrainBenchConfig, repeats: number): GpuTrainResult {
  const model = new CausalLM(
    defineConfig('llama', { vocabSize: cfg.vocab, hiddenSize: cfg.hidden, numLayers: cfg.layers, numHeads: cfg.heads, intermediateSize: cfg.ffn, maxPositions: cfg.seq }),
    { backend: b, rng: new Generator(1) },
  );
  const opt = new AdamW(model.parameters(), { lr: 1e-3 });
  const g = new Generator(2);
  const tokens = cfg.batch * cfg.seq;
  const step = (): number => {
    const ids = Array.from({ length: tokens }, () => g.int(0, cfg.vocab));
    const targets = ids.map((id, i) => (i % cfg.seq === cfg.seq - 1 ? -100 : ids[i + 1] ?? id));
    const loss = tidy(() => {
      const l = nextTokenLoss(model.forward(ids, [cfg.batch, cfg.seq]).logits, targets);
      l.backward();
      return l.item();
    });
    opt.step();
    opt.zeroGrad();
    b.sync();
    return loss;
  };
  try {
    let t = performance.now();
    const lossFirst = step();
    const firstMs = performance.now() - t;
    const times: number[] = [];
    let lossLast = lossFirst;
    for (let r = 0; r < repeats; r++) {
      t = performance.now();
      lossLast = step();
      times.push(performance.now() - t);
    }
    const medianMs = median(times);
    return {
      config: cfg, firstMs: round(firstMs), medianMs: round(medianMs), tokensPerSecond: round((tokens * 1000) / medianMs, 1),
      lossFirst: round(lossFirst, 4), lossLast: round(lossLast, 4), compiledKernels: b.compiledKernels,
    };
  } finally {
    model.dispose();
  }
}

/** Benchmarks the gpu backend in each requested mode; modes that cannot run say why. */
export function benchGpu(opts: BenchGpuOptions = {}): BenchGpuReport {
  const size = opts.size ?? 1024;
  const repeats = opts.repeats ?? 5;
  const log = opts.log ?? (() => {});
  const results: GpuModeResult[] = [];
  const gflops: Partial<Record<GpuMode, number>> = {};
  let trainModes = opts.trainModes;
  for (const mode of opts.modes ?? GPU_MODES) {
    let b: GpuBackend;
    try {
      b = createGpuBackend({ mode, name: `gpu-${mode}` });
    } catch (e) {
      results.push({ mode, ran: false, reason: (e as Error).message });
      log(`${mode}: skipped (${(e as Error).message})`);
      continue;
    }
    const r: GpuModeResult = { mode, ran: true };
    const adapter = b.info().details.adapter;
    if (typeof adapter === 'string') r.adapter = adapter;
    try {
      log(`${mode}: matmul ${size}^3 ...`);
      r.matmul = benchMatmul(b, size, repeats);
      gflops[mode] = r.matmul.gflops;
      log(`${mode}: ${r.matmul.gflops} GFLOP/s`);
      trainModes ??= [mode];
      if (opts.train && trainModes.includes(mode)) {
        const cfg = { ...DEFAULT_TRAIN, ...(typeof opts.train === 'object' ? opts.train : {}) };
        log(`${mode}: training steps ...`);
        r.train = benchTrain(b, cfg, Math.max(1, Math.min(repeats, 5)));
        log(`${mode}: ${r.train.medianMs} ms per step`);
      }
    } catch (e) {
      r.error = (e as Error).message;
      log(`${mode}: ${r.error}`);
    } finally {
      b.close();
    }
    results.push(r);
  }
  const best = results.find((r) => r.ran)?.mode ?? null;
  return { modes: results, gflops, best };
}
