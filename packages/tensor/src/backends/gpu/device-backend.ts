// A gpu backend over a started device, shared by the Node (index.ts) and the browser
// (browser-backend.ts) entries: storages, the byte count, info() and the gpu.js kernels. No Node
// imports: the browser entry bundles this file.

import type { Backend, BackendInfo, MemoryInfo, Storage } from '../../backend.js';
import { RrtError } from '../../errors.js';
import { GpuStorage, type DeviceMemory, type GpuDeviceCore } from './device-core.js';
import type { GpuMode } from './device.js';
import { createGpuKernels } from './kernels.js';

/** What a device thread reported when it started. */
export interface StartedDevice<M extends string> extends GpuDeviceCore {
  readonly init: { mode: M; skipped: Partial<Record<M, string>>; details: { adapter?: string; maxBufferBytes?: number } };
}

export interface DeviceBackend<M extends string> extends Backend {
  /** The gpu.js mode every kernel runs in. */
  readonly mode: M;
  /** Better modes that did not run here, with the reason. */
  readonly skippedModes: Partial<Record<M, string>>;
  /** Kernels compiled so far (each op and shape compiles once). */
  readonly compiledKernels: number;
  /** Waits for every queued kernel; throws the first error one raised. */
  sync(): void;
  /** Memory as the device thread sees it, for every backend sharing it (waits for queued work first). */
  deviceMemory(): DeviceMemory;
  /** Releases the device thread (stopped when no other backend shares it); no use afterwards. */
  close(): void;
}

/** kernelMode: the mode whose code paths the kernels take (a browser's webgl2 takes headless GL's). */
export function createDeviceBackend<M extends string>(name: string, device: StartedDevice<M>, kernelMode: GpuMode): DeviceBackend<M> {
  const { mode, skipped, details } = device.init;
  // WebAssembly kernels index in float32 arithmetic: exact below 2^24 elements only.
  const maxElements = kernelMode === 'webasm' ? 1 << 24 : details.maxBufferBytes ? Math.floor(details.maxBufferBytes / 4) : 2 ** 31 - 1;
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
      throw new RrtError(`gpu backend (${mode}): a storage of ${size} floats exceeds this mode's limit of ${maxElements}${details.maxBufferBytes ? ` (the device allows ${details.maxBufferBytes} bytes per buffer)` : ''}`);
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

  const kernels = createGpuKernels({ device, mode: kernelMode, alloc, upload, free, read: (s) => read(s) });

  const backend: DeviceBackend<M> = {
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
