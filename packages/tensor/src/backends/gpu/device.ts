// The main thread's side of the gpu backend: storages are ids of handles held by the device
// thread (worker-source.ts). Commands are queued and posted in batches; only reads and sync()
// wait, on a shared control block, so a training step runs without a round trip per kernel.

import { existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Backend, Storage } from '../../backend.js';
import { RrtError } from '../../errors.js';
import { CTL, CTL_BYTES, CTL_F64, CTL_INTS, CTL_TEXT_OFFSET, WORKER_SOURCE } from './worker-source.js';

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

/** Memory as the device thread sees it. */
export interface DeviceMemory {
  /** Storages holding device data. */
  handles: number;
  handleBytes: number;
  /** webgpu: every live GPUBuffer (kernels' parameter and staging buffers included); else 0. */
  buffers: number;
  bufferBytes: number;
  /** Kernels built on the device so far. */
  kernels: number;
}

export class GpuStorage implements Storage {
  /** True once a kernel or an upload wrote it (unwritten storages hold no device data). */
  written = false;
  live = true;
  constructor(readonly backend: Backend, readonly size: number, readonly id: number) {}
}

/** A kernel known to the device (sent with its first run, compiled there once). */
export interface KernelRef {
  readonly id: number;
  readonly key: string;
  readonly source: string;
  readonly threads: number[];
  readonly vec4: boolean;
  defined: boolean;
}

export interface KernelSpec {
  source: string;
  /** Output floats (row-major, flat). */
  output: number;
  /** gpu.js output dims, x first (default [output], or [output / 4] with vec4); 2D is webgpu-only. */
  threads?: number[];
  /** Each thread returns 4 consecutive floats (webgpu only). */
  vec4?: boolean;
}

type Command = unknown[];

const FLUSH_COMMANDS = 256;
const FLUSH_BYTES = 32 << 20;

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

/** A device thread for the requested mode (undefined: the best that runs), shared where it must be. */
export function acquireDevice(mode: GpuMode | undefined, timeoutMs: number): GpuDevice {
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
    device = new GpuDevice(mode, timeoutMs, mode === undefined ? { ...registry.unavailable } : {});
  } catch (e) {
    if (isShared(mode)) registry.unavailable[mode] = (e as Error).message.replace(/^.*cannot run here: /, '');
    throw e;
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

export class GpuDevice {
  readonly init: DeviceInit;
  private users = 1;
  private readonly worker: Worker;
  private readonly ctl: Int32Array;
  private readonly ctl64: Float64Array;
  private readonly text: Uint8Array;
  private pending: Command[] = [];
  private pendingBytes = 0;
  private seq = 1;
  private nextId = 1;
  private nextKernel = 1;
  private readonly kernelsByKey = new Map<string, KernelRef>();
  private readSab = new SharedArrayBuffer(1 << 16);
  /** Debug counters: kernel runs, uploads and reads posted, and milliseconds spent waiting. */
  readonly stats = { runs: 0, uploads: 0, reads: 0, waitMs: 0 };
  private closed = false;

  constructor(mode: GpuMode | undefined, private readonly timeoutMs: number, skip: Partial<Record<GpuMode, string>> = {}) {
    const { gpujsDir, dawnPath } = resolvePackages();
    const ctlBuffer = new SharedArrayBuffer(CTL_BYTES);
    this.ctl = new Int32Array(ctlBuffer, 0, CTL_INTS);
    this.ctl64 = new Float64Array(ctlBuffer, CTL_INTS * 4, 2);
    this.text = new Uint8Array(ctlBuffer, CTL_TEXT_OFFSET);
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { gpujsDir, dawnPath, forcedMode: mode ?? null, skip, ctlBuffer } });
    // The device thread never keeps a process alive.
    this.worker.unref();
    const answer = this.wait(1, 'starting gpu.js', Math.min(timeoutMs, 120_000));
    if (answer.error) {
      void this.worker.terminate();
      throw new RrtError(mode ? `gpu backend: gpu.js mode "${mode}" cannot run here: ${answer.error}` : `gpu backend: no gpu.js mode runs here: ${answer.error}`);
    }
    this.init = JSON.parse(answer.text) as DeviceInit;
    this.stats.waitMs = 0;
    openDevices.add(this);
    watchExit();
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

  /** Runs k; its result replaces out's data (out may also be an input: in-place updates). */
  run(k: KernelRef, out: GpuStorage, args: (GpuStorage | number)[]): void {
    if (!k.defined) {
      this.post(['def', k.id, k.key, k.source, k.threads, k.vec4]);
      k.defined = true;
    }
    const kinds = new Array<number>(args.length);
    const values = new Array<number>(args.length);
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
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

  upload(s: GpuStorage, values: Float32Array): void {
    // The copy travels with the command: the caller may change values afterwards.
    this.post(['up', s.id, values.slice()]);
    this.stats.uploads++;
    this.pendingBytes += values.byteLength;
    s.written = true;
  }

  free(s: GpuStorage): void {
    // After close() the device thread is gone with everything it held.
    if (s.written && !this.closed) this.post(['free', s.id]);
  }

  /** A host copy of s (blocks until the device has run everything queued before). */
  read(s: GpuStorage): Float32Array {
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

  memory(): DeviceMemory {
    return {
      handles: this.ctl[CTL.handles],
      handleBytes: this.ctl64[CTL_F64.handleBytes],
      buffers: this.ctl[CTL.buffers],
      bufferBytes: this.ctl64[CTL_F64.bufferBytes],
      kernels: this.ctl[CTL.kernels],
    };
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Another backend uses this device; close() stops it when the last one closes. */
  retain(): this {
    this.users++;
    return this;
  }

  close(): void {
    if (this.closed || --this.users > 0) return;
    this.shutdown();
  }

  /** Stops the device thread after it has released the device (see worker-source.ts). */
  shutdown(): void {
    if (this.closed) return;
    this.pending = [];
    const seq = ++this.seq;
    this.post(['shutdown', seq]);
    try {
      this.wait(seq, 'shutdown', 10_000);
    } catch {
      // The thread is stopped below either way.
    }
    this.closed = true;
    openDevices.delete(this);
    void this.worker.terminate();
  }

  private post(c: Command): void {
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
      if (left <= 0) throw new RrtError(`gpu backend: the device thread did not answer within ${timeoutMs} ms (${what}); set RRT_GPU_TIMEOUT_MS to wait longer`);
      Atomics.wait(this.ctl, CTL.done, done, Math.min(left, 1000));
    }
    this.stats.waitMs += performance.now() - start;
    const error = this.ctl[CTL.status] === 1 ? this.readText() : null;
    return { error, text: error ? '' : this.readText() };
  }

  private readText(): string {
    const n = this.ctl[CTL.textLength];
    return new TextDecoder().decode(this.text.slice(0, n));
  }
}
