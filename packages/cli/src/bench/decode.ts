// `rrt bench decode`: greedy generation with the KV cache on the reference model (the shapes of
// `rrt bench train`): a prompt prefilled in one forward pass, then one token per row per step.

import { getBackend, narrow, noGrad, startProfile, stopProfile, tidy } from '@rrt/tensor';
import { CausalLM, argmaxOf, type KVCache } from '@rrt/layers';
import { REFERENCE_SHAPE, benchConfig, randomIds, type KernelShare, type TrainShape } from './train.js';

export interface BenchDecodeOptions {
  /** Batch sizes (rows decoded together), default [1, 16]. */
  batches?: number[];
  /** Prompt tokens per row (default 64). */
  promptTokens?: number;
  /** New tokens per row (default 256). */
  newTokens?: number;
  /** Model sizes (batch and seq are not used); default REFERENCE_SHAPE. */
  shape?: TrainShape;
  /** Time every kernel call of the one-token steps and report each kernel's share (default false). */
  profile?: boolean;
}

export interface DecodeResult {
  batch: number;
  prefillMs: number;
  /** Milliseconds per decode step (one token for every row). */
  stepMs: number;
  /** New tokens of all rows per second, prefill included. */
  tokensPerS: number;
  /** New tokens per second over the one-token steps only. */
  decodeTokensPerS: number;
  /** With profile: per-kernel share of the one-token steps, slowest first; 'other' is time outside kernels. */
  profile?: KernelShare[];
}

export interface BenchDecodeReport {
  [key: string]: unknown;
  backend: string;
  details: Record<string, string | number | boolean>;
  shape: Omit<TrainShape, 'batch' | 'seq'>;
  /** The position table is sized prompt + new tokens (the training bench uses seq). */
  maxPositions: number;
  promptTokens: number;
  newTokens: number;
  runs: DecodeResult[];
  tfjs: { note: string };
}

const round = (x: number, digits = 2): number => Number(x.toFixed(digits));

/** Greedy next token of every row from logits [B, T, V]. */
function lastArgmax(logits: ReturnType<CausalLM['forward']>['logits'], B: number, T: number, V: number): number[] {
  const rows = narrow(logits, 1, T - 1, 1).dataSync();
  return Array.from({ length: B }, (_, b) => argmaxOf(rows.subarray(b * V, (b + 1) * V)));
}

/**
 * Prefill then newTokens - 1 one-token steps for B rows; returns [prefill ms, decode ms]. With
 * `profiled`, the kernels of the one-token steps are timed.
 */
function decodeRun(model: CausalLM, B: number, prompt: Int32Array, newTokens: number, profiled = false): [number, number] {
  const P = prompt.length / B, V = model.cfg.vocabSize;
  return noGrad(() => {
    const caches: KVCache[] = Array.from({ length: B }, () => model.newCache(P + newTokens));
    try {
      let t = performance.now();
      let next = tidy(() => lastArgmax(model.forward(prompt, [B, P], { caches }).logits, B, P, V));
      const prefillMs = performance.now() - t;
      if (profiled) startProfile(getBackend());
      t = performance.now();
      for (let i = 1; i < newTokens; i++) {
        const ids = next;
        next = tidy(() => lastArgmax(model.forward(ids, [B, 1], { caches }).logits, B, 1, V));
      }
      return [prefillMs, performance.now() - t];
    } finally {
      for (const c of caches) c.dispose();
    }
  });
}

export async function benchDecode(opts: BenchDecodeOptions = {}): Promise<BenchDecodeReport> {
  const shape = opts.shape ?? REFERENCE_SHAPE;
  const batches = opts.batches ?? [1, 16];
  const P = opts.promptTokens ?? 64, N = opts.newTokens ?? 256;
  const backend = getBackend() as ReturnType<typeof getBackend> & { whenThreadsReady?: (timeoutMs?: number) => Promise<number> };
  const model = new CausalLM(benchConfig(shape, P + N));
  model.train(false);
  const runs: DecodeResult[] = [];
  try {
    // Warm-up: tiers up the wasm code and starts the worker threads.
    const warmB = Math.max(...batches);
    decodeRun(model, warmB, randomIds(warmB * P, shape.vocab, 7), Math.min(N, 8));
    if (backend.whenThreadsReady) await backend.whenThreadsReady();
    for (const B of batches) {
      let timings: ReturnType<typeof stopProfile> = [];
      let prefillMs = 0, decodeMs = 0;
      try {
        [prefillMs, decodeMs] = decodeRun(model, B, randomIds(B * P, shape.vocab, 3), N, opts.profile === true);
      } finally {
        if (opts.profile) timings = stopProfile(backend);
      }
      const steps = Math.max(1, N - 1);
      const run: DecodeResult = {
        batch: B,
        prefillMs: round(prefillMs, 1),
        stepMs: round(decodeMs / steps, 3),
        tokensPerS: Math.round((B * N * 1000) / (prefillMs + decodeMs)),
        decodeTokensPerS: N > 1 ? Math.round((B * (N - 1) * 1000) / decodeMs) : 0,
      };
      if (opts.profile) {
        const inKernels = timings.reduce((a, k) => a + k.ms, 0);
        const rows = [...timings, { kernel: 'other', calls: 0, ms: Math.max(0, decodeMs - inKernels) }].sort((a, b) => b.ms - a.ms);
        run.profile = rows.map((k) => ({ kernel: k.kernel, calls: round(k.calls / steps, 1), ms: round(k.ms / steps, 3), fraction: round(k.ms / decodeMs, 4) }));
      }
      runs.push(run);
    }
  } finally {
    model.dispose();
  }
  const { batch: _b, seq: _s, ...sizes } = shape;
  return {
    backend: backend.name,
    details: backend.info().details,
    shape: sizes,
    maxPositions: P + N,
    promptTokens: P,
    newTokens: N,
    runs,
    tfjs: { note: 'not measured: tfjs-core has no KV-cache decoder; a fair comparison needs a cached-attention port' },
  };
}
