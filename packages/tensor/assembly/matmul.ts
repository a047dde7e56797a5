// GotoBLAS-style float32 matmul: B packed into 16-column k-major panels, A into 2-row panels,
// a 2x16 micro-kernel with 8 f32x4 accumulators (larger tiles spill in V8), no k-loop unrolling.
//
// Work is handed out in chunks through an atomic counter in a job record, so the calling
// thread and the workers balance dynamically (a worker that wakes late takes fewer). A "step"
// is one (batch, column block); its chunks are row blocks. Each thread packs B for a step it
// takes chunks from (the whole k range), then packs A per chunk.

import { madd } from './simd';

const KC: i32 = 256; // k slab: a 16 x KC panel of B (16 KiB) stays in L1
const MC: i32 = 64; // max rows per chunk: an MC x KC block of A (64 KiB) stays in L2
const NC_MAX: i32 = 2048; // max columns per step

const PACK_A_BYTES: usize = <usize>(MC * KC * 4);
const TILE_BYTES: usize = 2 * 16 * 4;

/**
 * Scratch bytes before the packed-B buffer; a thread's scratch is this plus
 * 4 * k * roundUp16(step columns) bytes for B.
 */
export function matmulScratchHeader(): usize {
  return PACK_A_BYTES + TILE_BYTES;
}

/** Largest row block (chunk) and step width matmulWork accepts. */
export function matmulMaxRows(): i32 {
  return MC;
}
export function matmulMaxCols(): i32 {
  return NC_MAX;
}

// B[p, j] for p in [p0, p0+kc), j in [j0, j0+nc) into panels of 16 columns, k-major, zero-padded.
function packB(b: usize, n: i32, k: i32, transB: bool, p0: i32, kc: i32, j0: i32, nc: i32, dst: usize): void {
  for (let q = 0; q < nc; q += 16) {
    const w = min(16, nc - q);
    let d = dst + <usize>(q * kc) * 4;
    if (!transB) {
      let s = b + (<usize>p0 * <usize>n + <usize>(j0 + q)) * 4;
      const ld = <usize>n * 4;
      if (w == 16) {
        for (let p = 0; p < kc; p++) {
          v128.store(d, v128.load(s));
          v128.store(d, v128.load(s, 16), 16);
          v128.store(d, v128.load(s, 32), 32);
          v128.store(d, v128.load(s, 48), 48);
          s += ld;
          d += 64;
        }
      } else {
        for (let p = 0; p < kc; p++) {
          let jj = 0;
          for (; jj < w; jj++) store<f32>(d + (<usize>jj << 2), load<f32>(s + (<usize>jj << 2)));
          for (; jj < 16; jj++) store<f32>(d + (<usize>jj << 2), 0);
          s += ld;
          d += 64;
        }
      }
    } else if (w == 16) {
      // b is [n, k]: column j of B is row j of b, contiguous along p. Blocks of 4 columns x 4 k
      // are loaded as 4 vectors and transposed in registers (Linear weights are stored this way).
      const ld = <usize>k * 4;
      let p = 0;
      for (; p + 4 <= kc; p += 4) {
        for (let jj = 0; jj < 16; jj += 4) {
          const s = b + (<usize>(j0 + q + jj) * <usize>k + <usize>(p0 + p)) * 4;
          const r0 = v128.load(s), r1 = v128.load(s + ld), r2 = v128.load(s + 2 * ld), r3 = v128.load(s + 3 * ld);
          const t0 = v128.shuffle<f32>(r0, r1, 0, 4, 1, 5), t1 = v128.shuffle<f32>(r0, r1, 2, 6, 3, 7);
          const t2 = v128.shuffle<f32>(r2, r3, 0, 4, 1, 5), t3 = v128.shuffle<f32>(r2, r3, 2, 6, 3, 7);
          const dd = d + <usize>p * 64 + (<usize>jj << 2);
          v128.store(dd, v128.shuffle<f32>(t0, t2, 0, 1, 4, 5));
          v128.store(dd, v128.shuffle<f32>(t0, t2, 2, 3, 6, 7), 64);
          v128.store(dd, v128.shuffle<f32>(t1, t3, 0, 1, 4, 5), 128);
          v128.store(dd, v128.shuffle<f32>(t1, t3, 2, 3, 6, 7), 192);
        }
      }
      for (; p < kc; p++) {
        for (let jj = 0; jj < 16; jj++) {
          store<f32>(d + <usize>p * 64 + (<usize>jj << 2), load<f32>(b + (<usize>(j0 + q + jj) * <usize>k + <usize>(p0 + p)) * 4));
        }
      }
    } else {
      // b is [n, k], the last panel of fewer than 16 columns: zero-padded.
      for (let jj = 0; jj < 16; jj++) {
        let dd = d + (<usize>jj << 2);
        if (jj < w) {
          let s = b + (<usize>(j0 + q + jj) * <usize>k + <usize>p0) * 4;
          for (let p = 0; p < kc; p++) {
            store<f32>(dd, load<f32>(s));
            s += 4;
            dd += 64;
          }
        } else {
          for (let p = 0; p < kc; p++) {
            store<f32>(dd, 0);
            dd += 64;
          }
        }
      }
    }
  }
}

// A[i, p] for i in [i0, i0+mc), p in [p0, p0+kc) into 2-row panels interleaved per p, zero-padded.
function packA(a: usize, m: i32, k: i32, transA: bool, i0: i32, mc: i32, p0: i32, kc: i32, dst: usize): void {
  for (let r = 0; r < mc; r += 2) {
    let d = dst + <usize>(r * kc) * 4;
    const i = i0 + r;
    const two = r + 1 < mc;
    if (!transA) {
      let s0 = a + (<usize>i * <usize>k + <usize>p0) * 4;
      if (two) {
        let s1 = s0 + <usize>k * 4;
        let p = 0;
        for (; p + 4 <= kc; p += 4) {
          const x = v128.load(s0);
          const y = v128.load(s1);
          v128.store(d, v128.shuffle<f32>(x, y, 0, 4, 1, 5));
          v128.store(d, v128.shuffle<f32>(x, y, 2, 6, 3, 7), 16);
          s0 += 16;
          s1 += 16;
          d += 32;
        }
        for (; p < kc; p++) {
          store<f32>(d, load<f32>(s0));
          store<f32>(d, load<f32>(s1), 4);
          s0 += 4;
          s1 += 4;
          d += 8;
        }
      } else {
        for (let p = 0; p < kc; p++) {
          store<f32>(d, load<f32>(s0));
          store<f32>(d, 0, 4);
          s0 += 4;
          d += 8;
        }
      }
    } else {
      // a is [k, m]: rows i and i+1 are adjacent in each stored row.
      let s = a + (<usize>p0 * <usize>m + <usize>i) * 4;
      const ld = <usize>m * 4;
      if (two) {
        for (let p = 0; p < kc; p++) {
          store<u64>(d, load<u64>(s));
          s += ld;
          d += 8;
        }
      } else {
        for (let p = 0; p < kc; p++) {
          store<f32>(d, load<f32>(s));
          store<f32>(d, 0, 4);
          s += ld;
          d += 8;
        }
      }
    }
  }
}

// C[0:2, 0:16] = (add ? C : 0) + Apanel @ Bpanel over kc. ldc in bytes.
function micro(pa: usize, pb: usize, kc: i32, c: usize, ldc: usize, add: bool): void {
  let c00: v128, c01: v128, c02: v128, c03: v128, c10: v128, c11: v128, c12: v128, c13: v128;
  const c1 = c + ldc;
  if (add) {
    c00 = v128.load(c); c01 = v128.load(c, 16); c02 = v128.load(c, 32); c03 = v128.load(c, 48);
    c10 = v128.load(c1); c11 = v128.load(c1, 16); c12 = v128.load(c1, 32); c13 = v128.load(c1, 48);
  } else {
    c00 = f32x4.splat(0); c01 = c00; c02 = c00; c03 = c00;
    c10 = c00; c11 = c00; c12 = c00; c13 = c00;
  }
  const end = pb + (<usize>kc << 6);
  while (pb < end) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    const b2 = v128.load(pb, 32);
    const b3 = v128.load(pb, 48);
    const a0 = v128.load32_splat(pa);
    const a1 = v128.load32_splat(pa, 4);
    c00 = madd(a0, b0, c00);
    c01 = madd(a0, b1, c01);
    c02 = madd(a0, b2, c02);
    c03 = madd(a0, b3, c03);
    c10 = madd(a1, b0, c10);
    c11 = madd(a1, b1, c11);
    c12 = madd(a1, b2, c12);
    c13 = madd(a1, b3, c13);
    pa += 8;
    pb += 64;
  }
  v128.store(c, c00); v128.store(c, c01, 16); v128.store(c, c02, 32); v128.store(c, c03, 48);
  v128.store(c1, c10); v128.store(c1, c11, 16); v128.store(c1, c12, 32); v128.store(c1, c13, 48);
}

// Edge tile (rows < 2 or cols < 16): compute into a 2x16 scratch tile, copy the valid part.
function microEdge(pa: usize, pb: usize, kc: i32, c: usize, ldc: usize, rows: i32, cols: i32, add: bool, tile: usize): void {
  for (let r = 0; r < 2; r++) {
    for (let j = 0; j < 16; j++) {
      store<f32>(tile + <usize>(r * 16 + j) * 4, add && r < rows && j < cols ? load<f32>(c + <usize>r * ldc + (<usize>j << 2)) : 0);
    }
  }
  micro(pa, pb, kc, tile, 64, true);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      store<f32>(c + <usize>r * ldc + (<usize>j << 2), load<f32>(tile + <usize>(r * 16 + j) * 4));
    }
  }
}

// C[r0:r1, j0:j0+nc] (+)= A[r0:r1, :] @ B[:, j0:j0+nc] with B already packed (slab by slab of
// KC rows, each slab in 16-column panels): the packed columns are pCols wide (padded to 16) and
// column j0 is packed column pj0 (0 when only this step's columns are packed). r1 - r0 <= MC.
function rowsBlock(
  a: usize, c: usize, m: i32, n: i32, k: i32, transA: bool, accumulate: bool,
  r0: i32, r1: i32, j0: i32, nc: i32, pB: usize, pCols: i32, pj0: i32, pA: usize, tile: usize,
): void {
  const ldc = <usize>n * 4;
  const mc = r1 - r0;
  const pPad = (pCols + 15) & ~15;
  for (let pc = 0; pc < k; pc += KC) {
    const kc = min(KC, k - pc);
    const add = accumulate || pc > 0;
    packA(a, m, k, transA, r0, mc, pc, kc, pA);
    const slab = pB + <usize>pc * <usize>pPad * 4;
    for (let jr = 0; jr < nc; jr += 16) {
      const w = min(16, nc - jr);
      const pb = slab + <usize>((pj0 + jr) * kc) * 4;
      let cc = c + <usize>r0 * ldc + (<usize>(j0 + jr) << 2);
      for (let ir = 0; ir < mc; ir += 2) {
        const h = min(2, mc - ir);
        const pa = pA + <usize>(ir * kc) * 4;
        if (h == 2 && w == 16) micro(pa, pb, kc, cc, ldc, add);
        else microEdge(pa, pb, kc, cc, ldc, h, w, add, tile);
        cc += ldc * 2;
      }
    }
  }
}

/** Bytes matmulPackB writes for a k x n B: k * roundUp16(n) floats. */
export function matmulPackedBytes(n: i32, k: i32): usize {
  return <usize>k * <usize>((n + 15) & ~15) * 4;
}

/**
 * Packs all of B (b stored [k, n], or [n, k] when transB) as one step over every column would
 * (slab by slab of KC rows, 16-column panels), for jobs with J_PACKED set: a weight packed once
 * serves every later product with it.
 */
export function matmulPackB(b: usize, n: i32, k: i32, transB: i32, dst: usize): void {
  const nPad = (n + 15) & ~15;
  for (let pc = 0; pc < k; pc += KC) packB(b, n, k, transB != 0, pc, min(KC, k - pc), 0, n, dst + <usize>pc * <usize>nPad * 4);
}

// Job record, i32 words (written by JS, see backends/cpu/kernels.ts).
const J_A = 0, J_B = 1, J_C = 2, J_AOFF = 3, J_BOFF = 4, J_M = 6, J_N = 7, J_K = 8;
const J_TA = 9, J_TB = 10, J_ACC = 11, J_ROWS = 12, J_CHUNKS = 13, J_NC = 14, J_STEPS = 15;
const J_NEXT = 16, J_DONE = 17, J_TOTAL = 18, J_SMALL = 19;
// Grouped jobs (0 otherwise): per batch item its rows (m is then their maximum) and the element
// offset of its C, so consecutive row groups of one output each take their own B.
const J_MROWS = 20, J_COFF = 21;
// 1 when each batch item's B is already packed whole (matmulPackB): threads read its panels
// and pack nothing.
const J_PACKED = 22;

// @ts-ignore: decorator
@inline
function word(job: usize, i: i32): i32 {
  return load<i32>(job + (<usize>i << 2));
}

/**
 * Takes chunks of the job until none are left: chunk g is row block g % chunks of step
 * g / chunks; step s is column block s % steps of batch s / steps (row blocks past a grouped
 * item's rows are empty). Every thread that joins a
 * job calls this with its own scratch (see matmulScratchHeader; rows per chunk <= MC, step
 * columns <= NC_MAX). The last finisher wakes waiters on the done count. Returns the chunks
 * this thread took.
 */
export function matmulWork(job: usize, scratch: usize): i32 {
  const a = <usize>word(job, J_A), b = <usize>word(job, J_B), c = <usize>word(job, J_C);
  const aOff = <usize>word(job, J_AOFF), bOff = <usize>word(job, J_BOFF);
  const m = word(job, J_M), n = word(job, J_N), k = word(job, J_K);
  const transA = word(job, J_TA) != 0, transB = word(job, J_TB) != 0, accumulate = word(job, J_ACC) != 0;
  const rowsPer = word(job, J_ROWS), chunks = word(job, J_CHUNKS), ncStep = word(job, J_NC), steps = word(job, J_STEPS);
  const total = word(job, J_TOTAL);
  const mRows = <usize>word(job, J_MROWS), cOff = <usize>word(job, J_COFF);
  const prepacked = word(job, J_PACKED) != 0;
  if (word(job, J_SMALL) != 0) {
    // Few rows: chunk g is column block g % steps of batch g / steps, B read in place.
    let mine = 0;
    for (;;) {
      const g = atomic.add<i32>(job + (J_NEXT << 2), 1);
      if (g >= total) break;
      mine++;
      const bi = g / steps, jb = g - bi * steps;
      const ab = a + (<usize>load<u32>(aOff + (<usize>bi << 2)) << 2);
      const bb = b + (<usize>load<u32>(bOff + (<usize>bi << 2)) << 2);
      const j0 = jb * ncStep;
      const mi = mRows ? load<i32>(mRows + (<usize>bi << 2)) : m;
      const cb = cOff ? c + (<usize>load<u32>(cOff + (<usize>bi << 2)) << 2) : c + <usize>bi * <usize>m * <usize>n * 4;
      smallColumns(ab, bb, cb, mi, n, k, transB, accumulate, j0, min(ncStep, n - j0));
      if (atomic.add<i32>(job + (J_DONE << 2), 1) + 1 == total) atomic.notify(job + (J_DONE << 2));
    }
    return mine;
  }
  const pA = scratch, tile = scratch + PACK_A_BYTES, pB = tile + TILE_BYTES;
  const cStride = <usize>m * <usize>n * 4;
  let packed = -1, taken = 0;
  for (;;) {
    const g = atomic.add<i32>(job + (J_NEXT << 2), 1);
    if (g >= total) break;
    taken++;
    const s = g / chunks, r = g - s * chunks;
    const bi = s / steps, jb = s - bi * steps;
    const ab = a + (<usize>load<u32>(aOff + (<usize>bi << 2)) << 2);
    const cb = cOff ? c + (<usize>load<u32>(cOff + (<usize>bi << 2)) << 2) : c + <usize>bi * cStride;
    const mi = mRows ? load<i32>(mRows + (<usize>bi << 2)) : m;
    const j0 = jb * ncStep, nc = min(ncStep, n - j0);
    const r0 = r * rowsPer;
    if (r0 >= mi) {
      if (atomic.add<i32>(job + (J_DONE << 2), 1) + 1 == total) atomic.notify(job + (J_DONE << 2));
      continue;
    }
    // This step's B panels: packed whole before the job, or by this thread for the step.
    let pb = pB, pCols = nc, pj0 = 0;
    if (prepacked) {
      pb = b + (<usize>load<u32>(bOff + (<usize>bi << 2)) << 2);
      pCols = n;
      pj0 = j0;
    } else if (s != packed) {
      const bb = b + (<usize>load<u32>(bOff + (<usize>bi << 2)) << 2);
      const ncPad = (nc + 15) & ~15;
      for (let pc = 0; pc < k; pc += KC) packB(bb, n, k, transB, pc, min(KC, k - pc), j0, nc, pB + <usize>pc * <usize>ncPad * 4);
      packed = s;
    }
    if (k > 0) {
      rowsBlock(ab, cb, mi, n, k, transA, accumulate, r0, min(mi, r0 + rowsPer), j0, nc, pb, pCols, pj0, pA, tile);
    } else if (!accumulate) {
      for (let i = r0; i < min(mi, r0 + rowsPer); i++) memory.fill(cb + (<usize>i * <usize>n + <usize>j0) * 4, 0, <usize>nc * 4);
    }
    if (atomic.add<i32>(job + (J_DONE << 2), 1) + 1 == total) atomic.notify(job + (J_DONE << 2));
  }
  return taken;
}

// ---------------------------------------------------------------------------------------------
// Few-row matmul (decode steps: one token per sequence), reading B in place: no packing, so a
// matrix-vector product touches each weight once. Only for A not transposed.

// @ts-ignore: decorator
@inline
function hsum4(x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  // Lane r of the result is the sum of the lanes of x_r.
  const s01 = f32x4.add(v128.shuffle<f32>(x0, x1, 0, 4, 1, 5), v128.shuffle<f32>(x0, x1, 2, 6, 3, 7));
  const s23 = f32x4.add(v128.shuffle<f32>(x2, x3, 0, 4, 1, 5), v128.shuffle<f32>(x2, x3, 2, 6, 3, 7));
  return f32x4.add(v128.shuffle<f32>(s01, s23, 0, 1, 4, 5), v128.shuffle<f32>(s01, s23, 2, 3, 6, 7));
}

// C[i, j] (+)= dot(A[i, :], B[j, :]) for B stored [n, k]: 4 rows of B at a time against each row
// of A (a 4 x k block of B stays in L1 across the rows of A).
// n here is the columns of this call; ldc (bytes) is C's row stride.
function smallTransB(a: usize, b: usize, c: usize, m: i32, n: i32, k: i32, ldc: usize, accumulate: bool): void {
  const k4 = k & ~3;
  const ldb = <usize>k << 2, lda = ldb;
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const b0 = b + <usize>j * ldb, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
    let i = 0;
    // Two rows of A at a time: 6 loads per 8 multiply-adds.
    for (; i + 2 <= m; i += 2) {
      const ai = a + <usize>i * lda, ak = ai + lda;
      let s0 = f32x4.splat(0), s1 = s0, s2 = s0, s3 = s0, t0 = s0, t1 = s0, t2 = s0, t3 = s0;
      for (let p = 0; p < k4; p += 4) {
        const o = <usize>p << 2;
        const x = v128.load(ai + o), y = v128.load(ak + o);
        const w0 = v128.load(b0 + o), w1 = v128.load(b1 + o), w2 = v128.load(b2 + o), w3 = v128.load(b3 + o);
        s0 = madd(x, w0, s0); s1 = madd(x, w1, s1); s2 = madd(x, w2, s2); s3 = madd(x, w3, s3);
        t0 = madd(y, w0, t0); t1 = madd(y, w1, t1); t2 = madd(y, w2, t2); t3 = madd(y, w3, t3);
      }
      let r = hsum4(s0, s1, s2, s3), q = hsum4(t0, t1, t2, t3);
      for (let p = k4; p < k; p++) {
        const o = <usize>p << 2;
        const w = f32x4(load<f32>(b0 + o), load<f32>(b1 + o), load<f32>(b2 + o), load<f32>(b3 + o));
        r = f32x4.add(r, f32x4.mul(f32x4.splat(load<f32>(ai + o)), w));
        q = f32x4.add(q, f32x4.mul(f32x4.splat(load<f32>(ak + o)), w));
      }
      const ci = c + <usize>i * ldc + (<usize>j << 2), ck = ci + ldc;
      if (accumulate) {
        r = f32x4.add(r, v128.load(ci));
        q = f32x4.add(q, v128.load(ck));
      }
      v128.store(ci, r);
      v128.store(ck, q);
    }
    for (; i < m; i++) {
      const ai = a + <usize>i * lda;
      let s0 = f32x4.splat(0), s1 = s0, s2 = s0, s3 = s0;
      for (let p = 0; p < k4; p += 4) {
        const o = <usize>p << 2;
        const x = v128.load(ai + o);
        s0 = madd(x, v128.load(b0 + o), s0);
        s1 = madd(x, v128.load(b1 + o), s1);
        s2 = madd(x, v128.load(b2 + o), s2);
        s3 = madd(x, v128.load(b3 + o), s3);
      }
      let r = hsum4(s0, s1, s2, s3);
      for (let p = k4; p < k; p++) {
        const o = <usize>p << 2;
        const x = load<f32>(ai + o);
        r = f32x4.add(r, f32x4(x * load<f32>(b0 + o), x * load<f32>(b1 + o), x * load<f32>(b2 + o), x * load<f32>(b3 + o)));
      }
      const ci = c + <usize>i * ldc + (<usize>j << 2);
      if (accumulate) r = f32x4.add(r, v128.load(ci));
      v128.store(ci, r);
    }
  }
  for (; j < n; j++) {
    const bj = b + <usize>j * ldb;
    for (let i = 0; i < m; i++) {
      const ai = a + <usize>i * lda;
      let s = f32x4.splat(0);
      for (let p = 0; p < k4; p += 4) s = madd(v128.load(ai + (<usize>p << 2)), v128.load(bj + (<usize>p << 2)), s);
      let t: f32 = f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
      for (let p = k4; p < k; p++) t += load<f32>(ai + (<usize>p << 2)) * load<f32>(bj + (<usize>p << 2));
      const ci = c + <usize>i * ldc + (<usize>j << 2);
      store<f32>(ci, accumulate ? load<f32>(ci) + t : t);
    }
  }
}

// C[i, :] (+)= sum_p A[i, p] B[p, :] for B stored [k, n]: 16 columns at a time, each row of A
// streaming down the rows of B.
// n here is the columns of this call; ldb, ldc (bytes) are the row strides of B and C.
function smallPlainB(a: usize, b: usize, c: usize, m: i32, n: i32, k: i32, ldb: usize, ldc: usize, accumulate: bool): void {
  const lda = <usize>k << 2;
  let j = 0;
  for (; j + 16 <= n; j += 16) {
    for (let i = 0; i < m; i++) {
      const ai = a + <usize>i * lda;
      let bp = b + (<usize>j << 2);
      let s0 = f32x4.splat(0), s1 = s0, s2 = s0, s3 = s0;
      for (let p = 0; p < k; p++) {
        const x = v128.load32_splat(ai + (<usize>p << 2));
        s0 = madd(x, v128.load(bp), s0);
        s1 = madd(x, v128.load(bp, 16), s1);
        s2 = madd(x, v128.load(bp, 32), s2);
        s3 = madd(x, v128.load(bp, 48), s3);
        bp += ldb;
      }
      const ci = c + <usize>i * ldc + (<usize>j << 2);
      if (accumulate) {
        s0 = f32x4.add(s0, v128.load(ci)); s1 = f32x4.add(s1, v128.load(ci, 16));
        s2 = f32x4.add(s2, v128.load(ci, 32)); s3 = f32x4.add(s3, v128.load(ci, 48));
      }
      v128.store(ci, s0); v128.store(ci, s1, 16); v128.store(ci, s2, 32); v128.store(ci, s3, 48);
    }
  }
  for (; j + 4 <= n; j += 4) {
    for (let i = 0; i < m; i++) {
      const ai = a + <usize>i * lda;
      let bp = b + (<usize>j << 2);
      let s = f32x4.splat(0);
      for (let p = 0; p < k; p++) {
        s = madd(v128.load32_splat(ai + (<usize>p << 2)), v128.load(bp), s);
        bp += ldb;
      }
      const ci = c + <usize>i * ldc + (<usize>j << 2);
      if (accumulate) s = f32x4.add(s, v128.load(ci));
      v128.store(ci, s);
    }
  }
  for (; j < n; j++) {
    for (let i = 0; i < m; i++) {
      const ai = a + <usize>i * lda;
      let t: f32 = 0;
      for (let p = 0; p < k; p++) t += load<f32>(ai + (<usize>p << 2)) * load<f32>(b + <usize>p * ldb + (<usize>j << 2));
      const ci = c + <usize>i * ldc + (<usize>j << 2);
      store<f32>(ci, accumulate ? load<f32>(ci) + t : t);
    }
  }
}

// Columns [j0, j0 + nc) of C[m, n] (+)= A @ B (or A @ B^T) without packing.
function smallColumns(a: usize, b: usize, c: usize, m: i32, n: i32, k: i32, transB: bool, accumulate: bool, j0: i32, nc: i32): void {
  const ldc = <usize>n << 2;
  const cj = c + (<usize>j0 << 2);
  if (k == 0) {
    if (!accumulate) for (let i = 0; i < m; i++) memory.fill(cj + <usize>i * ldc, 0, <usize>nc << 2);
  } else if (transB) smallTransB(a, b + <usize>j0 * (<usize>k << 2), cj, m, nc, k, ldc, accumulate);
  else smallPlainB(a, b + (<usize>j0 << 2), cj, m, nc, k, ldc, ldc, accumulate);
}

/**
 * Batched C = A @ B (or A @ B^T when transB) for A stored [m, k] (not transposed), without
 * packing: meant for few rows (m small), where packing B would cost more than the product.
 * aOffs/bOffs hold `batch` u32 element offsets; C is [batch, m, n] contiguous.
 */
export function matmulSmall(
  a: usize, b: usize, c: usize, aOffs: usize, bOffs: usize, batch: i32, m: i32, n: i32, k: i32, transB: i32, accumulate: i32,
): void {
  const cStride = <usize>m * <usize>n * 4;
  for (let bi = 0; bi < batch; bi++) {
    const ab = a + (<usize>load<u32>(aOffs + (<usize>bi << 2)) << 2);
    const bb = b + (<usize>load<u32>(bOffs + (<usize>bi << 2)) << 2);
    smallColumns(ab, bb, c + <usize>bi * cStride, m, n, k, transB != 0, accumulate != 0, 0, n);
  }
}
