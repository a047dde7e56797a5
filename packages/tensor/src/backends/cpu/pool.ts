// Worker threads that run kernel calls on the shared wasm memory. Each worker has a slot in a
// control block: the caller writes a job (function index, i32 arguments) and bumps `seq`; the
// worker runs it and stores `done = seq` (idle again). Completion of the work itself is tracked
// by the job (see matmul.ts). Workers spin briefly before Atomics.wait because a wake-up costs
// tens of microseconds.

import { Worker } from 'node:worker_threads';
import { RrtError } from '../../errors.js';
import type { WasmMemory, WasmModule } from './wasm.js';
import { evalWorkerArgv } from '../eval-worker.js';

/** Int32 words per worker slot (128 bytes: slots sit on separate cache lines). */
export const SLOT_WORDS = 32;
const SEQ = 0, DONE = 1, FN = 2, STATUS = 3, READY = 4, ARGS = 8;
/** Spin iterations before sleeping (each an Atomics.load: about 0.1 to 0.3 ms in all). */
const WORKER_SPIN = 100_000;
/** Spins of the calling thread between checks while it waits for a shared job (waitForJob). */
const JOB_SPIN = 200_000;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
parentPort.once('message', (msg) => {
  const { module, memory, slot, names, spin } = msg;
  const ex = new WebAssembly.Instance(module, { env: { memory } }).exports;
  const fns = names.map((n) => ex[n]);
  const I = new Int32Array(memory.buffer);
  const b = slot >> 2;
  const SEQ = b, DONE = b + 1, FN = b + 2, STATUS = b + 3, READY = b + 4, A = b + ${ARGS};
  let seq = Atomics.load(I, SEQ);
  Atomics.store(I, READY, 1);
  for (;;) {
    let spins = 0;
    while (Atomics.load(I, SEQ) === seq) {
      if (++spins >= spin) { Atomics.wait(I, SEQ, seq); spins = 0; }
    }
    seq = Atomics.load(I, SEQ);
    const f = I[FN];
    if (f < 0) break;
    try {
      fns[f](I[A], I[A + 1], I[A + 2], I[A + 3], I[A + 4], I[A + 5], I[A + 6], I[A + 7], I[A + 8], I[A + 9],
        I[A + 10], I[A + 11], I[A + 12], I[A + 13], I[A + 14], I[A + 15], I[A + 16], I[A + 17], I[A + 18],
        I[A + 19], I[A + 20], I[A + 21], I[A + 22], I[A + 23]);
      I[STATUS] = 0;
    } catch (e) {
      I[STATUS] = 1;
    }
    Atomics.store(I, DONE, seq);
  }
  Atomics.store(I, READY, 0);
});
`;

export class ThreadPool {
  private readonly workers: Worker[] = [];
  private readonly slots: number[] = [];
  private readonly seqs: number[] = [];
  private i32: Int32Array;

  /**
   * @param size worker threads (the main thread works too, so threads = size + 1)
   * @param ctrl byte offset of size * SLOT_WORDS * 4 zeroed bytes in memory
   * @param names exports a job may call, by index
   */
  constructor(module: WasmModule, memory: WasmMemory, readonly size: number, ctrl: number, names: string[]) {
    this.i32 = new Int32Array(memory.buffer);
    for (let w = 0; w < size; w++) {
      const slot = ctrl + w * SLOT_WORDS * 4;
      this.i32.fill(0, slot >> 2, (slot >> 2) + SLOT_WORDS);
      const worker = new Worker(WORKER_SOURCE, { eval: true, name: `rrt-cpu-${w}`, execArgv: evalWorkerArgv() });
      worker.unref();
      worker.on('error', () => {
        // A worker that failed to start never reports ready and gets no jobs.
      });
      worker.postMessage({ module, memory, slot, names, spin: WORKER_SPIN });
      this.workers.push(worker);
      this.slots.push(slot >> 2);
      this.seqs.push(0);
    }
  }

  /** Workers that finished starting. */
  ready(): number {
    let n = 0;
    for (let w = 0; w < this.size; w++) if (Atomics.load(this.i32, this.slots[w] + READY) === 1) n++;
    return n;
  }

  /** Whether worker w has started and finished every job posted to it. */
  idle(w: number): boolean {
    const s = this.slots[w];
    return Atomics.load(this.i32, s + READY) === 1 && Atomics.load(this.i32, s + DONE) === this.seqs[w];
  }

  /** Starts fn(args) on worker w. */
  post(w: number, fn: number, args: ArrayLike<number>): void {
    const s = this.slots[w], I = this.i32;
    I[s + FN] = fn;
    for (let i = 0; i < args.length; i++) I[s + ARGS + i] = args[i];
    const seq = (this.seqs[w] = (this.seqs[w] + 1) | 0);
    Atomics.store(I, s + SEQ, seq);
    Atomics.notify(I, s + SEQ);
  }

  /** Whether worker w's last job threw (valid once it is idle). */
  failed(w: number): boolean {
    return this.i32[this.slots[w] + STATUS] !== 0;
  }

  /**
   * The calling thread's wait for a job it shared: spins until the job's done count (i32[at])
   * reaches total and, with `leave`, until every worker posted to it is idle again (the job record
   * is then free for reuse). Now and then it checks that none of those workers failed and sleeps
   * a little on the done count (the last finisher notifies it).
   */
  waitForJob(posted: readonly number[], i32: Int32Array, at: number, total: number, leave: boolean, what: string): void {
    let spins = 0;
    for (;;) {
      const done = Atomics.load(i32, at);
      if (done === total && (!leave || posted.every((w) => this.idle(w)))) return;
      if (++spins >= JOB_SPIN) {
        // Only a worker still inside the job holds us here; check none of them failed.
        for (const w of posted) if (this.idle(w) && this.failed(w)) throw new RrtError(`cpu backend: ${what} worker failed`);
        Atomics.wait(i32, at, done, 5);
        spins = 0;
      }
    }
  }

  /** Asks workers to exit (they are unref'd, so this is only needed to free them early). */
  close(): void {
    for (let w = 0; w < this.size; w++) this.post(w, -1, []);
    for (const worker of this.workers) void worker.terminate();
    this.workers.length = 0;
  }
}
