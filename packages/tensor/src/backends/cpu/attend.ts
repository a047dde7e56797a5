// Runs attendCaches through the wasm attendWork: writes a job record and the segment table,
// lets an idle worker join when the step reads enough cache, takes segments on the calling
// thread too, and waits until every segment is done and the workers have left the job. Decode
// attention reads each sequence's whole cache once per call, so on a CPU it is bound by memory
// bandwidth; a second core reading other sequences' caches nearly doubles it.

import type { Storage, HostStorage } from '../../backend.js';
import type { WasmHeap } from './heap.js';
import { POOL_FUNCTIONS } from './kernels.js';
import type { ThreadPool } from './pool.js';
import type { KernelExports } from './wasm.js';

/** Below this many cached values read (keys and values), a call stays on the calling thread. */
export const ATTEND_PARALLEL_MIN = 1 << 17;
const ATTEND_POOL_FUNCTION = POOL_FUNCTIONS.indexOf('attendWork');

const JOB_BYTES = 64;
const ptr = (s: Storage): number => (s as HostStorage).ptr;

export class AttendRunner {
  private readonly job: number;
  /** Score scratch of each thread (0: the calling thread), and its capacity in floats. */
  private readonly scores: { ptr: number; cls: number; floats: number }[] = [];
  private readonly posted: number[] = [];
  private readonly args = new Int32Array(2);
  /** Calls that a worker joined, and the segments the workers took in them. */
  parallelJobs = 0;
  workerSegments = 0;

  constructor(
    private readonly ex: KernelExports,
    private readonly heap: WasmHeap,
    /** The pool if started (never started for attention), or null. */
    private readonly pool: (start: boolean) => ThreadPool | null,
    /** Scratch for the segment table (valid until the next kernel call). */
    private readonly tableScratch: (bytes: number) => number,
  ) {
    this.job = heap.alloc(JOB_BYTES);
  }

  private scoresOf(t: number, floats: number): number {
    let s = this.scores[t];
    if (!s || s.floats < floats) {
      if (s) this.heap.free(s.ptr, s.cls);
      const want = Math.max(floats, 1024);
      s = { ptr: this.heap.alloc(want * 4), cls: this.heap.lastClass, floats: want };
      this.scores[t] = s;
    }
    return s.ptr;
  }

  run(
    q: Storage, kCaches: Storage[], vCaches: Storage[], capacities: Int32Array, starts: Int32Array, lens: Int32Array,
    heads: number, kvHeads: number, headDim: number, scale: number, out: Storage,
  ): void {
    const n = lens.length;
    if (n === 0) return;
    let longest = 0, reads = 0;
    for (let i = 0; i < n; i++) {
      longest = Math.max(longest, starts[i] + lens[i]);
      reads += lens[i] * (starts[i] + (lens[i] + 1) / 2);
    }
    reads *= 2 * kvHeads * headDim;
    const posted = this.posted;
    posted.length = 0;
    const pool = n > 1 && reads >= ATTEND_PARALLEL_MIN ? this.pool(false) : null;
    if (pool) for (let w = 0; w < pool.size; w++) if (pool.idle(w)) posted.push(w);
    // Allocate first: growing memory replaces heap.i32.
    const mine = this.scoresOf(0, longest);
    for (const w of posted) this.scoresOf(w + 1, longest);
    const table = this.tableScratch(n * 24);
    const i32 = this.heap.i32, f32 = this.heap.f32;
    let row = 0;
    for (let i = 0, r = table >>> 2; i < n; i++, r += 6) {
      // Pointers above 2 GiB wrap to negative int32s; the kernel reads them back as u32.
      i32[r] = ptr(kCaches[i]); i32[r + 1] = ptr(vCaches[i]); i32[r + 2] = capacities[i];
      i32[r + 3] = starts[i]; i32[r + 4] = lens[i]; i32[r + 5] = row;
      row += lens[i];
    }
    const j = this.job >>> 2;
    i32[j] = ptr(q); i32[j + 1] = table; i32[j + 2] = n; i32[j + 3] = heads; i32[j + 4] = kvHeads; i32[j + 5] = headDim;
    f32[j + 6] = scale; i32[j + 7] = ptr(out); i32[j + 8] = 0; i32[j + 9] = 0;
    if (pool) {
      this.args[0] = this.job;
      for (const w of posted) {
        this.args[1] = this.scores[w + 1].ptr;
        pool.post(w, ATTEND_POOL_FUNCTION, this.args);
      }
    }
    const took = this.ex.attendWork(this.job, mine);
    if (posted.length > 0) {
      // Every worker must have left the job too: the record is reused by the next call.
      pool!.waitForJob(posted, i32, j + 9, n, true, 'an attention');
      this.parallelJobs++;
      this.workerSegments += n - took;
    }
  }
}
