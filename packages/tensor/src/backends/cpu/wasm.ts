// Loads the kernel module. It is compiled once per process (synchronously: a small module)
// and instantiated per backend over that backend's shared memory.

import { setFlagsFromString } from 'node:v8';
import { KERNELS_WASM_RELAXED, KERNELS_WASM_SIMD } from './kernels.wasm.generated.js';

// Minimal WebAssembly typings: the project's TypeScript lib (ES2022, no DOM) has none.
export interface WasmMemory {
  readonly buffer: ArrayBufferLike;
  grow(deltaPages: number): number;
}
/** A compiled module (opaque; can be posted to workers). */
export interface WasmModule {
  readonly __wasmModule?: never;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: object) => { exports: unknown };
  Memory: new (desc: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
  validate(bytes: Uint8Array): boolean;
}
export const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** The module's exports; pointers are byte offsets, counts are floats. */
export interface KernelExports {
  heapBase(): number;
  matmulScratchHeader(): number;
  matmulMaxRows(): number;
  matmulMaxCols(): number;
  /** Runs chunks of the job record at `job` (see assembly/matmul.ts) until none are left. */
  matmulWork(job: number, scratch: number): number;
  /** Few-row batched matmul reading B in place (A not transposed); offsets are u32 element offsets. */
  matmulSmall(a: number, b: number, c: number, aOffs: number, bOffs: number, batch: number, m: number, n: number, k: number, transB: number, accumulate: number): void;
  /** Bytes matmulPackB writes for a k x n B. */
  matmulPackedBytes(n: number, k: number): number;
  /** Packs all of B (stored [k, n], or [n, k] when transB) for jobs that read it packed. */
  matmulPackB(b: number, n: number, k: number, transB: number, dst: number): void;
  binary(op: number, a: number, am: number, b: number, bm: number, out: number, rows: number, cols: number): void;
  unary(op: number, x: number, out: number, n: number): void;
  unaryGrad(op: number, x: number, y: number, dy: number, dx: number, n: number): void;
  affine(x: number, scale: number, shift: number, out: number, n: number): void;
  clamp(x: number, lo: number, hi: number, out: number, n: number): void;
  fill(out: number, value: number, n: number): void;
  copy(src: number, dst: number, n: number): void;
  softmax(x: number, rows: number, cols: number, log: number, out: number): void;
  causalSoftmax(x: number, rows: number, cols: number, scale: number, period: number, offset: number, out: number): void;
  softmaxGrad(y: number, dy: number, rows: number, cols: number, log: number, dx: number): void;
  layerNorm(x: number, w: number, b: number, rows: number, cols: number, eps: number, out: number, mean: number, rstd: number): void;
  layerNormGrad(x: number, w: number, mean: number, rstd: number, dy: number, rows: number, cols: number, dx: number, dw: number, db: number): void;
  rmsNorm(x: number, w: number, rows: number, cols: number, eps: number, addOne: number, out: number, rstd: number): void;
  rmsNormGrad(x: number, w: number, rstd: number, dy: number, rows: number, cols: number, addOne: number, dx: number, dw: number): void;
  crossEntropy(logits: number, targets: number, rows: number, vocab: number, ignoreIndex: number, loss: number, lse: number): void;
  crossEntropyGrad(logits: number, targets: number, lse: number, dloss: number, rows: number, vocab: number, ignoreIndex: number, dlogits: number): void;
  permute(x: number, out: number, rank: number, dims: number, strides: number, idx: number): void;
  copyRegion(src: number, dst: number, rank: number, dims: number, sStrides: number, dStrides: number, idx: number, accumulate: number): void;
  /** Takes segments of the attention job record at `job` (see assembly/attention.ts); returns how many. */
  attendWork(job: number, scores: number): number;
  /** table: n runs [src, dst, srcStride, dstStride] in bytes; `blocks` blocks of `bytes` bytes each. */
  copyRuns(table: number, n: number, bytes: number, blocks: number): void;
  gatherRows(table: number, ids: number, n: number, cols: number, out: number): void;
  scatterAddRows(dy: number, ids: number, n: number, cols: number, table: number): void;
  reduceSum(x: number, outer: number, r: number, inner: number, out: number, acc: number): void;
  sumSquares(x: number, n: number): number;
  adamw(
    p: number, g: number, m: number, v: number, n: number, lr: number, beta1: number, beta2: number, eps: number,
    weightDecay: number, bc1: number, bc2: number, gradScale: number,
  ): void;
}

/** How multiply-add runs: fused via relaxed SIMD (engine default or enabled by flag) or not. */
export type FmaMode = 'native' | 'flag' | 'off';

export interface LoadedModule {
  module: WasmModule;
  fma: FmaMode;
}

function decode(b64: string): Uint8Array {
  if (typeof Buffer !== 'undefined') return Buffer.from(b64, 'base64');
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

let loaded: LoadedModule | null = null;

/**
 * Picks the relaxed-SIMD build when the engine accepts it. Node 20 (V8 11.3) implements relaxed
 * SIMD behind a flag; we turn the flag on (fused multiply-add nearly doubles matmul throughput)
 * unless RRT_WASM_RELAXED=0.
 */
export function loadKernelModule(): LoadedModule {
  if (loaded) return loaded;
  const relaxed = decode(KERNELS_WASM_RELAXED);
  const env = typeof process !== 'undefined' ? process.env?.RRT_WASM_RELAXED : undefined;
  let fma: FmaMode = 'off';
  if (env !== '0') {
    if (WA.validate(relaxed)) fma = 'native';
    else {
      try {
        setFlagsFromString('--experimental-wasm-relaxed-simd');
        if (WA.validate(relaxed)) fma = 'flag';
      } catch {
        // not Node, or the flag is gone: the baseline build works everywhere
      }
    }
  }
  const bytes = fma === 'off' ? decode(KERNELS_WASM_SIMD) : relaxed;
  loaded = { module: new WA.Module(bytes), fma };
  return loaded;
}

/** Max pages of a wasm32 memory (4 GiB). */
export const MAX_PAGES = 65536;

export function instantiate(module: WasmModule, memory: WasmMemory): KernelExports {
  return new WA.Instance(module, { env: { memory } }).exports as unknown as KernelExports;
}
