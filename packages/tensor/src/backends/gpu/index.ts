// The `gpu` backend: every kernel written through gpu.js, run on its best mode here (WebGPU,
// headless GL, WebAssembly, or its CPU mode, in that order; RRT_GPU_MODE forces one). Tensors
// stay on the device between kernels and come back only through read().

import type { Backend, BackendInfo, MemoryInfo, Storage } from '../../backend.js';
import { RrtError } from '../../errors.js';
import { GPU_MODES, GpuStorage, acquireDevice, type DeviceMemory, type GpuMode } from './device.js';
import { createGpuKernels } from './kernels.js';

export { GPU_MODES, type GpuMode, type DeviceMemory } from './device.js';

export interface GpuBackendOptions {
  /** Force a gpu.js mode (default: $RRT_GPU_MODE, else the best that runs here). */
  mode?: GpuMode;
  /** How long a read may wait for the device (default: $RRT_GPU_TIMEOUT_MS, else 10 minutes). */
  timeoutMs?: number;
  /** Backend name (default 'gpu'; tests create one per mode). */
  name?: string;
}

export interface GpuBackend extends Backend {
  /** The gpu.js mode every kernel runs in. */
  readonly mode: GpuMode;
  /** Better modes that did not run here, with the reason. */
  readonly skippedModes: Partial<Record<GpuMode, string>>;
  /** Kernels compiled so far (each op and shape compiles once). */
  readonly compiledKernels: number;
  /** Waits for every queued kernel; throws the first error one raised. */
  sync(): void;
  /** Memory as the device thread sees it, for every backend sharing it (waits for queued work first). */
  deviceMemory(): DeviceMemory;
  /** Releases the device thread (stopped when no other backend shares it); no use afterwards. */
  close(): void;
}

function envMode(): GpuMode | undefined {
  const env = typeof process !== 'undefined' ? process.env?.RRT_GPU_MODE : undefined;
  if (env === undefined || env === '') return undefined;
  if (!(GPU_MODES as readonly string[]).includes(env)) throw new RrtError(`RRT_GPU_MODE must be one of ${GPU_MODES.join(', ')}; got "${env}"`);
  return env as GpuMode;
}

function envTimeout(): number {
  const env = typeof process !== 'undefined' ? process.env?.RRT_GPU_TIMEOUT_MS : undefined;
  const t = env ? Number(env) : NaN;
  return Number.isFinite(t) && t > 0 ? t : 600_000;
}

/**
 * Creates a gpu backend. Throws a RrtError saying why when gpu.js cannot run at all (or not in
 * the forced mode), so availableBackends() skips it.
 */
export function createGpuBackend(options: GpuBackendOptions = {}): GpuBackend {
  const name = options.name ?? 'gpu';
  const device = acquireDevice(options.mode ?? envMode(), options.timeoutMs ?? envTimeout());
  const { mode, skipped, details } = device.init;
  // WebAssembly kernels index in float32 arithmetic: exact below 2^24 elements only.
  const maxElements = mode === 'webasm' ? 1 << 24 : details.maxBufferBytes ? Math.floor(details.maxBufferBytes / 4) : 2 ** 31 - 1;
  let live = 0;
  let bytes = 0;
  let closed = false;

  const own = (s: Storage, what: string): GpuStorage => {
    if (s.backend !== backend) throw new RrtError(`gpu backend: cannot ${what} a storage of backend "${s.backend.name}"`);
    return s as GpuStorage;
  };

  function alloc(size: number): GpuStorage {
    if (!Number.isInteger(size) || size < 0) throw new RrtError(`gpu backend: storage size must be a non-negative integer, got ${size}`);
    if (size > maxElements) {
      throw new RrtError(`gpu backend (${mode}): a storage of ${size} floats exceeds this mode's limit of ${maxElements}${mode === 'webgpu' ? ` (the device allows ${details.maxBufferBytes} bytes per buffer)` : ''}`);
    }
    live++;
    bytes += size * 4;
    return new GpuStorage(backend, size, device.newId());
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

  function upload(values: Float32Array): GpuStorage {
    const s = alloc(values.length);
    if (values.length > 0) device.upload(s, values);
    return s;
  }

  const kernels = createGpuKernels({ device, mode, alloc, upload, free, read: (s) => read(s) });

  const backend: GpuBackend = {
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
    deviceMemory(): DeviceMemory {
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
