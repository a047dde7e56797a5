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
  /** How long start-up may take before it fails naming the step it hung at (default: $RRT_GPU_START_TIMEOUT_MS, else 30 s). */
  startTimeoutMs?: number;
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

function envMs(name: string, fallback: number): number {
  const env = typeof process !== 'undefined' ? process.env?.[name] : undefined;
  const t = env ? Number(env) : NaN;
  return Number.isFinite(t) && t > 0 ? t : fallback;
}

/**
 * Creates a gpu backend. Throws a RrtError saying why when gpu.js cannot run at all (or not in
 * the forced mode), so availableBackends() skips it.
 */
export function createGpuBackend(options: GpuBackendOptions = {}): GpuBackend {
  const name = options.name ?? 'gpu';
  const device = acquireDevice(
    options.mode ?? envMode(),
    options.timeoutMs ?? envMs('RRT_GPU_TIMEOUT_MS', 600_000),
    options.startTimeoutMs ?? envMs('RRT_GPU_START_TIMEOUT_MS', 30_000),
  );
  return createDeviceBackend(name, device, device.init.mode);
}

/** Whether one gpu.js mode runs here: its adapter (webgpu) or why it cannot run. */
export interface GpuModeStatus {
  mode: GpuMode;
  runs: boolean;
  /** The WebGPU adapter, or the reason the mode cannot run. */
  detail: string;
}

/** Tries every gpu.js mode once (each start-up is bounded, see startTimeoutMs) and says which run here. */
export function probeGpuModes(options: Pick<GpuBackendOptions, 'startTimeoutMs'> = {}): GpuModeStatus[] {
  return GPU_MODES.map((mode) => {
    try {
      const b = createGpuBackend({ mode, name: `gpu-probe-${mode}`, ...options });
      const adapter = b.info().details.adapter;
      b.close();
      return { mode, runs: true, detail: adapter ? String(adapter) : '' };
    } catch (e) {
      return { mode, runs: false, detail: (e as Error).message.replace(/^gpu backend: (gpu\.js mode "\w+" cannot run here: )?/, '') };
    }
  });
}
