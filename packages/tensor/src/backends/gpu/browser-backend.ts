// The `gpu` backend in a browser: the same gpu.js kernels (kernels.ts) on a device thread that
// runs in a Web Worker (browser-device.ts). Creating it is asynchronous (the device worker only
// starts once the creating thread yields); using it is synchronous, like in Node.

import type { Backend, BackendInfo, MemoryInfo, Storage } from '../../backend.js';
import { RrtError } from '../../errors.js';
import { BrowserGpuDevice, BrowserGpuStorage, type BrowserDeviceMemory, type BrowserGpuMode } from './browser-device.js';
import type { GpuDevice, GpuStorage } from './device.js';
import { createGpuKernels } from './kernels.js';

export { BROWSER_GPU_MODES, type BrowserGpuMode, type BrowserDeviceMemory } from './browser-device.js';

export interface BrowserGpuBackendOptions {
  /**
   * URL of gpu.js's browser build (`gpu.js/dist/gpu-browser.min.js`), as the page serves it;
   * with Vite: `import gpujsUrl from 'gpu.js/dist/gpu-browser.min.js?url'`.
   */
  gpujsUrl: string;
  /** Force a gpu.js mode (default: the best that runs: webgpu, webgl2, webasm, cpu). */
  mode?: BrowserGpuMode;
  /** How long a read may wait for the device, ms (default 10 minutes). */
  timeoutMs?: number;
  /** Backend name (default 'gpu'). */
  name?: string;
}

export interface BrowserGpuBackend extends Backend {
  /** The gpu.js mode every kernel runs in. */
  readonly mode: BrowserGpuMode;
  /** Better modes that did not run here, with the reason. */
  readonly skippedModes: Partial<Record<BrowserGpuMode, string>>;
  /** Kernels compiled so far (each op and shape compiles once). */
  readonly compiledKernels: number;
  /** Waits for every queued kernel; throws the first error one raised. */
  sync(): void;
  /** Memory as the device worker sees it (waits for queued work first). */
  deviceMemory(): BrowserDeviceMemory;
  /** Stops the device worker; no use afterwards. */
  close(): void;
}

/**
 * Creates a gpu backend in a browser Web Worker (not a page's main thread: reads block on
 * Atomics.wait), on a cross-origin isolated page. Throws a RrtError saying what to change when
 * that is not the case or no gpu.js mode runs.
 */
export async function createBrowserGpuBackend(options: BrowserGpuBackendOptions): Promise<BrowserGpuBackend> {
  if (typeof options?.gpujsUrl !== 'string' || options.gpujsUrl === '') {
    throw new RrtError("createBrowserGpuBackend: options.gpujsUrl must be the URL of gpu.js's browser build (gpu.js/dist/gpu-browser.min.js), got " + String(options?.gpujsUrl));
  }
  const name = options.name ?? 'gpu';
  const timeoutMs = options.timeoutMs ?? 600_000;
  const device = await BrowserGpuDevice.start({ gpujsUrl: options.gpujsUrl, mode: options.mode, timeoutMs });
  const { mode, skipped, details } = device.init;
  // WebAssembly kernels index in float32 arithmetic: exact below 2^24 elements only.
  const maxElements = mode === 'webasm' ? 1 << 24 : details.maxBufferBytes ? Math.floor(details.maxBufferBytes / 4) : 2 ** 31 - 1;
  let live = 0;
  let bytes = 0;
  let closed = false;

  const own = (s: Storage, what: string): BrowserGpuStorage => {
    if (s.backend !== backend) throw new RrtError(`gpu backend: cannot ${what} a storage of backend "${s.backend.name}"`);
    return s as BrowserGpuStorage;
  };

  function alloc(size: number): BrowserGpuStorage {
    if (!Number.isInteger(size) || size < 0) throw new RrtError(`gpu backend: storage size must be a non-negative integer, got ${size}`);
    if (size > maxElements) throw new RrtError(`gpu backend (${mode}): a storage of ${size} floats exceeds this mode's limit of ${maxElements}`);
    live++;
    bytes += size * 4;
    return new BrowserGpuStorage(backend, size, device.newId());
  }

  function free(storage: Storage): void {
    const s = own(storage, 'free');
    if (!s.live) throw new RrtError('gpu backend: storage freed twice');
    s.live = false;
    live--;
    bytes -= s.size * 4;
    device.free(s);
  }

  function read(storage: Storage): Float32Array {
    const s = own(storage, 'read');
    if (!s.live) throw new RrtError('gpu backend: read of a freed storage');
    if (s.size === 0 || !s.written) return new Float32Array(s.size);
    return device.read(s);
  }

  function upload(values: Float32Array): BrowserGpuStorage {
    const s = alloc(values.length);
    if (values.length > 0) device.upload(s, values);
    return s;
  }

  // The kernels only see the device's command interface, which both devices share. WebGL2 is a
  // texture mode like headless GL (gpu.js builds headless GL kernels on its WebGL ones), so the
  // kernels take the same code paths for both.
  const kernels = createGpuKernels({
    device: device as unknown as GpuDevice,
    mode: mode === 'webgl2' ? 'headlessgl' : mode,
    alloc: (size) => alloc(size) as GpuStorage,
    upload: (values) => upload(values) as GpuStorage,
    free,
    read,
  });

  const backend: BrowserGpuBackend = {
    name,
    kernels,
    mode,
    skippedModes: skipped,
    get compiledKernels() {
      return device.kernelCount;
    },
    alloc,
    upload,
    read,
    free,
    info(): BackendInfo {
      const { runs, uploads, reads, waitMs } = device.stats;
      const d: BackendInfo['details'] = {
        mode, compiledKernels: device.kernelCount, kernelRuns: runs, uploads, reads, readWaitMs: Math.round(waitMs), memory: 'device', engine: 'gpu.js',
      };
      if (details.adapter) d.adapter = details.adapter;
      const skippedList = Object.entries(skipped).map(([m, why]) => `${m}: ${why}`);
      if (skippedList.length > 0) d.skippedModes = skippedList.join('; ');
      return { name, details: d };
    },
    memory(): MemoryInfo {
      const m = device.memory();
      return { storages: live, bytesInUse: bytes, bytesReserved: Math.max(bytes, m.bufferBytes) };
    },
    sync: () => device.sync(),
    deviceMemory(): BrowserDeviceMemory {
      device.sync();
      return device.memory();
    },
    close(): void {
      if (closed) return;
      closed = true;
      device.close();
    },
  };
  return backend;
}
