// The `cpu` backend: storage on one shared WebAssembly.Memory, kernels in WebAssembly SIMD
// (AssemblyScript, see packages/tensor/assembly), large matmuls split across worker threads.

import { availableParallelism, cpus } from 'node:os';
import type { Backend, BackendInfo, HostStorage, Kernels, MemoryInfo, Storage } from '../../backend.js';
import { RrtError } from '../../errors.js';
import { WasmHeap } from './heap.js';
import { createWasmKernels, POOL_FUNCTIONS } from './kernels.js';
import { AttendRunner } from './attend.js';
import { MatmulRunner } from './matmul.js';
import { WeightPacks } from './packs.js';
import { SLOT_WORDS, ThreadPool } from './pool.js';
import { instantiate, loadKernelModule, MAX_PAGES, WA, type FmaMode, type KernelExports } from './wasm.js';

export { MATMUL_PARALLEL_MIN, MATMUL_SMALL_M, MATMUL_SMALL_PARALLEL_MIN } from './matmul.js';
export { sizeClass, classBytes } from './heap.js';

const MAX_THREADS = 8;
const INITIAL_PAGES = 256; // 16 MiB

export interface CpuBackendOptions {
  /** Threads for large matmuls, the calling one included (default: $RRT_THREADS, else the core count, at most 8). */
  threads?: number;
}

/** The cpu backend, plus what tools and benchmarks may want to see. */
export interface CpuBackend extends Backend {
  /** Threads large matmuls may use (the calling thread included). */
  readonly threads: number;
  /** Whether multiply-add is fused (relaxed SIMD), and how it was enabled. */
  readonly fma: FmaMode;
  /** Resolves once the worker threads can take jobs (they start on the first large matmul). */
  whenThreadsReady(timeoutMs?: number): Promise<number>;
  /** Stops the worker threads (they never keep a process alive; this frees them early). */
  close(): void;
}

class CpuStorage implements HostStorage {
  private view: Float32Array | null = null;
  live = true;
  constructor(
    readonly backend: Backend,
    readonly size: number,
    readonly ptr: number,
    readonly cls: number,
    private readonly heap: WasmHeap,
  ) {}

  /** A view of the storage; views stay valid when memory grows (the buffer is shared). */
  get data(): Float32Array {
    return (this.view ??= new Float32Array(this.heap.buffer, this.ptr, this.size));
  }
}

function defaultThreads(): number {
  const env = typeof process !== 'undefined' ? process.env?.RRT_THREADS : undefined;
  if (env !== undefined && env !== '') {
    const t = Number(env);
    if (!Number.isInteger(t) || t < 1) throw new RrtError(`RRT_THREADS must be a positive integer, got "${env}"`);
    return t;
  }
  const cores = typeof availableParallelism === 'function' ? availableParallelism() : cpus().length;
  return Math.max(1, Math.min(MAX_THREADS, cores));
}

/** Creates a cpu backend with its own wasm memory and (lazily started) worker threads. */
export function createCpuBackend(options: CpuBackendOptions = {}): CpuBackend {
  const threads = options.threads ?? defaultThreads();
  if (!Number.isInteger(threads) || threads < 1) throw new RrtError(`cpu backend: threads must be a positive integer, got ${threads}`);
  const { module, fma } = loadKernelModule();
  const memory = new WA.Memory({ initial: INITIAL_PAGES, maximum: MAX_PAGES, shared: true });
  const ex: KernelExports = instantiate(module, memory);
  const heap = new WasmHeap(memory, ex.heapBase());
  const zero = new Float32Array(0);

  let scratchPtr = 0, scratchBytes = 0, scratchClass = 0;
  function scratch(bytes: number): number {
    if (bytes > scratchBytes) {
      if (scratchBytes > 0) heap.free(scratchPtr, scratchClass);
      const want = Math.max(bytes, 4096, scratchBytes * 2);
      scratchPtr = heap.alloc(want);
      scratchClass = heap.lastClass;
      scratchBytes = want;
    }
    return scratchPtr;
  }

  let pool: ThreadPool | null = null;
  let poolError: string | null = null;
  function getPool(start = true): ThreadPool | null {
    if (threads <= 1 || poolError !== null) return null;
    if (!pool && start) {
      const ctrl = heap.alloc((threads - 1) * SLOT_WORDS * 4), ctrlClass = heap.lastClass;
      try {
        pool = new ThreadPool(module, memory, threads - 1, ctrl, POOL_FUNCTIONS);
      } catch (e) {
        // No worker threads here: run single-threaded (info() says why).
        poolError = e instanceof Error ? e.message : String(e);
        heap.free(ctrl, ctrlClass);
      }
    }
    return pool;
  }

  const matmul = new MatmulRunner(ex, heap, threads, getPool, scratch);
  const attend = new AttendRunner(ex, heap, getPool, scratch);
  const packs = new WeightPacks(ex, heap);
  const kernels: Kernels = createWasmKernels({ ex, heap, scratch, matmul, attend, packs });
  let live = 0;
  let bytes = 0;
  let peakBytes = 0;

  function alloc(size: number): CpuStorage {
    if (!Number.isInteger(size) || size < 0) throw new RrtError(`cpu backend: storage size must be a non-negative integer, got ${size}`);
    if (size * 4 > 2 ** 32 - 64) throw new RrtError(`cpu backend: a storage of ${size} floats exceeds the 4 GiB wasm32 memory`);
    live++;
    bytes += size * 4;
    if (bytes > peakBytes) peakBytes = bytes;
    if (size === 0) return new CpuStorage(backend, 0, 0, -1, heap);
    const p = heap.alloc(size * 4);
    return new CpuStorage(backend, size, p, heap.lastClass, heap);
  }

  const backend: CpuBackend = {
    name: 'cpu',
    kernels,
    threads,
    fma,
    alloc,
    upload(values: Float32Array): Storage {
      const s = alloc(values.length);
      if (values.length > 0) heap.f32.set(values, s.ptr >>> 2);
      return s;
    },
    read(storage: Storage): Float32Array {
      const s = storage as CpuStorage;
      if (!s.live) throw new RrtError('cpu backend: read of a freed storage');
      if (s.size === 0) return zero.slice();
      const i = s.ptr >>> 2;
      return heap.f32.slice(i, i + s.size);
    },
    free(storage: Storage): void {
      const s = storage as CpuStorage;
      if (s.backend !== backend) throw new RrtError(`cpu backend: cannot free a storage of backend "${s.backend.name}"`);
      if (!s.live) throw new RrtError('cpu backend: storage freed twice');
      packs.written(s);
      s.live = false;
      live--;
      bytes -= s.size * 4;
      if (s.cls >= 0) heap.free(s.ptr, s.cls);
    },
    packWeight(w: Storage, n: number, k: number): boolean {
      const s = w as CpuStorage;
      if (s.backend !== backend || !s.live) throw new RrtError('cpu backend: packWeight takes a live storage of this backend');
      return packs.pack(s, n, k);
    },
    releaseWeight(w: Storage): void {
      packs.release(w);
    },
    info(): BackendInfo {
      return {
        name: 'cpu',
        details: {
          threads,
          workersReady: pool ? pool.ready() : 0,
          ...(poolError !== null ? { threadsError: poolError } : {}),
          parallelMatmuls: matmul.parallelJobs,
          workerChunks: matmul.workerChunks,
          parallelAttends: attend.parallelJobs,
          workerSegments: attend.workerSegments,
          smallMatmuls: matmul.smallJobs,
          packedMatmuls: matmul.packedJobs,
          packedWeights: packs.count,
          packedWeightBytes: packs.bytes,
          simd: true,
          fma,
          memory: 'wasm-shared',
        },
      };
    },
    memory(): MemoryInfo {
      return { storages: live, bytesInUse: bytes, bytesReserved: heap.limit, peakBytesInUse: peakBytes, bytesCarved: heap.bytesCarved };
    },
    async whenThreadsReady(timeoutMs = 10_000): Promise<number> {
      const p = getPool();
      if (!p) return 0;
      const end = Date.now() + timeoutMs;
      while (p.ready() < threads - 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 2));
      return p.ready();
    },
    close(): void {
      pool?.close();
      pool = null;
    },
  };
  return backend;
}
