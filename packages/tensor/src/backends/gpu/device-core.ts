// The command side of the gpu backend, shared by the Node device (device.ts, a worker thread)
// and the browser device (browser-device.ts, a Web Worker): storages are ids of handles held by
// the device thread (worker-source.ts). Commands are queued and posted in batches; only reads and
// sync() wait, on a shared control block, so a training step runs without a round trip per
// kernel. No Node imports here: the browser entry bundles this file.

import type { Backend, Storage } from '../../backend.js';
import { RrtError } from '../../errors.js';
import { CTL, CTL_BYTES, CTL_F64, CTL_INTS, CTL_TEXT_OFFSET } from './worker-source.js';

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

/** The shared control block the device thread answers on (see worker-source.ts). */
export interface DeviceControl {
  buffer: SharedArrayBuffer;
  ctl: Int32Array;
  ctl64: Float64Array;
  text: Uint8Array;
}

export function createControl(): DeviceControl {
  const buffer = new SharedArrayBuffer(CTL_BYTES);
  return {
    buffer,
    ctl: new Int32Array(buffer, 0, CTL_INTS),
    ctl64: new Float64Array(buffer, CTL_INTS * 4, 2),
    text: new Uint8Array(buffer, CTL_TEXT_OFFSET),
  };
}

/** The text the device thread last wrote into the control block. */
export function controlText(c: DeviceControl): string {
  return new TextDecoder().decode(c.text.slice(0, c.ctl[CTL.textLength]!));
}

/** What the core needs of the thread: a Node Worker and a Web Worker both fit. */
export interface DevicePort {
  postMessage(message: unknown): void;
  terminate(): unknown;
}

const FLUSH_COMMANDS = 256;
const FLUSH_BYTES = 32 << 20;

export abstract class GpuDeviceCore {
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

  /** timeoutHint: what a user does when a wait times out. */
  protected constructor(
    protected readonly port: DevicePort,
    private readonly control: DeviceControl,
    private readonly timeoutMs: number,
    private readonly timeoutHint: string,
  ) {}

  /** The gpu.js mode the device thread runs (in error messages). */
  protected abstract get modeName(): string;

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
    const { ctl, ctl64 } = this.control;
    return {
      handles: ctl[CTL.handles]!,
      handleBytes: ctl64[CTL_F64.handleBytes]!,
      buffers: ctl[CTL.buffers]!,
      bufferBytes: ctl64[CTL_F64.bufferBytes]!,
      kernels: ctl[CTL.kernels]!,
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
    void this.port.terminate();
  }

  private post(c: unknown[]): void {
    if (this.closed) throw new RrtError('gpu backend: used after close()');
    this.pending.push(c);
    if (this.pending.length >= FLUSH_COMMANDS || this.pendingBytes >= FLUSH_BYTES) this.flush();
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    this.port.postMessage(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
  }

  private check(a: { error: string | null }): void {
    if (a.error) throw new RrtError(`gpu backend (${this.modeName}): ${a.error}`);
  }

  /** Blocks until the device thread has answered command seq (1: its start-up report). */
  protected wait(seq: number, what: string, timeoutMs = this.timeoutMs): { error: string | null; text: string } {
    this.flush();
    const { ctl } = this.control;
    const start = performance.now();
    const end = Date.now() + timeoutMs;
    for (;;) {
      const done = Atomics.load(ctl, CTL.done);
      if (done >= seq) break;
      if (Atomics.load(ctl, CTL.dead) === 1) {
        this.closed = true;
        throw new RrtError(`gpu backend: ${controlText(this.control)}`);
      }
      const left = end - Date.now();
      if (left <= 0) throw new RrtError(`gpu backend: the device thread did not answer within ${timeoutMs} ms (${what}); ${this.timeoutHint}`);
      Atomics.wait(ctl, CTL.done, done, Math.min(left, 1000));
    }
    this.stats.waitMs += performance.now() - start;
    const error = ctl[CTL.status] === 1 ? controlText(this.control) : null;
    return { error, text: error ? '' : controlText(this.control) };
  }
}
