// The `gpu` backend: every kernel written through gpu.js, run on its best mode here (WebGPU,
// headless GL, WebAssembly, or its CPU mode, in that order; RRT_GPU_MODE forces one). Tensors
// stay on the device between kernels and come back only through read().

import { RrtError } from '../../errors.js';
import { GPU_MODES, acquireDevice, type GpuMode } from './device.js';
import { createDeviceBackend, type DeviceBackend } from './device-backend.js';

export { GPU_MODES, type GpuMode, type DeviceMemory } from './device.js';

export interface GpuBackendOptions {
  /** Force a gpu.js mode (default: $RRT_GPU_MODE, else the best that runs here). */
  mode?: GpuMode;
  /** How long a read may wait for the device (default: $RRT_GPU_TIMEOUT_MS, else 10 minutes). */
  timeoutMs?: number;
  /** Backend name (default 'gpu'; tests create one per mode). */
  name?: string;
}

/** The gpu backend in Node: its device thread is shared by every backend of the same mode. */
export type GpuBackend = DeviceBackend<GpuMode>;

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
  return createDeviceBackend(name, device, device.init.mode);
}
