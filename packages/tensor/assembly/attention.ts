// Attention of a serving step's tokens over their sequences' key/value caches, every sequence in
// one call: a decode row costs its dot products, not a matmul call, a softmax call and the
// copies between them per row.

import { madd, loadPartial, storePartial, splat, hmax, expSum } from './simd';

// @ts-ignore: decorator
@inline
function dot(a: usize, b: usize, n: i32): f32 {
  let s0 = f32x4.splat(0), s1 = s0;
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const off = <usize>i << 2;
    s0 = madd(v128.load(a + off), v128.load(b + off), s0);
    s1 = madd(v128.load(a + off, 16), v128.load(b + off, 16), s1);
  }
  for (; i < n; i += 4) {
    const off = <usize>i << 2;
    s0 = madd(loadPartial(a + off, n - i), loadPartial(b + off, n - i), s0);
  }
  const s = f32x4.add(s0, s1);
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}

/** Lane sums of four vectors, as one vector [sum(a), sum(b), sum(c), sum(d)]. */
// @ts-ignore: decorator
@inline
function sums4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = f32x4.add(v128.shuffle<f32>(a, b, 0, 4, 1, 5), v128.shuffle<f32>(a, b, 2, 6, 3, 7));
  const cd = f32x4.add(v128.shuffle<f32>(c, d, 0, 4, 1, 5), v128.shuffle<f32>(c, d, 2, 6, 3, 7));
  return f32x4.add(v128.shuffle<f32>(ab, cd, 0, 1, 4, 5), v128.shuffle<f32>(ab, cd, 2, 3, 6, 7));
}

/** scores[j] = scale * q . k_j for j < n, four keys at a time (each q load serves four); returns the max. */
// @ts-ignore: decorator
@inline
function scoreKeys(q: usize, keys: usize, n: i32, dh: i32, scale: f32, scores: usize): f32 {
  const rowBytes = <usize>dh << 2;
  const sv = splat(scale);
  let mv = splat(-Infinity);
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const k0 = keys + <usize>j * rowBytes, k1 = k0 + rowBytes, k2 = k1 + rowBytes, k3 = k2 + rowBytes;
    let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
    for (let c = 0; c < dh; c += 4) {
      const off = <usize>c << 2, left = dh - c;
      const qv = loadPartial(q + off, left);
      a0 = madd(qv, loadPartial(k0 + off, left), a0);
      a1 = madd(qv, loadPartial(k1 + off, left), a1);
      a2 = madd(qv, loadPartial(k2 + off, left), a2);
      a3 = madd(qv, loadPartial(k3 + off, left), a3);
    }
    const s = f32x4.mul(sums4(a0, a1, a2, a3), sv);
    v128.store(scores + (<usize>j << 2), s);
    mv = f32x4.pmax(mv, s);
  }
  let mx = hmax(mv);
  for (; j < n; j++) {
    const s = dot(q, keys + <usize>j * rowBytes, dh) * scale;
    store<f32>(scores + (<usize>j << 2), s);
    if (mx < s) mx = s;
  }
  return mx;
}

/** o[0..dh) = scale * sum_j w[j] * v_j over j < n, 16 columns at a time held in registers. */
// @ts-ignore: decorator
@inline
function weightValues(w: usize, scale: f32, vals: usize, n: i32, dh: i32, o: usize): void {
  const rowBytes = <usize>dh << 2;
  let c = 0;
  for (; c + 16 <= dh; c += 16) {
    const off = <usize>c << 2;
    let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
    for (let j = 0; j < n; j++) {
      const x = splat(load<f32>(w + (<usize>j << 2)) * scale);
      const v = vals + <usize>j * rowBytes + off;
      a0 = madd(v128.load(v), x, a0);
      a1 = madd(v128.load(v, 16), x, a1);
      a2 = madd(v128.load(v, 32), x, a2);
      a3 = madd(v128.load(v, 48), x, a3);
    }
    v128.store(o + off, a0);
    v128.store(o + off, a1, 16);
    v128.store(o + off, a2, 32);
    v128.store(o + off, a3, 48);
  }
  for (; c < dh; c += 4) {
    const off = <usize>c << 2, left = dh - c;
    let a = f32x4.splat(0);
    for (let j = 0; j < n; j++) a = madd(loadPartial(vals + <usize>j * rowBytes + off, left), splat(load<f32>(w + (<usize>j << 2)) * scale), a);
    storePartial(o + off, a, left);
  }
}

/**
 * Attention of one segment's tokens: seg points at its 6 table words [kCache, vCache (byte
 * pointers to [kvHeads, capacity, dh]), capacity, start, tokens, first row]; token t sees cached
 * positions 0..start + t. q, out: [S, heads, dh]; scores: scratch of start + tokens floats.
 */
function attendSegment(q: usize, seg: usize, heads: i32, kvHeads: i32, dh: i32, scale: f32, out: usize, scores: usize): void {
  const group = heads / kvHeads;
  const rowBytes = <usize>dh << 2;
  const kc = <usize>load<u32>(seg), vc = <usize>load<u32>(seg, 4), cap = <usize>load<u32>(seg, 8);
  const start = load<i32>(seg, 12), tokens = load<i32>(seg, 16), first = load<i32>(seg, 20);
  for (let tok = 0; tok < tokens; tok++) {
    const visible = start + tok + 1, row = first + tok;
    for (let hq = 0; hq < heads; hq++) {
      const qr = q + <usize>(row * heads + hq) * rowBytes;
      const o = out + <usize>(row * heads + hq) * rowBytes;
      const headOff = <usize>(hq / group) * cap * rowBytes;
      const mx = scoreKeys(qr, kc + headOff, visible, dh, scale, scores);
      // Exponentials in place (summed in float64), then out = sum_j e_j v_j / sum_j e_j.
      const inv = <f32>(1.0 / expSum(scores, visible, mx, scores, true));
      weightValues(scores, inv, vc + headOff, visible, dh, o);
    }
  }
}

/**
 * Takes segments of the attention job at `job` until none are left (the calling thread and any
 * worker threads share it through the atomic counter). Job words: [q, table, segments, heads,
 * kvHeads, dh, scale (f32), out, next (atomic), done (atomic)]; table: 6 words per segment (see
 * attendSegment). Returns the segments this thread took.
 */
export function attendWork(job: usize, scores: usize): i32 {
  const q = <usize>load<u32>(job), table = <usize>load<u32>(job, 4), n = load<i32>(job, 8);
  const heads = load<i32>(job, 12), kvHeads = load<i32>(job, 16), dh = load<i32>(job, 20);
  const scale = load<f32>(job, 24), out = <usize>load<u32>(job, 28);
  let mine = 0;
  for (;;) {
    const i = atomic.add<i32>(job + 32, 1);
    if (i >= n) break;
    attendSegment(q, table + <usize>i * 24, heads, kvHeads, dh, scale, out, scores);
    if (atomic.add<i32>(job + 36, 1) + 1 == n) atomic.notify(job + 36);
    mine++;
  }
  return mine;
}

/** table: n runs of 4 u32 [src, dst, srcStride, dstStride] (bytes); each copies `blocks` blocks of `bytes` bytes. */
export function copyRuns(table: usize, n: i32, bytes: i32, blocks: i32): void {
  for (let j = 0; j < n; j++) {
    const t = table + (<usize>j << 4);
    let s = <usize>load<u32>(t), d = <usize>load<u32>(t, 4);
    const ss = <usize>load<u32>(t, 8), ds = <usize>load<u32>(t, 12);
    for (let b = 0; b < blocks; b++) {
      memory.copy(d, s, <usize>bytes);
      s += ss;
      d += ds;
    }
  }
}
