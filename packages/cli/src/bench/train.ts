// `rrt bench train`: training steps (forward + backward + AdamW) of the reference byte-level GPT
// on the active backend, with memory, an optional per-kernel profile, and the same step in
// TensorFlow.js's WebAssembly backend (a port of shared/anchors/tfjs_train_step.mjs) for a ratio.

import { AdamW, getBackend, noGrad, startProfile, stopProfile, tidy, type Backend } from '@rrt/tensor';
import { CausalLM, defineConfig, nextTokenLoss } from '@rrt/layers';
import { loadTfjsGradients, loadTfjsWasm, type Tf, type TfjsInfo } from './tfjs.js';

/** Model and batch sizes of the benchmark. */
export interface TrainShape {
  vocab: number;
  d: number;
  layers: number;
  heads: number;
  ffn: number;
  seq: number;
  batch: number;
}

/** The anchors' workload: vocab 256, d 256, 4 layers, 4 heads, ffn 1024, seq 128, batch 8. */
export const REFERENCE_SHAPE: TrainShape = { vocab: 256, d: 256, layers: 4, heads: 4, ffn: 1024, seq: 128, batch: 8 };
/** A model that runs a step in milliseconds on the ref backend (tests, smoke runs). */
export const TINY_SHAPE: TrainShape = { vocab: 256, d: 32, layers: 2, heads: 2, ffn: 64, seq: 16, batch: 2 };

export interface BenchTrainOptions {
  /** Timed steps after one warm-up step (default 5; the median is reported). */
  steps?: number;
  /** Time every kernel call and report each kernel's share of the step (default false). */
  profile?: boolean;
  /** Also time TensorFlow.js (tfjs-backend-wasm) on the same shapes (default false). */
  tfjs?: boolean;
  /** Default REFERENCE_SHAPE. */
  shape?: TrainShape;
  /**
   * Record memory (RSS, wasm heap, V8 heap) after steps 1, 10, 100, every 250th and the last, to
   * show whether it stays flat (default: on when steps >= 100).
   */
  memory?: boolean;
}

/** Memory after a timed step (1-based), in bytes. */
export interface MemorySample {
  step: number;
  /** process.memoryUsage().rss now (not the peak). */
  rssBytes: number;
  /** Live backend storages. */
  heapBytesInUse: number;
  /** Wasm heap handed out so far (live + free-listed blocks; cpu only, else 0). */
  heapBytesCarved: number;
  /** Wasm memory size (cpu) or backend reservation. */
  heapBytesReserved: number;
  /** V8's JS heap in use. */
  v8HeapUsedBytes: number;
}

/** Where the peak RSS goes after the timed steps (bytes). */
export interface RssBreakdown {
  rssBytes: number;
  /** Wasm heap pages ever touched (carved); the untouched rest of the reservation is not in RSS. */
  wasmCarvedBytes: number;
  wasmReservedBytes: number;
  /** Most bytes live in storages at once (the step's real need, before allocator slack). */
  peakLiveBytes: number;
  /** V8's JS heap (reserved) and memory outside it held by JS objects. */
  v8HeapTotalBytes: number;
  externalBytes: number;
  /** RSS not explained above: Node itself, compiled code, the worker threads' isolates. */
  otherBytes: number;
}

/**
 * Bytes a step needs, by parts. Parameters, gradients and AdamW's m and v are 4 bytes per
 * parameter each. Activations count the float32 tensors autograd keeps for the backward pass,
 * assuming each op saves its inputs/outputs: per layer, N = batch * seq tokens hold about
 * 12 d (two LayerNorm in/out, qkv, permuted q/k/v, attention out and its permute, o-proj,
 * residuals) + 2 ffn (up, gelu) floats, plus 3 score-sized tensors (scores, masked, softmax) of
 * batch * heads * seq^2; then the final norm (2 N d) and logits with their softmax (2 N vocab).
 */
export interface MemoryEstimate {
  paramsBytes: number;
  gradsBytes: number;
  adamwBytes: number;
  activationsBytes: number;
  totalBytes: number;
}

export interface KernelShare {
  kernel: string;
  calls: number;
  /** Milliseconds per step. */
  ms: number;
  /** Fraction of the step's wall time. */
  fraction: number;
}

export interface TfjsTrainResult {
  info: TfjsInfo;
  medianStepMs: number;
  tokensPerS: number;
  firstStepMs: number;
}

export interface BenchTrainReport {
  [key: string]: unknown;
  backend: string;
  details: Record<string, string | number | boolean>;
  shape: TrainShape;
  params: number;
  steps: number;
  firstStepMs: number;
  medianStepMs: number;
  tokensPerS: number;
  firstLoss: number;
  lastLoss: number;
  /** process.resourceUsage().maxRSS after the rrt steps (before tfjs runs), in bytes. */
  peakRssBytes: number;
  /** backend.memory() after the steps: live bytes and the reserved heap (the wasm heap for cpu). */
  heap: { bytesInUse: number; bytesReserved: number; storages: number };
  /** Live backend bytes measured in the warm-up step: after the loss, and after backward. */
  measured: { afterForwardBytes: number; afterBackwardBytes: number };
  estimate: MemoryEstimate;
  /** Memory after chosen steps (see BenchTrainOptions.memory). */
  memoryTrace?: MemorySample[];
  /** Growth from the sample at step 100 (or the first) to the last sample. */
  memoryGrowth?: { fromStep: number; toStep: number; rssBytes: number; heapBytesCarved: number; heapBytesInUse: number; v8HeapUsedBytes: number };
  /** Where the RSS goes, after the timed steps. */
  rssBreakdown: RssBreakdown;
  /** Per-kernel share of the step, slowest first; 'other' is time outside kernels (JS: autograd, allocation, dispatch). */
  profile?: KernelShare[];
  tfjs?: TfjsTrainResult | { error: string };
  /** tfjs median step ms / rrt median step ms (> 1: rrt is faster). */
  speedupVsTfjs?: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const round = (x: number, digits = 2): number => Number(x.toFixed(digits));

/** Deterministic token ids in [0, vocab). */
export function randomIds(n: number, vocab: number, seed: number): Int32Array {
  const out = new Int32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    out[i] = (s >>> 0) % vocab;
  }
  return out;
}

/** The reference model as a gpt2-family config (pre-LayerNorm, tanh-GELU, learned positions, tied head). */
export function benchConfig(shape: TrainShape, maxPositions = shape.seq) {
  return defineConfig('gpt2', {
    vocabSize: shape.vocab, hiddenSize: shape.d, numLayers: shape.layers, numHeads: shape.heads,
    intermediateSize: shape.ffn, maxPositions,
  });
}

export function estimateMemory(shape: TrainShape, params: number): MemoryEstimate {
  const { d, ffn, heads, seq, batch, layers, vocab } = shape;
  const n = batch * seq;
  const floats = layers * ((12 * d + 2 * ffn) * n + 3 * batch * heads * seq * seq) + 2 * n * d + 2 * n * vocab;
  const e = { paramsBytes: 4 * params, gradsBytes: 4 * params, adamwBytes: 8 * params, activationsBytes: 4 * floats };
  return { ...e, totalBytes: e.paramsBytes + e.gradsBytes + e.adamwBytes + e.activationsBytes };
}

export async function benchTrain(opts: BenchTrainOptions = {}): Promise<BenchTrainReport> {
  const shape = opts.shape ?? REFERENCE_SHAPE;
  const steps = opts.steps ?? 5;
  const backend = getBackend() as Backend & { whenThreadsReady?: (timeoutMs?: number) => Promise<number> };
  const { batch: B, seq: T, vocab } = shape;
  const model = new CausalLM(benchConfig(shape));
  const params = model.parameters();
  const optimizer = new AdamW(params, { lr: 3e-4, weightDecay: 0 });
  const ids = randomIds(B * T, vocab, 1), targets = randomIds(B * T, vocab, 2);
  const measured = { afterForwardBytes: 0, afterBackwardBytes: 0 };
  const step = (measure: boolean): number => {
    const loss = tidy(() => {
      const { logits } = model.forward(ids, [B, T]);
      const l = nextTokenLoss(logits, targets);
      if (measure) measured.afterForwardBytes = backend.memory().bytesInUse;
      l.backward(undefined, { freeIntermediates: true });
      if (measure) measured.afterBackwardBytes = backend.memory().bytesInUse;
      return l.item();
    });
    noGrad(() => optimizer.step());
    optimizer.zeroGrad();
    return loss;
  };
  let t = performance.now();
  const firstLoss = step(true);
  const firstStepMs = performance.now() - t;
  // Worker threads start on the first large matmul; time steps once they take jobs.
  if (backend.whenThreadsReady) await backend.whenThreadsReady();
  if (opts.profile) startProfile(backend);
  const times: number[] = [];
  let lastLoss = firstLoss;
  let timings: ReturnType<typeof stopProfile> | null = null;
  const trace: MemorySample[] | null = opts.memory ?? steps >= 100 ? [] : null;
  const sample = (n: number): MemorySample => {
    const mem = backend.memory(), usage = process.memoryUsage();
    return {
      step: n, rssBytes: usage.rss, heapBytesInUse: mem.bytesInUse, heapBytesCarved: mem.bytesCarved ?? 0,
      heapBytesReserved: mem.bytesReserved, v8HeapUsedBytes: usage.heapUsed,
    };
  };
  try {
    for (let s = 0; s < steps; s++) {
      t = performance.now();
      lastLoss = step(false);
      times.push(performance.now() - t);
      const n = s + 1;
      if (trace && (n === 1 || n === 10 || n === 100 || n % 250 === 0 || n === steps)) trace.push(sample(n));
    }
  } finally {
    if (opts.profile) timings = stopProfile(backend);
  }
  const peakRssBytes = process.resourceUsage().maxRSS * 1024;
  const mem = backend.memory();
  const medianStepMs = median(times);
  const paramCount = model.numParameters();
  const report: BenchTrainReport = {
    backend: backend.name,
    details: backend.info().details,
    shape,
    params: paramCount,
    steps,
    firstStepMs: round(firstStepMs, 1),
    medianStepMs: round(medianStepMs, 1),
    tokensPerS: Math.round((B * T * 1000) / medianStepMs),
    firstLoss: round(firstLoss, 4),
    lastLoss: round(lastLoss, 4),
    peakRssBytes,
    heap: { bytesInUse: mem.bytesInUse, bytesReserved: mem.bytesReserved, storages: mem.storages },
    measured,
    estimate: estimateMemory(shape, paramCount),
    rssBreakdown: rssBreakdown(backend),
  };
  if (trace) {
    report.memoryTrace = trace;
    const from = trace.find((x) => x.step >= 100) ?? trace[0], to = trace[trace.length - 1];
    report.memoryGrowth = {
      fromStep: from.step, toStep: to.step, rssBytes: to.rssBytes - from.rssBytes, heapBytesCarved: to.heapBytesCarved - from.heapBytesCarved,
      heapBytesInUse: to.heapBytesInUse - from.heapBytesInUse, v8HeapUsedBytes: to.v8HeapUsedBytes - from.v8HeapUsedBytes,
    };
  }
  if (timings) {
    const total = times.reduce((a, b) => a + b, 0);
    const inKernels = timings.reduce((a, k) => a + k.ms, 0);
    const rows = [...timings, { kernel: 'other', calls: 0, ms: Math.max(0, total - inKernels) }].sort((a, b) => b.ms - a.ms);
    report.profile = rows.map((k) => ({ kernel: k.kernel, calls: k.calls / steps, ms: round(k.ms / steps, 3), fraction: round(k.ms / total, 4) }));
  }
  model.dispose();
  if (opts.tfjs) {
    try {
      const r = await tfjsTrain(shape, steps);
      report.tfjs = r;
      report.speedupVsTfjs = round(r.medianStepMs / medianStepMs, 2);
    } catch (e) {
      report.tfjs = { error: e instanceof Error ? e.message : String(e) };
    }
  }
  return report;
}

/** Splits the process's RSS into the wasm heap's touched pages, the V8 heap and the rest. */
export function rssBreakdown(backend: Backend): RssBreakdown {
  const mem = backend.memory(), usage = process.memoryUsage();
  const carved = mem.bytesCarved ?? 0;
  return {
    rssBytes: usage.rss,
    wasmCarvedBytes: carved,
    wasmReservedBytes: mem.bytesReserved,
    peakLiveBytes: mem.peakBytesInUse ?? 0,
    v8HeapTotalBytes: usage.heapTotal,
    externalBytes: usage.external,
    otherBytes: Math.max(0, usage.rss - carved - usage.heapTotal - usage.external),
  };
}

/** The anchor's step in tfjs-core: one-hot embedding (tfjs-wasm has no gather gradient), Adam. */
async function tfjsTrain(shape: TrainShape, steps: number): Promise<TfjsTrainResult> {
  const { tf, info } = await loadTfjsWasm();
  await loadTfjsGradients();
  const { vocab: V, d: D, layers: L, heads: H, ffn: F, seq: T, batch: B } = shape;
  const hd = D / H;
  type T_ = ReturnType<Tf['tensor']>;
  const rnd = (s: number[], sc = 0.02) => tf.variable(tf.randomNormal(s, 0, sc));
  const ones = (n: number) => tf.variable(tf.ones([n]));
  const zeros = (n: number) => tf.variable(tf.zeros([n]));
  const P = {
    wte: rnd([V, D]), wpe: rnd([T, D]), lnfG: ones(D), lnfB: zeros(D),
    layers: Array.from({ length: L }, () => ({
      ln1g: ones(D), ln1b: zeros(D), wqkv: rnd([D, 3 * D]), wo: rnd([D, D]), ln2g: ones(D), ln2b: zeros(D), w1: rnd([D, F]), w2: rnd([F, D]),
    })),
  };
  const ln = (x: T_, g: T_, b: T_): T_ => {
    const m = tf.mean(x, -1, true);
    const c = tf.sub(x, m);
    const v = tf.mean(tf.square(c), -1, true);
    return tf.add(tf.mul(tf.div(c, tf.sqrt(tf.add(v, 1e-5))), g), b);
  };
  const gelu = (x: T_): T_ => tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI))), 1));
  const mask = tf.mul(tf.sub(tf.linalg.bandPart(tf.ones([T, T]), -1, 0), 1), 1e9);
  const ids = tf.tensor1d(randomIds(B * T, V, 1), 'int32'), tgt = tf.tensor1d(randomIds(B * T, V, 2), 'int32');
  const loss = () => {
    let x: T_ = tf.add(tf.reshape(tf.matMul(tf.oneHot(ids, V), P.wte), [B, T, D]), P.wpe);
    for (const l of P.layers) {
      const h = tf.reshape(ln(x, l.ln1g, l.ln1b), [B * T, D]);
      const qkv = tf.transpose(tf.reshape(tf.matMul(h, l.wqkv), [B, T, 3, H, hd]), [2, 0, 3, 1, 4]);
      const [q, k, v] = tf.unstack(qkv);
      const att = tf.softmax(tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(hd)), mask));
      const a = tf.reshape(tf.transpose(tf.matMul(att, v), [0, 2, 1, 3]), [B * T, D]);
      x = tf.add(x, tf.reshape(tf.matMul(a, l.wo), [B, T, D]));
      const h2 = tf.reshape(ln(x, l.ln2g, l.ln2b), [B * T, D]);
      x = tf.add(x, tf.reshape(tf.matMul(gelu(tf.matMul(h2, l.w1)), l.w2), [B, T, D]));
    }
    const logits = tf.matMul(tf.reshape(ln(x, P.lnfG, P.lnfB), [B * T, D]), P.wte, false, true);
    return tf.losses.softmaxCrossEntropy(tf.oneHot(tgt, V), logits) as ReturnType<Tf['scalar']>;
  };
  const vars = [P.wte, P.wpe, P.lnfG, P.lnfB, ...P.layers.flatMap((l) => Object.values(l))];
  const opt = tf.train.adam(3e-4);
  const times: number[] = [];
  let firstStepMs = 0;
  try {
    for (let s = 0; s <= steps; s++) {
      const t = performance.now();
      const l = opt.minimize(loss, true, vars);
      l?.dataSync();
      l?.dispose();
      const dt = performance.now() - t;
      if (s === 0) firstStepMs = dt;
      else times.push(dt);
    }
  } finally {
    opt.dispose();
    tf.dispose([...vars, mask, ids, tgt]);
  }
  const med = median(times);
  return { info, medianStepMs: round(med, 1), tokensPerS: Math.round((B * T * 1000) / med), firstStepMs: round(firstStepMs, 1) };
}
