// Row-wise kernels (softmax, norms, cross-entropy), reductions and the AdamW update.
// Sums accumulate in float64 (f64x2 lanes) so long rows keep float32 accuracy.

import { splat, madd, loadPartial, storePartial, widenAdd, hsum64, hmax, exp4, log4, expSum, lanesBelow, scaleShift } from './simd';

// Scalar log through the vector one (std's Math.log would add lookup tables to static data).
// @ts-ignore: decorator
@inline
function logf(x: f64): f64 {
  return <f64>f32x4.extract_lane(log4(f32x4.splat(<f32>x)), 0);
}

// @ts-ignore: decorator
@inline
function rowMax(x: usize, n: i32): f32 {
  let m0 = splat(-Infinity), m1 = m0;
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const off = <usize>i << 2;
    // pmax(m, v) = m < v ? v : m: NaN is skipped, as in the JS kernels.
    m0 = f32x4.pmax(m0, v128.load(x + off));
    m1 = f32x4.pmax(m1, v128.load(x + off, 16));
  }
  let m = hmax(f32x4.pmax(m0, m1));
  for (; i < n; i++) {
    const v = load<f32>(x + (<usize>i << 2));
    if (m < v) m = v;
  }
  return m;
}

// @ts-ignore: decorator
@inline
function rowSum(x: usize, n: i32): f64 {
  let acc = f64x2.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) acc = widenAdd(acc, v128.load(x + (<usize>i << 2)));
  let s = hsum64(acc);
  for (; i < n; i++) s += <f64>load<f32>(x + (<usize>i << 2));
  return s;
}

/** Row-wise softmax (log = false) or log-softmax of x [rows, cols]. */
export function softmax(x: usize, rows: i32, cols: i32, log: bool, o: usize): void {
  const rb = <usize>cols << 2;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * rb, or = o + <usize>r * rb;
    let mx = rowMax(xr, cols);
    if (mx == -Infinity) mx = 0; // fully masked row: uniform softmax, -inf log-softmax
    if (log) {
      // (x - max) - log(sum): both terms are small near the max, so no cancellation against lse.
      const ls = splat(<f32>logf(expSum(xr, cols, mx, 0, false)));
      const m = splat(mx);
      for (let i = 0; i < cols; i += 4) {
        const off = <usize>i << 2;
        storePartial(or + off, f32x4.sub(f32x4.sub(loadPartial(xr + off, cols - i), m), ls), cols - i);
      }
    } else {
      const s = expSum(xr, cols, mx, or, true);
      const inv = <f32>(1.0 / s);
      scaleShift(or, inv, 0, or, cols);
    }
  }
}

/**
 * softmax(scale * x + causal mask) of x [rows, cols]: row r is query position r % period and sees
 * columns c <= offset + r % period; the other columns get 0. scale > 0.
 */
export function causalSoftmax(x: usize, rows: i32, cols: i32, scale: f32, period: i32, offset: i32, o: usize): void {
  const rb = <usize>cols << 2;
  const sv = splat(scale);
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * rb, or = o + <usize>r * rb;
    const visible = max(0, min(cols, offset + r % period + 1));
    if (visible > 0) {
      const m = splat(rowMax(xr, visible) * scale);
      let acc = f64x2.splat(0);
      let i = 0;
      for (; i + 4 <= visible; i += 4) {
        const off = <usize>i << 2;
        const e = exp4(f32x4.sub(f32x4.mul(v128.load(xr + off), sv), m));
        v128.store(or + off, e);
        acc = widenAdd(acc, e);
      }
      if (i < visible) {
        const off = <usize>i << 2;
        const e = v128.and(exp4(f32x4.sub(f32x4.mul(loadPartial(xr + off, visible - i), sv), m)), lanesBelow(visible - i));
        storePartial(or + off, e, visible - i);
        acc = widenAdd(acc, e);
      }
      scaleShift(or, <f32>(1.0 / hsum64(acc)), 0, or, visible);
    }
    if (visible < cols) memory.fill(or + (<usize>visible << 2), 0, <usize>(cols - visible) << 2);
  }
}

/** dx from y = (log)softmax(x) and dy. */
export function softmaxGrad(y: usize, dy: usize, rows: i32, cols: i32, log: bool, dx: usize): void {
  const rb = <usize>cols << 2;
  for (let r = 0; r < rows; r++) {
    const yr = y + <usize>r * rb, gr = dy + <usize>r * rb, dr = dx + <usize>r * rb;
    if (log) {
      const s = splat(<f32>rowSum(gr, cols));
      for (let i = 0; i < cols; i += 4) {
        const off = <usize>i << 2, k = cols - i;
        const v = f32x4.sub(loadPartial(gr + off, k), f32x4.mul(exp4(loadPartial(yr + off, k)), s));
        storePartial(dr + off, v, k);
      }
    } else {
      let acc = f64x2.splat(0);
      for (let i = 0; i < cols; i += 4) {
        const off = <usize>i << 2, k = cols - i;
        acc = widenAdd(acc, f32x4.mul(loadPartial(gr + off, k), loadPartial(yr + off, k)));
      }
      const s = splat(<f32>hsum64(acc));
      for (let i = 0; i < cols; i += 4) {
        const off = <usize>i << 2, k = cols - i;
        const yv = loadPartial(yr + off, k);
        storePartial(dr + off, f32x4.mul(yv, f32x4.sub(loadPartial(gr + off, k), s)), k);
      }
    }
  }
}

/** LayerNorm over the last axis; w, b may be 0 (absent). Writes mean and rstd per row. */
export function layerNorm(x: usize, w: usize, b: usize, rows: i32, cols: i32, eps: f64, o: usize, mean: usize, rstd: usize): void {
  const rb = <usize>cols << 2;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * rb, or = o + <usize>r * rb;
    const mu = rowSum(xr, cols) / <f64>cols;
    const m = splat(<f32>mu);
    let acc = f64x2.splat(0);
    let i = 0;
    for (; i + 4 <= cols; i += 4) {
      const d = f32x4.sub(v128.load(xr + (<usize>i << 2)), m);
      acc = widenAdd(acc, f32x4.mul(d, d));
    }
    let v = hsum64(acc);
    for (; i < cols; i++) {
      const d = <f64>load<f32>(xr + (<usize>i << 2)) - mu;
      v += d * d;
    }
    const rs = 1.0 / Math.sqrt(v / <f64>cols + eps);
    store<f32>(mean + (<usize>r << 2), <f32>mu);
    store<f32>(rstd + (<usize>r << 2), <f32>rs);
    const rsv = splat(<f32>rs);
    for (let j = 0; j < cols; j += 4) {
      const off = <usize>j << 2, k = cols - j;
      let yv = f32x4.mul(f32x4.sub(loadPartial(xr + off, k), m), rsv);
      if (w) yv = f32x4.mul(yv, loadPartial(w + off, k));
      if (b) yv = f32x4.add(yv, loadPartial(b + off, k));
      storePartial(or + off, yv, k);
    }
  }
}

/** LayerNorm backward: dx, and dw/db accumulated (+=) when non-zero. */
export function layerNormGrad(x: usize, w: usize, mean: usize, rstd: usize, dy: usize, rows: i32, cols: i32, dx: usize, dw: usize, db: usize): void {
  const rb = <usize>cols << 2;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * rb, gr = dy + <usize>r * rb, dr = dx + <usize>r * rb;
    const mu = splat(load<f32>(mean + (<usize>r << 2)));
    const rs = splat(load<f32>(rstd + (<usize>r << 2)));
    let ag = f64x2.splat(0), agx = f64x2.splat(0);
    for (let j = 0; j < cols; j += 4) {
      const off = <usize>j << 2, k = cols - j;
      const gy = loadPartial(gr + off, k);
      const xh = f32x4.mul(f32x4.sub(loadPartial(xr + off, k), mu), rs);
      const g = w ? f32x4.mul(gy, loadPartial(w + off, k)) : gy;
      const keep = lanesBelow(k);
      ag = widenAdd(ag, g);
      agx = widenAdd(agx, v128.and(f32x4.mul(g, xh), keep));
      if (dw) storePartial(dw + off, madd(gy, xh, loadPartial(dw + off, k)), k);
      if (db) storePartial(db + off, f32x4.add(loadPartial(db + off, k), gy), k);
    }
    const sg = splat(<f32>(hsum64(ag) / <f64>cols));
    const sgx = splat(<f32>(hsum64(agx) / <f64>cols));
    for (let j = 0; j < cols; j += 4) {
      const off = <usize>j << 2, k = cols - j;
      const gy = loadPartial(gr + off, k);
      const xh = f32x4.mul(f32x4.sub(loadPartial(xr + off, k), mu), rs);
      const g = w ? f32x4.mul(gy, loadPartial(w + off, k)) : gy;
      storePartial(dr + off, f32x4.mul(rs, f32x4.sub(f32x4.sub(g, sg), f32x4.mul(xh, sgx))), k);
    }
  }
}

// @ts-ignore: decorator
@inline
function rmsScale(w: usize, off: usize, k: i32, addOne: bool): v128 {
  if (!w) return splat(1.0);
  const wv = loadPartial(w + off, k);
  return addOne ? f32x4.add(wv, splat(1.0)) : wv;
}

/** RMSNorm over the last axis: y = x * rstd * (w, or 1 + w when addOne; 1 when w is 0). */
export function rmsNorm(x: usize, w: usize, rows: i32, cols: i32, eps: f64, addOne: bool, o: usize, rstd: usize): void {
  const rb = <usize>cols << 2;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * rb, or = o + <usize>r * rb;
    let acc = f64x2.splat(0);
    for (let j = 0; j < cols; j += 4) {
      const v = loadPartial(xr + (<usize>j << 2), cols - j);
      acc = widenAdd(acc, f32x4.mul(v, v));
    }
    const rs = <f32>(1.0 / Math.sqrt(hsum64(acc) / <f64>cols + eps));
    store<f32>(rstd + (<usize>r << 2), rs);
    const rsv = splat(rs);
    for (let j = 0; j < cols; j += 4) {
      const off = <usize>j << 2, k = cols - j;
      storePartial(or + off, f32x4.mul(f32x4.mul(loadPartial(xr + off, k), rsv), rmsScale(w, off, k, addOne)), k);
    }
  }
}

export function rmsNormGrad(x: usize, w: usize, rstd: usize, dy: usize, rows: i32, cols: i32, addOne: bool, dx: usize, dw: usize): void {
  const rb = <usize>cols << 2;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * rb, gr = dy + <usize>r * rb, dr = dx + <usize>r * rb;
    const rsf = load<f32>(rstd + (<usize>r << 2));
    const rs = splat(rsf);
    let acc = f64x2.splat(0);
    for (let j = 0; j < cols; j += 4) {
      const off = <usize>j << 2, k = cols - j;
      const gy = loadPartial(gr + off, k), xv = loadPartial(xr + off, k);
      acc = widenAdd(acc, f32x4.mul(f32x4.mul(gy, rmsScale(w, off, k, addOne)), xv));
      if (dw) storePartial(dw + off, madd(f32x4.mul(gy, xv), rs, loadPartial(dw + off, k)), k);
    }
    const rs64 = <f64>rsf;
    const c = splat(<f32>(hsum64(acc) * rs64 * rs64 * rs64 / <f64>cols));
    for (let j = 0; j < cols; j += 4) {
      const off = <usize>j << 2, k = cols - j;
      const gy = loadPartial(gr + off, k), xv = loadPartial(xr + off, k);
      const v = f32x4.sub(f32x4.mul(f32x4.mul(gy, rmsScale(w, off, k, addOne)), rs), f32x4.mul(xv, c));
      storePartial(dr + off, v, k);
    }
  }
}

/** Per-row loss and log-sum-exp; targets is an Int32 array in memory. */
export function crossEntropy(logits: usize, targets: usize, rows: i32, vocab: i32, ignoreIndex: i32, loss: usize, lse: usize): void {
  const rb = <usize>vocab << 2;
  for (let r = 0; r < rows; r++) {
    const xr = logits + <usize>r * rb;
    const mx = rowMax(xr, vocab);
    const s = expSum(xr, vocab, mx, 0, false);
    const l = <f64>mx + logf(s);
    store<f32>(lse + (<usize>r << 2), <f32>l);
    const t = load<i32>(targets + (<usize>r << 2));
    store<f32>(loss + (<usize>r << 2), t == ignoreIndex ? 0 : <f32>(l - <f64>load<f32>(xr + (<usize>t << 2))));
  }
}

export function crossEntropyGrad(logits: usize, targets: usize, lse: usize, dloss: usize, rows: i32, vocab: i32, ignoreIndex: i32, dlogits: usize): void {
  const rb = <usize>vocab << 2;
  for (let r = 0; r < rows; r++) {
    const xr = logits + <usize>r * rb, dr = dlogits + <usize>r * rb;
    const t = load<i32>(targets + (<usize>r << 2));
    if (t == ignoreIndex) {
      memory.fill(dr, 0, rb);
      continue;
    }
    const gf = load<f32>(dloss + (<usize>r << 2));
    const g = splat(gf);
    const l = splat(load<f32>(lse + (<usize>r << 2)));
    for (let j = 0; j < vocab; j += 4) {
      const off = <usize>j << 2, k = vocab - j;
      storePartial(dr + off, f32x4.mul(g, exp4(f32x4.sub(loadPartial(xr + off, k), l))), k);
    }
    const tp = dr + (<usize>t << 2);
    store<f32>(tp, load<f32>(tp) - gf);
  }
}

/** Sum of x viewed as [outer, r, inner] over r; acc is scratch for inner f64s. */
export function reduceSum(x: usize, outer: i32, r: i32, inner: i32, o: usize, acc: usize): void {
  if (inner == 1) {
    const rb = <usize>r << 2;
    for (let i = 0; i < outer; i++) store<f32>(o + (<usize>i << 2), <f32>rowSum(x + <usize>i * rb, r));
    return;
  }
  const ib = <usize>inner << 2;
  for (let q = 0; q < outer; q++) {
    memory.fill(acc, 0, <usize>inner << 3);
    let xp = x + <usize>q * <usize>r * ib;
    for (let j = 0; j < r; j++) {
      let i = 0;
      for (; i + 4 <= inner; i += 4) {
        const v = v128.load(xp + (<usize>i << 2));
        const a = acc + (<usize>i << 3);
        v128.store(a, f64x2.add(v128.load(a), f64x2.promote_low_f32x4(v)));
        v128.store(a, f64x2.add(v128.load(a, 16), f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 2, 3))), 16);
      }
      for (; i < inner; i++) {
        const a = acc + (<usize>i << 3);
        store<f64>(a, load<f64>(a) + <f64>load<f32>(xp + (<usize>i << 2)));
      }
      xp += ib;
    }
    const op = o + <usize>q * ib;
    for (let i = 0; i < inner; i++) store<f32>(op + (<usize>i << 2), <f32>load<f64>(acc + (<usize>i << 3)));
  }
}

/** Sum of squares in float64. */
export function sumSquares(x: usize, n: i32): f64 {
  let a0 = f64x2.splat(0), a1 = a0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(x + (<usize>i << 2));
    const lo = f64x2.promote_low_f32x4(v), hi = f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 2, 3));
    a0 = f64x2.add(a0, f64x2.mul(lo, lo));
    a1 = f64x2.add(a1, f64x2.mul(hi, hi));
  }
  let s = hsum64(f64x2.add(a0, a1));
  for (; i < n; i++) {
    const v = <f64>load<f32>(x + (<usize>i << 2));
    s += v * v;
  }
  return s;
}

/** One AdamW step in place on p, m, v. */
export function adamw(
  p: usize, g: usize, m: usize, v: usize, n: i32,
  lr: f32, beta1: f32, beta2: f32, eps: f32, weightDecay: f32, bc1: f32, bc2: f32, gradScale: f32,
): void {
  const b1 = splat(beta1), c1 = splat(1 - beta1), b2 = splat(beta2), c2 = splat(1 - beta2);
  const ib1 = splat(1 / bc1), ib2 = splat(1 / bc2), e = splat(eps), wd = splat(weightDecay);
  const nlr = splat(-lr), gs = splat(gradScale);
  for (let i = 0; i < n; i += 4) {
    const off = <usize>i << 2, k = n - i;
    const gi = f32x4.mul(loadPartial(g + off, k), gs);
    const mi = madd(b1, loadPartial(m + off, k), f32x4.mul(c1, gi));
    const vi = madd(b2, loadPartial(v + off, k), f32x4.mul(c2, f32x4.mul(gi, gi)));
    const pi = loadPartial(p + off, k);
    const step = madd(wd, pi, f32x4.div(f32x4.mul(mi, ib1), f32x4.add(f32x4.sqrt(f32x4.mul(vi, ib2)), e)));
    storePartial(m + off, mi, k);
    storePartial(v + off, vi, k);
    storePartial(p + off, madd(nlr, step, pi), k);
  }
}
