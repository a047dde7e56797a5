// The gpu backend's device thread in a browser. The same device-thread program as in Node
// (worker-source.ts) runs in a Web Worker, with gpu.js's browser build loaded by importScripts
// and a small prelude that gives it what it expects from Node (require, workerData, parentPort,
// process). The thread that owns the backend posts commands and blocks on Atomics.wait only
// for reads, exactly as in Node; a page's main thread may not block, so the backend runs in a
// Web Worker of the page (see examples/web), and the page must be cross-origin isolated for
// SharedArrayBuffer. Modes, best first: WebGPU (navigator.gpu), WebGL2 (OffscreenCanvas), gpu.js's
// WebAssembly mode, its CPU mode.

import type { Backend } from '../../backend.js';
import { RrtError } from '../../errors.js';
import { CTL, CTL_BYTES, CTL_F64, CTL_INTS, CTL_TEXT_OFFSET, WORKER_SOURCE } from './worker-source.js';

/** gpu.js modes a browser offers, best first. */
export const BROWSER_GPU_MODES = ['webgpu', 'webgl2', 'webasm', 'cpu'] as const;
export type BrowserGpuMode = (typeof BROWSER_GPU_MODES)[number];

/** What the device thread found when it started. */
export interface BrowserDeviceInit {
  mode: BrowserGpuMode;
  skipped: Partial<Record<BrowserGpuMode, string>>;
  details: { adapter?: string; maxBufferBytes?: number };
}

/** Memory as the device thread sees it (same fields as the Node device's DeviceMemory). */
export interface BrowserDeviceMemory {
  handles: number;
  handleBytes: number;
  buffers: number;
  bufferBytes: number;
  kernels: number;
}

/** A storage of the browser gpu backend: an id of a handle the device thread holds. */
export class BrowserGpuStorage {
  /** True once a kernel or an upload wrote it (unwritten storages hold no device data). */
  written = false;
  live = true;
  constructor(readonly backend: Backend, readonly size: number, readonly id: number) {}
}

interface KernelRef {
  readonly id: number;
  readonly key: string;
  readonly source: string;
  readonly threads: number[];
  readonly vec4: boolean;
  defined: boolean;
}

interface KernelSpec {
  source: string;
  output: number;
  threads?: number[];
  vec4?: boolean;
}

// The few browser APIs used here (the project's TypeScript lib has no DOM).
interface WebWorker {
  postMessage(message: unknown): void;
  terminate(): void;
  onerror: ((e: { message?: string }) => void) | null;
}
interface BrowserGlobals {
  Worker?: new (url: string) => WebWorker;
  Blob: new (parts: string[], opts: { type: string }) => object;
  URL: { createObjectURL(blob: object): string; revokeObjectURL(url: string): void };
  document?: unknown;
  location?: { href: string };
  crossOriginIsolated?: boolean;
}

const FLUSH_COMMANDS = 256;
const FLUSH_BYTES = 32 << 20;
/** Stands for gpu.js's package folder in the device program's require() calls. */
const GPUJS_ID = 'gpu.js';

// Runs the Node device program in a Web Worker: the first message carries workerData.
const PRELUDE = String.raw`
'use strict';
self.onmessage = function (first) {
  self.onmessage = null;
  const data = first.data;
  let loadError = null;
  try { importScripts(data.gpujsUrl); } catch (e) { loadError = e && e.message ? e.message : String(e); }
  const parentPort = {
    on(type, fn) { if (type === 'message') self.addEventListener('message', (e) => fn(e.data)); },
  };
  const shimProcess = {
    env: {},
    on(type, fn) {
      if (type === 'uncaughtException') self.addEventListener('error', (e) => fn(e.error || e.message));
      else if (type === 'unhandledRejection') self.addEventListener('unhandledrejection', (e) => fn(e.reason));
    },
  };
  const shimRequire = (id) => {
    if (id === 'node:worker_threads') return { parentPort, workerData: data };
    const G = self.GPU;
    if (!G) throw new Error('gpu.js did not load from ' + data.gpujsUrl + (loadError ? ': ' + loadError : ''));
    if (id === data.gpujsDir) return { GPU: G };
    if (id === data.gpujsDir + '/src/backend/web-gpu/context.js') return { WebGPUContext: G.WebGPUContext };
    if (id === data.gpujsDir + '/src/backend/web-gpu/buffer-result.js') return { WebGPUBufferResult: G.WebGPUBufferResult };
    throw new Error('module ' + id + ' is not available in a browser worker');
  };
  shimRequire.cache = {};
  (function (require, process) {
${WORKER_SOURCE}
  })(shimRequire, shimProcess);
};
`;

export interface BrowserDeviceOptions {
  /** URL of gpu.js's browser build (gpu.js/dist/gpu-browser.min.js), served by the page. */
  gpujsUrl: string;
  /** Force a mode (default: the best that runs). */
  mode?: BrowserGpuMode;
  /** How long a read may wait for the device, ms. */
  timeoutMs: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The browser twin of the Node GpuDevice (device.ts): same commands, same control block. */
export class BrowserGpuDevice {
  private users = 1;
  private pending: unknown[][] = [];
  private pendingBytes = 0;
  private seq = 1;
  private nextId = 1;
  private nextKernel = 1;
  private readonly kernelsByKey = new Map<string, KernelRef>();
  private readSab = new SharedArrayBuffer(1 << 16);
  /** Debug counters: kernel runs, uploads and reads posted, and milliseconds spent waiting. */
  readonly stats = { runs: 0, uploads: 0, reads: 0, waitMs: 0 };
  private closed = false;

  private constructor(
    readonly init: BrowserDeviceInit,
    private readonly worker: WebWorker,
    private readonly ctl: Int32Array,
    private readonly ctl64: Float64Array,
    private readonly text: Uint8Array,
    private readonly timeoutMs: number,
  ) {}

  /**
   * Starts a device thread and waits (without blocking) until gpu.js has picked a mode. Throws a
   * RrtError saying what to change when this context cannot host it.
   */
  static async start(opts: BrowserDeviceOptions): Promise<BrowserGpuDevice> {
    const g = globalThis as unknown as BrowserGlobals;
    if (typeof SharedArrayBuffer === 'undefined' || g.crossOriginIsolated === false) {
      throw new RrtError(
        'gpu backend (browser): SharedArrayBuffer is unavailable; serve the page cross-origin isolated (headers Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)',
      );
    }
    if (g.document !== undefined) {
      throw new RrtError(
        "gpu backend (browser): created on a page's main thread, which may not block on Atomics.wait; create it in a Web Worker (reads of gpu tensors are synchronous)",
      );
    }
    if (!g.Worker) throw new RrtError('gpu backend (browser): this context cannot start a Web Worker (nested workers are needed)');
    const ctlBuffer = new SharedArrayBuffer(CTL_BYTES);
    const ctl = new Int32Array(ctlBuffer, 0, CTL_INTS);
    const ctl64 = new Float64Array(ctlBuffer, CTL_INTS * 4, 2);
    const text = new Uint8Array(ctlBuffer, CTL_TEXT_OFFSET);
    const url = g.URL.createObjectURL(new g.Blob([PRELUDE], { type: 'text/javascript' }));
    const worker = new g.Worker(url);
    let failed: string | null = null;
    worker.onerror = (e) => {
      failed = e.message ?? 'the device worker failed to start';
    };
    const gpujsUrl = new URL(opts.gpujsUrl, g.location?.href).href;
    worker.postMessage({
      gpujsUrl, gpujsDir: GPUJS_ID, dawnPath: null, forcedMode: opts.mode ?? null, skip: {}, ctlBuffer, modes: [...BROWSER_GPU_MODES], browser: true,
    });
    const end = Date.now() + Math.min(opts.timeoutMs, 120_000);
    // The worker starts only once this thread yields, so wait asynchronously here.
    while (Atomics.load(ctl, CTL.done) < 1) {
      if (failed !== null || Date.now() > end) {
        worker.terminate();
        g.URL.revokeObjectURL(url);
        throw new RrtError(`gpu backend (browser): the device worker ${failed !== null ? `failed: ${failed}` : 'did not start in time'}`);
      }
      await sleep(10);
    }
    g.URL.revokeObjectURL(url);
    const message = new TextDecoder().decode(text.slice(0, ctl[CTL.textLength]));
    if (ctl[CTL.status] === 1) {
      worker.terminate();
      throw new RrtError(opts.mode ? `gpu backend (browser): gpu.js mode "${opts.mode}" cannot run here: ${message}` : `gpu backend (browser): no gpu.js mode runs here: ${message}`);
    }
    return new BrowserGpuDevice(JSON.parse(message) as BrowserDeviceInit, worker, ctl, ctl64, text, opts.timeoutMs);
  }

  /** Kernels defined so far (each is compiled once, on its first run). */
  get kernelCount(): number {
    return this.kernelsByKey.size;
  }

  newId(): number {
    return this.nextId++;
  }

  /** The kernel cached under key, defined by make() on first use. */
  kernel(key: string, make: () => KernelSpec): KernelRef {
    let k = this.kernelsByKey.get(key);
    if (!k) {
      const spec = make();
      const vec4 = spec.vec4 ?? false;
      const threads = spec.threads ?? [vec4 ? spec.output / 4 : spec.output];
      k = { id: this.nextKernel++, key, source: spec.source, threads, vec4, defined: false };
      this.kernelsByKey.set(key, k);
    }
    return k;
  }

  /** Runs k; its result replaces out's data (out may also be an input). */
  run(k: KernelRef, out: BrowserGpuStorage, args: (BrowserGpuStorage | number)[]): void {
    if (!k.defined) {
      this.post(['def', k.id, k.key, k.source, k.threads, k.vec4]);
      k.defined = true;
    }
    const kinds = new Array<number>(args.length);
    const values = new Array<number>(args.length);
    for (let i = 0; i < args.length; i++) {
      const a = args[i]!;
      if (typeof a === 'number') {
        kinds[i] = 0;
        values[i] = a;
      } else {
        if (!a.live) throw new RrtError(`gpu backend: kernel ${k.key} was given a freed storage`);
        if (!a.written) throw new RrtError(`gpu backend: kernel ${k.key} reads storage #${a.id}, which no kernel has written`);
        kinds[i] = 1;
        values[i] = a.id;
      }
    }
    this.post(['run', k.id, out.id, kinds, ...values]);
    this.stats.runs++;
    out.written = true;
  }

  upload(s: BrowserGpuStorage, values: Float32Array): void {
    this.post(['up', s.id, values.slice()]);
    this.stats.uploads++;
    this.pendingBytes += values.byteLength;
    s.written = true;
  }

  free(s: BrowserGpuStorage): void {
    if (s.written && !this.closed) this.post(['free', s.id]);
  }

  /** A host copy of s (blocks until the device has run everything queued before). */
  read(s: BrowserGpuStorage): Float32Array {
    const bytes = s.size * 4;
    if (this.readSab.byteLength < bytes) this.readSab = new SharedArrayBuffer(Math.max(bytes, this.readSab.byteLength * 2));
    const seq = ++this.seq;
    this.post(['read', s.id, this.readSab, seq]);
    this.stats.reads++;
    this.check(this.wait(seq, 'reading a storage'));
    return new Float32Array(this.readSab, 0, s.size).slice();
  }

  /** Waits until the device has finished every queued command; throws the first error one raised. */
  sync(): void {
    const seq = ++this.seq;
    this.post(['sync', seq]);
    this.check(this.wait(seq, 'sync'));
  }

  memory(): BrowserDeviceMemory {
    return {
      handles: this.ctl[CTL.handles]!,
      handleBytes: this.ctl64[CTL_F64.handleBytes]!,
      buffers: this.ctl[CTL.buffers]!,
      bufferBytes: this.ctl64[CTL_F64.bufferBytes]!,
      kernels: this.ctl[CTL.kernels]!,
    };
  }

  get isClosed(): boolean {
    return this.closed;
  }

  retain(): this {
    this.users++;
    return this;
  }

  close(): void {
    if (this.closed || --this.users > 0) return;
    this.shutdown();
  }

  /** Releases the device and stops the worker. */
  shutdown(): void {
    if (this.closed) return;
    this.pending = [];
    const seq = ++this.seq;
    this.post(['shutdown', seq]);
    try {
      this.wait(seq, 'shutdown', 10_000);
    } catch {
      // The worker is stopped below either way.
    }
    this.closed = true;
    this.worker.terminate();
  }

  private post(c: unknown[]): void {
    if (this.closed) throw new RrtError('gpu backend: used after close()');
    this.pending.push(c);
    if (this.pending.length >= FLUSH_COMMANDS || this.pendingBytes >= FLUSH_BYTES) this.flush();
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    this.worker.postMessage(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
  }

  private check(a: { error: string | null }): void {
    if (a.error) throw new RrtError(`gpu backend (${this.init.mode}): ${a.error}`);
  }

  private wait(seq: number, what: string, timeoutMs = this.timeoutMs): { error: string | null; text: string } {
    this.flush();
    const start = performance.now();
    const end = Date.now() + timeoutMs;
    for (;;) {
      const done = Atomics.load(this.ctl, CTL.done);
      if (done >= seq) break;
      if (Atomics.load(this.ctl, CTL.dead) === 1) {
        this.closed = true;
        throw new RrtError(`gpu backend: ${this.readText()}`);
      }
      const left = end - Date.now();
      if (left <= 0) throw new RrtError(`gpu backend: the device worker did not answer within ${timeoutMs} ms (${what}); pass a larger timeoutMs`);
      Atomics.wait(this.ctl, CTL.done, done, Math.min(left, 1000));
    }
    this.stats.waitMs += performance.now() - start;
    const error = this.ctl[CTL.status] === 1 ? this.readText() : null;
    return { error, text: error ? '' : this.readText() };
  }

  private readText(): string {
    const n = this.ctl[CTL.textLength]!;
    return new TextDecoder().decode(this.text.slice(0, n));
  }
}
