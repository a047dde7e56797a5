// Backends own storage and kernels. Ops (ops/*.ts) never touch memory directly: they call the
// kernels registered for the tensor's backend. Adding a backend is adding a Backend object
// plus a kernel table; adding an op is adding a kernel to each table (or composing existing ops).

import { RrtError } from './errors.js';

/** A block of float32 values owned by one backend. */
export interface Storage {
  readonly backend: Backend;
  /** Number of float32 elements. */
  readonly size: number;
}

/** Storage that lives in memory the CPU can address directly (ref: JS heap, cpu: wasm heap). */
export interface HostStorage extends Storage {
  /** A view of exactly `size` elements. For the cpu backend it views wasm memory. */
  readonly data: Float32Array;
  /** Byte offset in the wasm heap (cpu backend) or -1 (ref backend). */
  readonly ptr: number;
}

export interface BackendInfo {
  name: string;
  /** Free-form facts: threads, SIMD, gpu.js mode, ... */
  details: Record<string, string | number | boolean>;
}

export interface MemoryInfo {
  /** Live storages allocated by this backend. */
  storages: number;
  /** Bytes held by live storages. */
  bytesInUse: number;
  /** Bytes reserved from the system (the wasm heap size for cpu). */
  bytesReserved: number;
  /** Most bytes held by live storages at once since the backend started (where tracked). */
  peakBytesInUse?: number;
  /**
   * Bytes of the reserved heap ever handed out (cpu: live plus free-listed blocks). Pages past
   * this were never touched, so this, not bytesReserved, is what the heap adds to RSS.
   */
  bytesCarved?: number;
}

export interface Backend {
  readonly name: string;
  /** Uninitialised storage of `size` floats (zero-size storages are allowed). */
  alloc(size: number): Storage;
  /** Storage holding a copy of `values`. */
  upload(values: Float32Array): Storage;
  /** A host copy of the values. */
  read(storage: Storage): Float32Array;
  free(storage: Storage): void;
  info(): BackendInfo;
  memory(): MemoryInfo;
  readonly kernels: Kernels;
  /**
   * Optional (serving): keeps a Linear weight w, stored [n, k] and read as B^T, in the form the
   * matmul kernel packs B into, so later products with it skip that work. Counted: every pack
   * needs a releaseWeight. A kernel that writes w (or freeing it) drops the packed form, and
   * products read w itself again; writes through a HostStorage's data are not seen, so release
   * before writing that way. Returns false where nothing is kept (a backend without packed forms,
   * or no memory left for the copy).
   */
  packWeight?(w: Storage, n: number, k: number): boolean;
  releaseWeight?(w: Storage): void;
}

export type UnaryOp =
  | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'abs' | 'tanh' | 'sigmoid' | 'relu'
  | 'gelu' | 'gelu_tanh' | 'silu' | 'square' | 'sign' | 'recip';

export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'maximum' | 'minimum' | 'eq' | 'gt' | 'pow';

/** Shapes of a batched matmul, all contiguous row-major. Offsets and strides are in elements. */
export interface MatmulSpec {
  batch: number;
  m: number;
  k: number;
  n: number;
  /** a is stored [m, k] (or [k, m] when transA). */
  transA: boolean;
  /** b is stored [k, n] (or [n, k] when transB). */
  transB: boolean;
  /** Element offset of batch i in a is aBatchOffsets[i] (broadcast batches repeat offsets). */
  aBatchOffsets: Int32Array;
  bBatchOffsets: Int32Array;
  /** When true, out += a @ b instead of out = a @ b. */
  accumulate: boolean;
}

/**
 * Every kernel a backend provides. Shapes are plain number arrays; storages are contiguous.
 * Integer inputs (token ids, targets) are host Int32Arrays.
 */
export interface Kernels {
  fill(out: Storage, value: number): void;
  copy(src: Storage, out: Storage): void;
  /** out[i] = f(x[i]). */
  unary(op: UnaryOp, x: Storage, out: Storage): void;
  /** dx[i] = dy[i] * f'(x[i]); y = f(x) is passed for ops whose derivative uses it. */
  unaryGrad(op: UnaryOp, x: Storage, y: Storage, dy: Storage, dx: Storage): void;
  /** out = a op b with numpy broadcasting; shapes are already broadcast-compatible and of equal rank. */
  binary(op: BinaryOp, a: Storage, aShape: number[], b: Storage, bShape: number[], out: Storage, outShape: number[]): void;
  /** out = x * scale + shift, elementwise. */
  affine(x: Storage, scale: number, shift: number, out: Storage): void;
  /** out = x ** p for a scalar p. */
  powScalar(x: Storage, p: number, out: Storage): void;
  /** out = min(max(x, lo), hi). */
  clamp(x: Storage, lo: number, hi: number, out: Storage): void;
  /** out = cond != 0 ? a : b, broadcasting as binary. */
  where(cond: Storage, cShape: number[], a: Storage, aShape: number[], b: Storage, bShape: number[], out: Storage, outShape: number[]): void;
  matmul(a: Storage, b: Storage, out: Storage, spec: MatmulSpec): void;
  /** x viewed as [outer, r, inner]; out is [outer, inner]. argmax writes the index as a float. */
  reduce(op: 'sum' | 'max' | 'argmax', x: Storage, outer: number, r: number, inner: number, out: Storage): void;
  /** Row-wise (log-)softmax of x viewed as [rows, cols]. */
  softmax(x: Storage, rows: number, cols: number, log: boolean, out: Storage): void;
  /**
   * Optional fused kernel: out = softmax(scale * x + causal mask) row-wise over x viewed as
   * [rows, cols], where row r is query position t = r % period and sees columns c <= offset + t
   * (the rest get probability 0). Backends without it run the composite ops.
   */
  causalSoftmax?(x: Storage, rows: number, cols: number, scale: number, period: number, offset: number, out: Storage): void;
  /** dx from y = (log)softmax(x) and dy. */
  softmaxGrad(y: Storage, dy: Storage, rows: number, cols: number, log: boolean, dx: Storage): void;
  /** LayerNorm over the last axis; writes mean and rstd ([rows]) for the backward pass. */
  layerNorm(x: Storage, w: Storage | null, b: Storage | null, rows: number, cols: number, eps: number, out: Storage, mean: Storage, rstd: Storage): void;
  /** dx, and dw/db accumulated (+=) when given. */
  layerNormGrad(x: Storage, w: Storage | null, mean: Storage, rstd: Storage, dy: Storage, rows: number, cols: number, dx: Storage, dw: Storage | null, db: Storage | null): void;
  /** RMSNorm over the last axis: y = x * rstd * (w or 1 + w when addOne). */
  rmsNorm(x: Storage, w: Storage | null, rows: number, cols: number, eps: number, addOne: boolean, out: Storage, rstd: Storage): void;
  rmsNormGrad(x: Storage, w: Storage | null, rstd: Storage, dy: Storage, rows: number, cols: number, addOne: boolean, dx: Storage, dw: Storage | null): void;
  /**
   * Per-row cross-entropy of logits [rows, V] against integer targets. Rows whose target equals
   * ignoreIndex get loss 0. Writes per-row loss and log-sum-exp.
   */
  crossEntropy(logits: Storage, targets: Int32Array, rows: number, vocab: number, ignoreIndex: number, loss: Storage, lse: Storage): void;
  /** dlogits = dloss[row] * (softmax - onehot); ignored rows get 0. */
  crossEntropyGrad(logits: Storage, targets: Int32Array, lse: Storage, dloss: Storage, rows: number, vocab: number, ignoreIndex: number, dlogits: Storage): void;
  /** out[i, :] = table[ids[i], :]. */
  gather(table: Storage, ids: Int32Array, cols: number, out: Storage): void;
  /** dtable[ids[i], :] += dy[i, :]. */
  scatterAdd(dy: Storage, ids: Int32Array, cols: number, dtable: Storage): void;
  /** out = x permuted (numpy transpose with axes perm). */
  permute(x: Storage, shape: number[], perm: number[], out: Storage): void;
  /**
   * Copies the block `region` starting at srcStart in src (shape srcShape) to dstStart in dst
   * (shape dstShape). Slice, pad, concat and split are all this kernel.
   */
  copyRegion(src: Storage, srcShape: number[], srcStart: number[], dst: Storage, dstShape: number[], dstStart: number[], region: number[], accumulate: boolean): void;
  /**
   * Optional: for every run j, copies `blocks` blocks of `length` elements, block b from src[j]
   * at element srcOffsets[j] + b * srcStrides[j] to dst[j] at dstOffsets[j] + b * dstStrides[j]
   * (many small strided copies, such as the cache entries of a serving step, one entry per run,
   * in one call). Backends without it run copyRegion per run.
   */
  copyRuns?(
    src: Storage[], srcOffsets: Int32Array, srcStrides: Int32Array, dst: Storage[], dstOffsets: Int32Array, dstStrides: Int32Array,
    length: number, blocks: number,
  ): void;
  /**
   * Optional fused kernel: attention of S query tokens over many key/value caches in one call
   * (serving). q, out: [S, heads, headDim]. The tokens come in segments, in order: segment i has
   * lens[i] tokens and reads kCaches[i], vCaches[i] ([kvHeads, capacities[i], headDim]); its token
   * t sits at position starts[i] + t and sees cached positions 0..starts[i] + t (its own entries
   * are written before the call). Query head h reads KV head floor(h / (heads / kvHeads)); scores
   * are scaled by `scale` before the softmax. Backends without it run cachedAttention per segment.
   */
  attendCaches?(
    q: Storage, kCaches: Storage[], vCaches: Storage[], capacities: Int32Array, starts: Int32Array, lens: Int32Array,
    heads: number, kvHeads: number, headDim: number, scale: number, out: Storage,
  ): void;
  /**
   * Optional: a Linear product whose rows fall into consecutive groups, each with its own
   * weight: group g takes the rows[g] rows of x [sum rows, k] that follow the earlier groups'
   * and writes the same rows of out [sum rows, n] as x_g W_g^T, weights[g] stored [n, k] (rows
   * of a serving call at several depths, one merged weight per depth, in one call). Backends
   * without it run one matmul per group.
   */
  linearGroups?(x: Storage, weights: Storage[], rows: Int32Array, k: number, n: number, out: Storage): void;
  /** One AdamW step in place on p, m, v. */
  adamw(p: Storage, g: Storage, m: Storage, v: Storage, o: AdamWStep): void;
  /** Sum of squares of all elements (for gradient clipping), accumulated in float64 where possible. */
  sumSquares(x: Storage): number;
}

export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1 - beta1^t and 1 - beta2^t. */
  biasCorrection1: number;
  biasCorrection2: number;
  /** Gradient multiplier (clipping scale). */
  gradScale: number;
}

const registry = new Map<string, () => Backend>();
const instances = new Map<string, Backend>();
let active: Backend | null = null;

/** Registers a backend factory under a name; the factory runs on first use. */
export function registerBackend(name: string, factory: () => Backend): void {
  registry.set(name, factory);
}

/** Names of the registered backends. */
export function listBackends(): string[] {
  return [...registry.keys()];
}

/** The backend instance of that name, created on first use. */
export function backendByName(name: string): Backend {
  let b = instances.get(name);
  if (b) return b;
  const factory = registry.get(name);
  if (!factory) throw new RrtError(`unknown backend "${name}"; registered backends: ${listBackends().join(', ')}`);
  b = factory();
  instances.set(name, b);
  return b;
}

/** Makes `name` the backend new tensors are created on. */
export function setBackend(name: string): Backend {
  active = backendByName(name);
  return active;
}

/** The active backend: the one set by setBackend, else $RRT_BACKEND, else cpu. */
export function getBackend(): Backend {
  if (active) return active;
  const env = typeof process !== 'undefined' ? process.env?.RRT_BACKEND : undefined;
  active = backendByName(env && env.length > 0 ? env : 'cpu');
  return active;
}
