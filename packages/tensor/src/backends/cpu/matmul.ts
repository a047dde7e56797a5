// Runs matmuls through the wasm matmulWork: writes a job record, lets idle workers join, takes
// chunks on the calling thread too, and waits for the done count. Chunks are handed out by an
// atomic counter, so a worker that is slow to wake (or descheduled) just takes fewer chunks.

import type { MatmulSpec } from '../../backend.js';
import { RrtError } from '../../errors.js';
import type { WasmHeap } from './heap.js';
import type { ThreadPool } from './pool.js';
import type { KernelExports } from './wasm.js';

/** Below this many multiply-adds (batch*m*n*k) a matmul stays on the calling thread. */
export const MATMUL_PARALLEL_MIN = 1 << 19;
/**
 * Up to this many rows (m) with A not transposed, a matmul reads B in place (no packing): a
 * decode step's matrix-vector products touch each weight once, and packing B for a few rows
 * costs more than it saves.
 */
export const MATMUL_SMALL_M = 16;
/**
 * Few-row matmuls of at least this many multiply-adds split their columns across threads; below
 * it a worker's wake-up (and, on a busy machine, its late start) costs more than it saves.
 */
export const MATMUL_SMALL_PARALLEL_MIN = 1 << 23;

// Job record words (mirror of assembly/matmul.ts).
const J_A = 0, J_B = 1, J_C = 2, J_AOFF = 3, J_BOFF = 4, J_M = 6, J_N = 7, J_K = 8;
const J_TA = 9, J_TB = 10, J_ACC = 11, J_ROWS = 12, J_CHUNKS = 13, J_NC = 14, J_STEPS = 15;
const J_NEXT = 16, J_DONE = 17, J_TOTAL = 18, J_SMALL = 19, J_MROWS = 20, J_COFF = 21, J_PACKED = 22;
const RECORD_BYTES = 128;
/** Packed-B capacity a thread's scratch starts with (grown for long k). */
const BASE_PACK_B = 4 << 20;

/**
 * A grouped job: batch item i has rows[i] rows (spec.m is their maximum) and writes its C at
 * element cOffsets[i], so consecutive row groups of one output each take their own B.
 */
export interface MatmulGroups {
  rows: Int32Array;
  cOffsets: Int32Array;
}

/**
 * B already packed whole (matmulPackB) for every batch item: item i's panels start at element
 * offsets[i] from ptr. Jobs that pack B use it instead of b; few-row jobs read b in place.
 */
export interface PackedB {
  ptr: number;
  offsets: Int32Array;
}

interface Scratch {
  ptr: number;
  cls: number;
  /** Bytes for packed B. */
  packB: number;
}

export class MatmulRunner {
  private readonly header: number;
  private readonly maxRows: number;
  private readonly maxCols: number;
  private readonly records: number;
  private readonly recordCount: number;
  /** Record index each worker was last given (it may still read it while busy). */
  private readonly workerRecord: number[];
  private readonly scratch: Scratch[] = [];
  private readonly joined: number[] = [];
  private readonly jobArgs = [0, 0];
  /** Matmuls that workers joined, and the chunks the workers took in them. */
  parallelJobs = 0;
  workerChunks = 0;
  /** Matmuls that took the few-row path (matmulSmall). */
  smallJobs = 0;
  /** Matmuls that read B packed beforehand (packWeight). */
  packedJobs = 0;

  constructor(
    private readonly ex: KernelExports,
    private readonly heap: WasmHeap,
    private readonly threads: number,
    /** The pool if started (started now when `start`), or null (single-threaded backend). */
    private readonly pool: (start: boolean) => ThreadPool | null,
    /** Scratch for the batch offsets (valid until the next kernel call). */
    private readonly offsetsScratch: (bytes: number) => number,
  ) {
    this.header = ex.matmulScratchHeader();
    this.maxRows = ex.matmulMaxRows();
    this.maxCols = ex.matmulMaxCols();
    this.recordCount = threads + 1;
    this.records = heap.alloc(this.recordCount * RECORD_BYTES);
    this.workerRecord = new Array<number>(Math.max(threads - 1, 0)).fill(-1);
  }

  /** Scratch of thread t (0: the calling thread, w + 1: worker w) with `packB` bytes for B. */
  private scratchOf(t: number, packB: number): number {
    let s = this.scratch[t];
    if (!s || s.packB < packB) {
      if (s) this.heap.free(s.ptr, s.cls);
      const bytes = Math.max(packB, BASE_PACK_B);
      const ptr = this.heap.alloc(this.header + bytes);
      s = { ptr, cls: this.heap.lastClass, packB: bytes };
      this.scratch[t] = s;
    }
    return s.ptr;
  }

  run(a: number, b: number, c: number, spec: MatmulSpec, groups?: MatmulGroups, packedB?: PackedB): void {
    const { batch, m, k, n } = spec;
    if (batch === 0 || m === 0 || n === 0) return;
    if (groups && spec.transA) throw new RrtError('cpu matmul: grouped jobs take A untransposed');
    const small = !spec.transA && m <= MATMUL_SMALL_M;
    const macs = (groups ? groups.rows.reduce((s, r) => s + r, 0) : batch * m) * n * k;
    if (small && groups && (this.threads === 1 || macs < MATMUL_SMALL_PARALLEL_MIN)) {
      // One group at a time, its pointers moved to its rows and weight (zero offsets).
      const offs = this.offsetsScratch(8);
      this.heap.i32[offs >>> 2] = 0;
      this.heap.i32[(offs >>> 2) + 1] = 0;
      for (let g = 0; g < batch; g++) {
        const rows = groups.rows[g];
        if (rows === 0) continue;
        const ag = a + spec.aBatchOffsets[g] * 4, bg = b + spec.bBatchOffsets[g] * 4, cg = c + groups.cOffsets[g] * 4;
        this.ex.matmulSmall(ag, bg, cg, offs, offs + 4, 1, rows, n, k, spec.transB ? 1 : 0, spec.accumulate ? 1 : 0);
      }
      this.smallJobs++;
      return;
    }
    if (small && !groups && (this.threads === 1 || macs < MATMUL_SMALL_PARALLEL_MIN)) {
      const offs = this.offsetsScratch(batch * 8);
      const i32 = this.heap.i32, i = offs >>> 2;
      i32.set(spec.aBatchOffsets.length === batch ? spec.aBatchOffsets : spec.aBatchOffsets.subarray(0, batch), i);
      i32.set(spec.bBatchOffsets.length === batch ? spec.bBatchOffsets : spec.bBatchOffsets.subarray(0, batch), i + batch);
      this.ex.matmulSmall(a, b, c, offs, offs + batch * 4, batch, m, n, k, spec.transB ? 1 : 0, spec.accumulate ? 1 : 0);
      this.smallJobs++;
      return;
    }
    // Idle workers join large jobs (a busy one is still finishing an earlier job: skip it).
    const joined = this.joined;
    joined.length = 0;
    const started = this.pool(false);
    const pool = this.threads > 1 && (small || macs >= MATMUL_PARALLEL_MIN) ? (started ?? this.pool(true)) : null;
    if (pool) for (let w = 0; w < pool.size; w++) if (pool.idle(w)) joined.push(w);
    // A record no busy worker may still be reading (a late worker checks the record's counter
    // once more before it leaves; small jobs too must not reuse its record).
    let record = 0;
    if (started) {
      for (; record < this.recordCount; record++) {
        let used = false;
        for (let w = 0; w < started.size; w++) if (this.workerRecord[w] === record && !started.idle(w)) used = true;
        if (!used) break;
      }
    }
    const parts = joined.length + 1;

    // Rows per chunk and columns per step: enough chunks (about 4 per thread) to balance, no
    // more than the pack buffers take. B is packed once per step per thread taking its chunks.
    // Few-row jobs (small) are column blocks only, B read in place.
    let rows = this.maxRows;
    // A job of at most one row block, with columns enough to share, keeps its rows together and
    // splits columns instead: each thread then packs only its own columns of B, and every packed
    // panel serves all m rows (serving calls of 20-64 rows: 10-30% faster).
    if (parts > 1 && !small) rows = m <= rows && n >= 64 * parts ? m : Math.min(rows, Math.max(2, 2 * Math.ceil(m / (8 * parts))));
    const chunks = small ? 1 : Math.ceil(m / rows);
    let cols = Math.min(this.maxCols, Math.ceil(n / 16) * 16);
    if (small) cols = Math.max(16, Math.ceil(n / (4 * parts) / 16) * 16);
    const capCols = Math.max(16, Math.floor(BASE_PACK_B / (4 * Math.max(k, 1)) / 16) * 16);
    if (!small) cols = Math.min(cols, capCols);
    if (!small && parts > 1 && batch * chunks * Math.ceil(n / cols) < 4 * parts) {
      const steps = Math.ceil((4 * parts) / (batch * chunks));
      cols = Math.max(16, Math.min(cols, Math.ceil(n / steps / 16) * 16));
    }
    const steps = Math.ceil(n / cols);
    const total = batch * steps * chunks;
    const prepacked = !small && packedB !== undefined;
    const packB = small || prepacked ? 0 : 4 * Math.max(k, 1) * cols;

    // Allocate first: growing memory replaces heap.i32.
    // (Few-row jobs need no scratch.)
    const scratch0 = small ? 0 : this.scratchOf(0, packB);
    if (!small) for (const w of joined) this.scratchOf(w + 1, packB);
    const offs = this.offsetsScratch(batch * (groups ? 16 : 8));
    const i32 = this.heap.i32;
    const i = offs >>> 2;
    i32.set(spec.aBatchOffsets.length === batch ? spec.aBatchOffsets : spec.aBatchOffsets.subarray(0, batch), i);
    const bOffsets = prepacked ? packedB.offsets : spec.bBatchOffsets;
    i32.set(bOffsets.length === batch ? bOffsets : bOffsets.subarray(0, batch), i + batch);
    if (groups) {
      i32.set(groups.rows.subarray(0, batch), i + 2 * batch);
      i32.set(groups.cOffsets.subarray(0, batch), i + 3 * batch);
    }
    const job = this.records + record * RECORD_BYTES;
    const j = job >>> 2;
    i32[j + J_A] = a; i32[j + J_B] = prepacked ? packedB.ptr : b; i32[j + J_C] = c;
    i32[j + J_AOFF] = offs; i32[j + J_BOFF] = offs + batch * 4;
    i32[j + J_M] = m; i32[j + J_N] = n; i32[j + J_K] = k;
    i32[j + J_TA] = spec.transA ? 1 : 0; i32[j + J_TB] = spec.transB ? 1 : 0; i32[j + J_ACC] = spec.accumulate ? 1 : 0;
    i32[j + J_ROWS] = rows; i32[j + J_CHUNKS] = chunks; i32[j + J_NC] = cols; i32[j + J_STEPS] = steps;
    i32[j + J_NEXT] = 0; i32[j + J_DONE] = 0; i32[j + J_TOTAL] = total; i32[j + J_SMALL] = small ? 1 : 0;
    i32[j + J_MROWS] = groups ? offs + batch * 8 : 0; i32[j + J_COFF] = groups ? offs + batch * 12 : 0;
    i32[j + J_PACKED] = prepacked ? 1 : 0;

    if (pool) {
      const args = this.jobArgs;
      args[0] = job;
      for (const w of joined) {
        args[1] = small ? 0 : this.scratch[w + 1].ptr;
        this.workerRecord[w] = record;
        pool.post(w, 0, args);
      }
    }
    const mine = this.ex.matmulWork(job, scratch0);
    if (parts > 1) {
      pool!.waitForJob(this.joined, i32, j + J_DONE, total, false, 'a matmul');
      this.parallelJobs++;
      this.workerChunks += total - mine;
    }
    if (small) this.smallJobs++;
    if (prepacked) this.packedJobs++;
  }
}
