// Vector helpers shared by the kernels. Polynomial approximations follow Cephes (float32),
// accurate to a few ulp.

// @ts-ignore: decorator
@inline
export function splat(x: f32): v128 {
  return f32x4.splat(x);
}

/** a * b + c; fused when the module is built with relaxed SIMD. */
// @ts-ignore: decorator
@inline
export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/** Loads up to 4 floats; missing lanes are 0. */
// @ts-ignore: decorator
@inline
export function loadPartial(p: usize, n: i32): v128 {
  if (n >= 4) return v128.load(p);
  let v = v128.load32_zero(p);
  if (n > 1) v = v128.load32_lane(p + 4, v, 1);
  if (n > 2) v = v128.load32_lane(p + 8, v, 2);
  return v;
}

/** Stores the first n (< 4 allowed) lanes. */
// @ts-ignore: decorator
@inline
export function storePartial(p: usize, v: v128, n: i32): void {
  if (n >= 4) {
    v128.store(p, v);
    return;
  }
  v128.store32_lane(p, v, 0);
  if (n > 1) v128.store32_lane(p + 4, v, 1);
  if (n > 2) v128.store32_lane(p + 8, v, 2);
}

/** Sum of the four lanes, widened: (lo pair, hi pair) added as f64x2. */
// @ts-ignore: decorator
@inline
export function widenAdd(acc: v128, v: v128): v128 {
  return f64x2.add(f64x2.add(acc, f64x2.promote_low_f32x4(v)), f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 2, 3)));
}

// @ts-ignore: decorator
@inline
export function hsum64(acc: v128): f64 {
  return f64x2.extract_lane(acc, 0) + f64x2.extract_lane(acc, 1);
}

// @ts-ignore: decorator
@inline
export function hmax(v: v128): f32 {
  const a = f32x4.pmax(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  const b = f32x4.extract_lane(a, 0), c = f32x4.extract_lane(a, 1);
  return b < c ? c : b;
}

/** e^x. Two-step 2^n scaling keeps huge and tiny results (inf, denormals, 0) right. */
// @ts-ignore: decorator
@inline
export function exp4(x: v128): v128 {
  // pmin/pmax are single instructions (min/max need NaN fix-ups); NaN passes through them here.
  x = f32x4.pmin(f32x4.pmax(x, splat(-104.0)), splat(89.0));
  // n = round(x / ln 2) via the 1.5 * 2^23 trick: no floor or float-to-int conversion needed.
  const t = madd(x, splat(1.44269504088896341), splat(12582912.0));
  const fx = f32x4.sub(t, splat(12582912.0));
  let r = madd(fx, splat(-0.693359375), x);
  r = madd(fx, splat(2.12194440e-4), r);
  let p = splat(1.9875691500e-4);
  p = madd(p, r, splat(1.3981999507e-3));
  p = madd(p, r, splat(8.3334519073e-3));
  p = madd(p, r, splat(4.1665795894e-2));
  p = madd(p, r, splat(1.6666665459e-1));
  p = madd(p, r, splat(5.0000001201e-1));
  p = madd(p, f32x4.mul(r, r), f32x4.add(r, splat(1.0)));
  const n = i32x4.sub(t, i32x4.splat(0x4b400000));
  const n1 = i32x4.shr_s(n, 1);
  const n2 = i32x4.sub(n, n1);
  const s1 = i32x4.shl(i32x4.add(n1, i32x4.splat(127)), 23);
  const s2 = i32x4.shl(i32x4.add(n2, i32x4.splat(127)), 23);
  return f32x4.mul(f32x4.mul(p, s1), s2);
}

/** Natural log; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf. */
// @ts-ignore: decorator
@inline
export function log4(x0: v128): v128 {
  const tiny = f32x4.lt(x0, splat(1.17549435e-38));
  const x = v128.bitselect(f32x4.mul(x0, splat(8388608.0)), x0, tiny); // scale denormals by 2^23
  let e = i32x4.sub(i32x4.shr_u(x, 23), i32x4.splat(126));
  e = i32x4.sub(e, v128.and(tiny, i32x4.splat(23)));
  let m = v128.or(v128.and(x, i32x4.splat(0x007fffff)), i32x4.splat(0x3f000000)); // [0.5, 1)
  const lo = f32x4.lt(m, splat(0.707106781186547524));
  e = i32x4.add(e, lo); // lo lanes are -1
  m = f32x4.sub(f32x4.add(m, v128.and(m, lo)), splat(1.0));
  const fe = f32x4.convert_i32x4_s(e);
  const z = f32x4.mul(m, m);
  let y = splat(7.0376836292e-2);
  y = madd(y, m, splat(-1.1514610310e-1));
  y = madd(y, m, splat(1.1676998740e-1));
  y = madd(y, m, splat(-1.2420140846e-1));
  y = madd(y, m, splat(1.4249322787e-1));
  y = madd(y, m, splat(-1.6668057665e-1));
  y = madd(y, m, splat(2.0000714765e-1));
  y = madd(y, m, splat(-2.4999993993e-1));
  y = madd(y, m, splat(3.3333331174e-1));
  y = f32x4.mul(f32x4.mul(y, m), z);
  y = madd(fe, splat(-2.12194440e-4), y);
  y = madd(z, splat(-0.5), y);
  let r = f32x4.add(m, y);
  r = madd(fe, splat(0.693359375), r);
  // Special values: 0 -> -inf, negative -> NaN, inf and NaN pass through.
  r = v128.bitselect(splat(-Infinity), r, f32x4.eq(x0, splat(0)));
  r = v128.bitselect(splat(NaN), r, f32x4.lt(x0, splat(0)));
  const pass = v128.or(f32x4.ne(x0, x0), f32x4.eq(x0, splat(Infinity)));
  return v128.bitselect(x0, r, pass);
}

/** tanh: odd polynomial near 0 (keeps relative accuracy), 1 - 2 / (e^2|x| + 1) elsewhere. */
// @ts-ignore: decorator
@inline
export function tanh4(x: v128): v128 {
  const ax = f32x4.abs(x);
  const z = f32x4.mul(x, x);
  let p = splat(-5.70498872745e-3);
  p = madd(p, z, splat(2.06390887954e-2));
  p = madd(p, z, splat(-5.37397155531e-2));
  p = madd(p, z, splat(1.33314422036e-1));
  p = madd(p, z, splat(-3.33332819422e-1));
  const small = madd(f32x4.mul(p, z), x, x);
  const e = exp4(f32x4.add(ax, ax));
  const big = f32x4.sub(splat(1.0), f32x4.div(splat(2.0), f32x4.add(e, splat(1.0))));
  const signed = v128.or(big, v128.and(x, i32x4.splat(0x80000000)));
  return v128.bitselect(small, signed, f32x4.lt(ax, splat(0.625)));
}

// @ts-ignore: decorator
@inline
export function sigmoid4(x: v128): v128 {
  return f32x4.div(splat(1.0), f32x4.add(splat(1.0), exp4(f32x4.neg(x))));
}

/** erfc(z) for z >= 0 (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7). */
// @ts-ignore: decorator
@inline
export function erfcPos4(z: v128): v128 {
  const t = f32x4.div(splat(1.0), madd(z, splat(0.5), splat(1.0)));
  let p = splat(0.17087277);
  p = madd(p, t, splat(-0.82215223));
  p = madd(p, t, splat(1.48851587));
  p = madd(p, t, splat(-1.13520398));
  p = madd(p, t, splat(0.27886807));
  p = madd(p, t, splat(-0.18628806));
  p = madd(p, t, splat(0.09678418));
  p = madd(p, t, splat(0.37409196));
  p = madd(p, t, splat(1.00002368));
  p = madd(p, t, splat(-1.26551223));
  return f32x4.mul(t, exp4(f32x4.sub(p, f32x4.mul(z, z))));
}

/** 0.5 * (1 + erf(x / sqrt 2)), the standard normal CDF. */
// @ts-ignore: decorator
@inline
export function phi4(x: v128): v128 {
  const r = erfcPos4(f32x4.mul(f32x4.abs(x), splat(0.7071067811865476)));
  const half = f32x4.mul(r, splat(0.5));
  return v128.bitselect(f32x4.sub(splat(1.0), half), half, f32x4.ge(x, splat(0)));
}

// Mask with the first k lanes set.
// @ts-ignore: decorator
@inline
export function lanesBelow(k: i32): v128 {
  return i32x4.gt_s(i32x4.splat(k), i32x4(0, 1, 2, 3));
}

// Sum over the row of exp(x - mx), optionally storing the exponentials to o.
// @ts-ignore: decorator
@inline
export function expSum(x: usize, n: i32, mx: f32, o: usize, write: bool): f64 {
  const m = splat(mx);
  let acc = f64x2.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i << 2;
    const e = exp4(f32x4.sub(v128.load(x + off), m));
    if (write) v128.store(o + off, e);
    acc = widenAdd(acc, e);
  }
  if (i < n) {
    const off = <usize>i << 2;
    const e = v128.and(exp4(f32x4.sub(loadPartial(x + off, n - i), m)), lanesBelow(n - i));
    if (write) storePartial(o + off, e, n - i);
    acc = widenAdd(acc, e);
  }
  return hsum64(acc);
}

/** o[0..n) = x * s + t. */
// @ts-ignore: decorator
@inline
export function scaleShift(x: usize, s: f32, t: f32, o: usize, n: i32): void {
  const sv = splat(s), tv = splat(t);
  for (let i = 0; i < n; i += 4) {
    const off = <usize>i << 2;
    storePartial(o + off, madd(loadPartial(x + off, n - i), sv, tv), n - i);
  }
}
