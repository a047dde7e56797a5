// GotoBLAS-style float32 matmul: B packed into 16-column k-major panels, A into 2-row panels,
// a 2x16 micro-kernel with 8 f32x4 accumulators (more spill in V8), no k-loop unrolling.

const KC: i32 = 256; // k block: a 16 x KC panel of B (16 KiB) stays in L1
const MC: i32 = 64; // rows of A per packed block (even): MC x KC (64 KiB) stays in L2
const NC: i32 = 2048; // columns of B per packed block (multiple of 16)

const PACK_A_BYTES: usize = <usize>(MC * KC * 4);
const PACK_B_BYTES: usize = <usize>(NC * KC * 4);
const TILE_BYTES: usize = 2 * 16 * 4;

/** Bytes of scratch one thread needs for matmulBatch. */
export function matmulScratchBytes(): usize {
  return PACK_A_BYTES + PACK_B_BYTES + TILE_BYTES;
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
    } else {
      // b is [n, k]: column j of B is row j of b, contiguous along p.
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

// C[0:2, 0:16] = (add ? C : 0) + Apanel @ Bpanel. ldc in bytes.
// @ts-ignore: decorator
@inline
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
  for (let p = 0; p < kc; p++) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    const b2 = v128.load(pb, 32);
    const b3 = v128.load(pb, 48);
    const a0 = v128.load32_splat(pa);
    const a1 = v128.load32_splat(pa, 4);
    c00 = f32x4.add(c00, f32x4.mul(a0, b0));
    c01 = f32x4.add(c01, f32x4.mul(a0, b1));
    c02 = f32x4.add(c02, f32x4.mul(a0, b2));
    c03 = f32x4.add(c03, f32x4.mul(a0, b3));
    c10 = f32x4.add(c10, f32x4.mul(a1, b0));
    c11 = f32x4.add(c11, f32x4.mul(a1, b1));
    c12 = f32x4.add(c12, f32x4.mul(a1, b2));
    c13 = f32x4.add(c13, f32x4.mul(a1, b3));
    pa += 8;
    pb += 64;
  }
  v128.store(c, c00); v128.store(c, c01, 16); v128.store(c, c02, 32); v128.store(c, c03, 48);
  v128.store(c1, c10); v128.store(c1, c11, 16); v128.store(c1, c12, 32); v128.store(c1, c13, 48);
}

function microFull(pa: usize, pb: usize, kc: i32, c: usize, ldc: usize, add: bool): void {
  if (add) micro(pa, pb, kc, c, ldc, true);
  else micro(pa, pb, kc, c, ldc, false);
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

/**
 * C[r0:r1, c0:c1] (+)= A[r0:r1, :] @ B[:, c0:c1] for one matrix. C is [m, n]; A is [m, k]
 * ([k, m] when transA); B is [k, n] ([n, k] when transB). Pointers in bytes.
 */
export function matmulBlock(
  a: usize, b: usize, c: usize, m: i32, n: i32, k: i32, transA: bool, transB: bool, accumulate: bool,
  r0: i32, r1: i32, c0: i32, c1: i32, scratch: usize,
): void {
  if (r1 <= r0 || c1 <= c0) return;
  const ldc = <usize>n * 4;
  if (k <= 0) {
    if (!accumulate) {
      for (let i = r0; i < r1; i++) memory.fill(c + <usize>i * ldc + (<usize>c0 << 2), 0, <usize>(c1 - c0) * 4);
    }
    return;
  }
  const pA = scratch;
  const pB = scratch + PACK_A_BYTES;
  const tile = pB + PACK_B_BYTES;
  for (let jc = c0; jc < c1; jc += NC) {
    const nc = min(NC, c1 - jc);
    for (let pc = 0; pc < k; pc += KC) {
      const kc = min(KC, k - pc);
      const add = accumulate || pc > 0;
      packB(b, n, k, transB, pc, kc, jc, nc, pB);
      for (let ic = r0; ic < r1; ic += MC) {
        const mc = min(MC, r1 - ic);
        packA(a, m, k, transA, ic, mc, pc, kc, pA);
        for (let jr = 0; jr < nc; jr += 16) {
          const w = min(16, nc - jr);
          const pb = pB + <usize>(jr * kc) * 4;
          let cc = c + <usize>ic * ldc + (<usize>(jc + jr) << 2);
          for (let ir = 0; ir < mc; ir += 2) {
            const h = min(2, mc - ir);
            const pa = pA + <usize>(ir * kc) * 4;
            if (h == 2 && w == 16) microFull(pa, pb, kc, cc, ldc, add);
            else microEdge(pa, pb, kc, cc, ldc, h, w, add, tile);
            cc += ldc * 2;
          }
        }
      }
    }
  }
}

/**
 * matmulBlock over batches [b0, b1): batch i reads a at element offset aOff[i] and b at bOff[i]
 * (Int32 arrays in memory) and writes c at i*m*n.
 */
export function matmulBatch(
  a: usize, b: usize, c: usize, aOff: usize, bOff: usize, b0: i32, b1: i32, m: i32, n: i32, k: i32,
  transA: bool, transB: bool, accumulate: bool, r0: i32, r1: i32, c0: i32, c1: i32, scratch: usize,
): void {
  const cStride = <usize>m * <usize>n * 4;
  for (let i = b0; i < b1; i++) {
    const ao = <usize>load<u32>(aOff + (<usize>i << 2)) << 2;
    const bo = <usize>load<u32>(bOff + (<usize>i << 2)) << 2;
    matmulBlock(a + ao, b + bo, c + <usize>i * cStride, m, n, k, transA, transB, accumulate, r0, r1, c0, c1, scratch);
  }
}
