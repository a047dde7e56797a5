// The gpu backend's device thread in a browser. The same device-thread program as in Node
// (worker-source.ts) runs in a Web Worker, with gpu.js's browser build loaded by importScripts
// and a small prelude that gives it what it expects from Node (require, workerData, parentPort,
// process). The thread that owns the backend posts commands and blocks on Atomics.wait only
// for reads, exactly as in Node; a page's main thread may not block, so the backend runs in a
// Web Worker of the page (see examples/web), and the page must be cross-origin isolated for
// SharedArrayBuffer. Modes, best first: WebGPU (navigator.gpu), WebGL2 (OffscreenCanvas), gpu.js's
// WebAssembly mode, its CPU mode.

import { RrtError } from '../../errors.js';
import { GpuDeviceCore, controlText, createControl, type DeviceMemory } from './device-core.js';
import { CTL, WORKER_SOURCE, startStepText } from './worker-source.js';

/** gpu.js modes a browser offers, best first. */
export const BROWSER_GPU_MODES = ['webgpu', 'webgl2', 'webasm', 'cpu'] as const;
export type BrowserGpuMode = (typeof BROWSER_GPU_MODES)[number];

/** What the device thread found when it started. */
export interface BrowserDeviceInit {
  mode: BrowserGpuMode;
  skipped: Partial<Record<BrowserGpuMode, string>>;
  details: { adapter?: string; maxBufferBytes?: number };
}

/** Memory as the device thread sees it (the Node device's DeviceMemory). */
export type BrowserDeviceMemory = DeviceMemory;

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

/** The browser twin of the Node GpuDevice (device.ts): same command queue (device-core.ts), same control block. */
export class BrowserGpuDevice extends GpuDeviceCore {
  private constructor(
    readonly init: BrowserDeviceInit,
    worker: WebWorker,
    control: ReturnType<typeof createControl>,
    timeoutMs: number,
  ) {
    super(worker, control, timeoutMs, 'pass a larger timeoutMs');
  }

  protected get modeName(): string {
    return this.init.mode;
  }

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
    const control = createControl();
    const url = g.URL.createObjectURL(new g.Blob([PRELUDE], { type: 'text/javascript' }));
    const worker = new g.Worker(url);
    let failed: string | null = null;
    worker.onerror = (e) => {
      failed = e.message ?? 'the device worker failed to start';
    };
    const gpujsUrl = new URL(opts.gpujsUrl, g.location?.href).href;
    worker.postMessage({
      gpujsUrl, gpujsDir: GPUJS_ID, dawnPath: null, forcedMode: opts.mode ?? null, skip: {}, ctlBuffer: control.buffer, modes: [...BROWSER_GPU_MODES], browser: true,
    });
    const end = Date.now() + Math.min(opts.timeoutMs, 120_000);
    // The worker starts only once this thread yields, so wait asynchronously here.
    while (Atomics.load(control.ctl, CTL.done) < 1) {
      if (failed !== null || Date.now() > end) {
        worker.terminate();
        g.URL.revokeObjectURL(url);
        throw new RrtError(
          `gpu backend (browser): the device worker ${failed !== null ? `failed: ${failed}` : `did not start in time (it was at "${startStepText(Atomics.load(control.ctl, CTL.step))}")`}`,
        );
      }
      await sleep(10);
    }
    g.URL.revokeObjectURL(url);
    const message = controlText(control);
    if (control.ctl[CTL.status] === 1) {
      worker.terminate();
      throw new RrtError(opts.mode ? `gpu backend (browser): gpu.js mode "${opts.mode}" cannot run here: ${message}` : `gpu backend (browser): no gpu.js mode runs here: ${message}`);
    }
    return new BrowserGpuDevice(JSON.parse(message) as BrowserDeviceInit, worker, control, opts.timeoutMs);
  }
}
