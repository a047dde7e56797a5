// The gpu backend's device thread in Node: a worker thread that runs worker-source.ts with gpu.js
// (and Dawn's webgpu or headless GL where present). The command queue is device-core.ts.

import { existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { RrtError } from '../../errors.js';
import { evalWorkerArgv } from '../eval-worker.js';
import { GpuDeviceCore, createControl } from './device-core.js';
import { CTL, WORKER_SOURCE, startStep, startStepText } from './worker-source.js';

export { GpuStorage, type DeviceMemory, type KernelRef, type KernelSpec } from './device-core.js';

/** gpu.js modes, best first. */
export const GPU_MODES = ['webgpu', 'headlessgl', 'webasm', 'cpu'] as const;
export type GpuMode = (typeof GPU_MODES)[number];

/** What the device thread found when it started. */
export interface DeviceInit {
  mode: GpuMode;
  /** Modes tried before `mode`, with the reason each was skipped. */
  skipped: Partial<Record<GpuMode, string>>;
  details: { adapter?: string; maxBufferBytes?: number };
}

function resolvePackages(): { gpujsDir: string; dawnPath: string | null } {
  const require = createRequire(import.meta.url);
  let gpujsDir: string;
  try {
    gpujsDir = realpathSync(dirname(require.resolve('gpu.js/package.json')));
  } catch {
    throw new RrtError('gpu backend: the gpu.js package is not installed (it is a dependency of @rrt/tensor: reinstall, or use another backend)');
  }
  let dawnPath: string | null = null;
  try {
    const dir = realpathSync(dirname(require.resolve('webgpu/package.json')));
    const arch = process.platform === 'darwin' ? 'universal' : process.arch;
    const p = join(dir, 'dist', `${process.platform}-${arch}.dawn.node`);
    if (existsSync(p)) dawnPath = p;
  } catch {
    // webgpu is optional at run time: the worker reports the mode as skipped.
  }
  return { gpujsDir, dawnPath };
}

/**
 * Device threads shared by the gpu backends of this process. Dawn (the webgpu package) and gl
 * are native addons that work in one thread per process only (a second Dawn slows both and can
 * abort the process; a second gl fails to load), so every webgpu backend shares one device
 * thread, every headlessgl backend another, and a failed probe of either is not repeated.
 */
type SharedMode = 'webgpu' | 'headlessgl';
interface DeviceRegistry {
  shared: Partial<Record<SharedMode, GpuDevice>>;
  unavailable: Partial<Record<SharedMode, string>>;
}
const registry: DeviceRegistry = ((globalThis as Record<symbol, unknown>)[Symbol.for('rrt.gpu.devices.v2')] ??= {
  shared: {},
  unavailable: {},
}) as DeviceRegistry;
const isShared = (m: GpuMode | undefined): m is SharedMode => m === 'webgpu' || m === 'headlessgl';

/** Start-up ran out of time; `mode` is the mode the device thread was probing, if it had begun one. */
export class GpuStartTimeout extends RrtError {
  constructor(message: string, readonly mode: GpuMode | undefined) {
    super(message);
  }
}

/**
 * A device thread for the requested mode (undefined: the best that runs), shared where it must be.
 * Start-up waits at most startTimeoutMs; with no mode forced, a WebGPU or headless GL probe that
 * hangs marks that mode unavailable and the next mode is tried.
 */
export function acquireDevice(mode: GpuMode | undefined, timeoutMs: number, startTimeoutMs: number): GpuDevice {
  const live = (m: SharedMode) => {
    const d = registry.shared[m];
    return d && !d.isClosed ? d : undefined;
  };
  if (isShared(mode)) {
    const d = live(mode);
    if (d) return d.retain();
    const why = registry.unavailable[mode];
    if (why) throw new RrtError(`gpu backend: gpu.js mode "${mode}" cannot run here: ${why}`);
  } else if (mode === undefined) {
    const d = live('webgpu') ?? (registry.unavailable.webgpu ? live('headlessgl') : undefined);
    if (d) return d.retain();
  }
  let device: GpuDevice;
  try {
    device = new GpuDevice(mode, timeoutMs, startTimeoutMs, mode === undefined ? { ...registry.unavailable } : {});
  } catch (e) {
    if (isShared(mode)) registry.unavailable[mode] = (e as Error).message.replace(/^.*cannot run here: /, '');
    const stuck = e instanceof GpuStartTimeout ? e.mode : undefined;
    if (mode !== undefined || !isShared(stuck) || registry.unavailable[stuck]) throw e;
    // The best mode hung (a native call that never returned): try the others without it.
    registry.unavailable[stuck] = (e as Error).message.replace(/^gpu backend: /, '');
    return acquireDevice(undefined, timeoutMs, startTimeoutMs);
  }
  const { init } = device;
  if (isShared(init.mode)) registry.shared[init.mode] = device;
  for (const m of ['webgpu', 'headlessgl'] as const) if (init.skipped[m]) registry.unavailable[m] ??= init.skipped[m];
  return device;
}

// Device threads still running, stopped cleanly when the process exits.
const openDevices = new Set<GpuDevice>();
let watching = false;
function watchExit(): void {
  if (watching || typeof process === 'undefined') return;
  watching = true;
  const stopAll = () => {
    for (const d of [...openDevices]) d.shutdown();
  };
  process.on('beforeExit', stopAll);
  process.on('exit', stopAll);
}

export class GpuDevice extends GpuDeviceCore {
  readonly init: DeviceInit;

  constructor(mode: GpuMode | undefined, timeoutMs: number, startTimeoutMs: number, skip: Partial<Record<GpuMode, string>> = {}) {
    const { gpujsDir, dawnPath } = resolvePackages();
    const control = createControl();
    // With several modes to try, one that hangs inside a promise gives way to the next in time.
    const probeTimeoutMs = mode === undefined ? Math.max(1000, Math.round(startTimeoutMs * 0.6)) : 0;
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      execArgv: evalWorkerArgv(),
      workerData: { gpujsDir, dawnPath, forcedMode: mode ?? null, skip, ctlBuffer: control.buffer, probeTimeoutMs },
    });
    // The device thread never keeps a process alive.
    worker.unref();
    super(worker, control, timeoutMs, 'set RRT_GPU_TIMEOUT_MS to wait longer');
    let answer: { error: string | null; text: string };
    try {
      answer = this.wait(1, 'starting gpu.js', startTimeoutMs);
    } catch (e) {
      void worker.terminate();
      if (Atomics.load(control.ctl, CTL.dead) === 1) throw e;
      const code = Atomics.load(control.ctl, CTL.step);
      const stuck = startStep(code).mode as GpuMode | undefined;
      throw new GpuStartTimeout(
        `gpu backend: ${mode ? `gpu.js mode "${mode}"` : 'gpu.js'} did not start within ${startTimeoutMs} ms; the device thread was at "${startStepText(code)}" ` +
          '(set RRT_GPU_START_TIMEOUT_MS to wait longer, or RRT_GPU_MODE to force another mode)',
        stuck,
      );
    }
    if (answer.error) {
      void worker.terminate();
      throw new RrtError(mode ? `gpu backend: gpu.js mode "${mode}" cannot run here: ${answer.error}` : `gpu backend: no gpu.js mode runs here: ${answer.error}`);
    }
    this.init = JSON.parse(answer.text) as DeviceInit;
    this.stats.waitMs = 0;
    openDevices.add(this);
    watchExit();
  }

  protected get modeName(): string {
    return this.init.mode;
  }

  override shutdown(): void {
    super.shutdown();
    openDevices.delete(this);
  }
}
