// Elementwise kernels. Operands are byte pointers; n counts floats. Each op's loop is
// specialised at compile time (the op code is a constant after inlining).

import { splat, madd, loadPartial, storePartial, exp4, log4, tanh4, sigmoid4, phi4 } from './simd';

// Binary op codes (JS side: BINARY_CODES).
const ADD = 0, SUB = 1, MUL = 2, DIV = 3, MAXIMUM = 4, MINIMUM = 5, EQ = 6, GT = 7;

// @ts-ignore: decorator
@inline
function bop(op: i32, a: v128, b: v128): v128 {
  if (op == ADD) return f32x4.add(a, b);
  if (op == SUB) return f32x4.sub(a, b);
  if (op == MUL) return f32x4.mul(a, b);
  if (op == DIV) return f32x4.div(a, b);
  // maximum/minimum pick a on ties and when b is NaN, like the JS kernels (a >= b ? a : b).
  if (op == MAXIMUM) return v128.bitselect(a, b, f32x4.ge(a, b));
  if (op == MINIMUM) return v128.bitselect(a, b, f32x4.le(a, b));
  if (op == EQ) return v128.and(f32x4.eq(a, b), splat(1.0));
  return v128.and(f32x4.gt(a, b), splat(1.0));
}

// One row: a and b each a vector (stride 4 bytes) or a splat (aVec/bVec false).
// @ts-ignore: decorator
@inline
function binRow(op: i32, a: usize, aVec: bool, as: v128, b: usize, bVec: bool, bs: v128, o: usize, n: i32): void {
  let i = 0;
  for (; i + 16 <= n; i += 16) {
    const off = <usize>i << 2;
    const a0 = aVec ? v128.load(a + off) : as, a1 = aVec ? v128.load(a + off, 16) : as;
    const a2 = aVec ? v128.load(a + off, 32) : as, a3 = aVec ? v128.load(a + off, 48) : as;
    const b0 = bVec ? v128.load(b + off) : bs, b1 = bVec ? v128.load(b + off, 16) : bs;
    const b2 = bVec ? v128.load(b + off, 32) : bs, b3 = bVec ? v128.load(b + off, 48) : bs;
    v128.store(o + off, bop(op, a0, b0));
    v128.store(o + off, bop(op, a1, b1), 16);
    v128.store(o + off, bop(op, a2, b2), 32);
    v128.store(o + off, bop(op, a3, b3), 48);
  }
  for (; i < n; i += 4) {
    const off = <usize>i << 2;
    const r = n - i;
    const av = aVec ? loadPartial(a + off, r) : as;
    const bv = bVec ? loadPartial(b + off, r) : bs;
    storePartial(o + off, bop(op, av, bv), r);
  }
}

// Operand modes: 0 full [rows, cols], 1 scalar, 2 row vector [cols] repeated over rows,
// 3 column vector [rows] repeated over cols.
// @ts-ignore: decorator
@inline
function binOp(op: i32, a: usize, am: i32, b: usize, bm: i32, o: usize, rows: i32, cols: i32): void {
  const rowBytes = <usize>cols << 2;
  for (let r = 0; r < rows; r++) {
    const ap = am == 0 ? a + <usize>r * rowBytes : a;
    const bp = bm == 0 ? b + <usize>r * rowBytes : b;
    const op_ = o + <usize>r * rowBytes;
    const aVec = am == 0 || am == 2, bVec = bm == 0 || bm == 2;
    const as = am == 1 ? v128.load32_splat(a) : am == 3 ? v128.load32_splat(a + (<usize>r << 2)) : splat(0);
    const bs = bm == 1 ? v128.load32_splat(b) : bm == 3 ? v128.load32_splat(b + (<usize>r << 2)) : splat(0);
    if (aVec) {
      if (bVec) binRow(op, ap, true, as, bp, true, bs, op_, cols);
      else binRow(op, ap, true, as, bp, false, bs, op_, cols);
    } else {
      if (bVec) binRow(op, ap, false, as, bp, true, bs, op_, cols);
      else binRow(op, ap, false, as, bp, false, bs, op_, cols);
    }
  }
}

/** out = a op b over [rows, cols] with operand modes (see binOp). */
export function binary(op: i32, a: usize, am: i32, b: usize, bm: i32, o: usize, rows: i32, cols: i32): void {
  switch (op) {
    case ADD: binOp(ADD, a, am, b, bm, o, rows, cols); break;
    case SUB: binOp(SUB, a, am, b, bm, o, rows, cols); break;
    case MUL: binOp(MUL, a, am, b, bm, o, rows, cols); break;
    case DIV: binOp(DIV, a, am, b, bm, o, rows, cols); break;
    case MAXIMUM: binOp(MAXIMUM, a, am, b, bm, o, rows, cols); break;
    case MINIMUM: binOp(MINIMUM, a, am, b, bm, o, rows, cols); break;
    case EQ: binOp(EQ, a, am, b, bm, o, rows, cols); break;
    default: binOp(GT, a, am, b, bm, o, rows, cols); break;
  }
}

// Unary op codes (JS side: UNARY_CODES).
const NEG = 0, EXP = 1, LOG = 2, SQRT = 3, RSQRT = 4, ABS = 5, TANH = 6, SIGMOID = 7, RELU = 8;
const GELU = 9, GELU_TANH = 10, SILU = 11, SQUARE = 12, SIGN = 13, RECIP = 14;
const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;
const INV_SQRT_2PI: f32 = 0.3989422804014327;

// @ts-ignore: decorator
@inline
function uop(op: i32, x: v128): v128 {
  if (op == NEG) return f32x4.neg(x);
  if (op == EXP) return exp4(x);
  if (op == LOG) return log4(x);
  if (op == SQRT) return f32x4.sqrt(x);
  if (op == RSQRT) return f32x4.div(splat(1.0), f32x4.sqrt(x));
  if (op == ABS) return f32x4.abs(x);
  if (op == TANH) return tanh4(x);
  if (op == SIGMOID) return sigmoid4(x);
  if (op == RELU) return v128.and(x, f32x4.gt(x, splat(0)));
  if (op == GELU) return f32x4.mul(x, phi4(x));
  if (op == GELU_TANH) {
    // 0.5 x (1 + tanh u) = x * sigmoid(2u): no cancellation for negative x.
    const u = f32x4.mul(splat(SQRT_2_OVER_PI), madd(f32x4.mul(splat(GELU_C), x), f32x4.mul(x, x), x));
    return f32x4.div(x, f32x4.add(splat(1.0), exp4(f32x4.mul(u, splat(-2.0)))));
  }
  if (op == SILU) return f32x4.div(x, f32x4.add(splat(1.0), exp4(f32x4.neg(x))));
  if (op == SQUARE) return f32x4.mul(x, x);
  if (op == SIGN) {
    return v128.or(v128.and(f32x4.gt(x, splat(0)), splat(1.0)), v128.and(f32x4.lt(x, splat(0)), splat(-1.0)));
  }
  return f32x4.div(splat(1.0), x);
}

// @ts-ignore: decorator
@inline
function unaryLoop(op: i32, x: usize, o: usize, n: i32): void {
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const off = <usize>i << 2;
    const v0 = uop(op, v128.load(x + off));
    const v1 = uop(op, v128.load(x + off, 16));
    v128.store(o + off, v0);
    v128.store(o + off, v1, 16);
  }
  for (; i < n; i += 4) {
    const off = <usize>i << 2;
    storePartial(o + off, uop(op, loadPartial(x + off, n - i)), n - i);
  }
}

/** out[i] = f(x[i]). */
export function unary(op: i32, x: usize, o: usize, n: i32): void {
  switch (op) {
    case NEG: unaryLoop(NEG, x, o, n); break;
    case EXP: unaryLoop(EXP, x, o, n); break;
    case LOG: unaryLoop(LOG, x, o, n); break;
    case SQRT: unaryLoop(SQRT, x, o, n); break;
    case RSQRT: unaryLoop(RSQRT, x, o, n); break;
    case ABS: unaryLoop(ABS, x, o, n); break;
    case TANH: unaryLoop(TANH, x, o, n); break;
    case SIGMOID: unaryLoop(SIGMOID, x, o, n); break;
    case RELU: unaryLoop(RELU, x, o, n); break;
    case GELU: unaryLoop(GELU, x, o, n); break;
    case GELU_TANH: unaryLoop(GELU_TANH, x, o, n); break;
    case SILU: unaryLoop(SILU, x, o, n); break;
    case SQUARE: unaryLoop(SQUARE, x, o, n); break;
    case SIGN: unaryLoop(SIGN, x, o, n); break;
    default: unaryLoop(RECIP, x, o, n); break;
  }
}

// dy * f'(x), with y = f(x).
// @ts-ignore: decorator
@inline
function ugrad(op: i32, x: v128, y: v128, g: v128): v128 {
  if (op == NEG) return f32x4.neg(g);
  if (op == EXP) return f32x4.mul(g, y);
  if (op == LOG) return f32x4.div(g, x);
  if (op == SQRT) return f32x4.div(f32x4.mul(g, splat(0.5)), y);
  if (op == RSQRT) return f32x4.mul(g, f32x4.mul(splat(-0.5), f32x4.mul(y, f32x4.mul(y, y))));
  if (op == ABS || op == SIGN) {
    if (op == SIGN) return splat(0);
    const s = v128.or(v128.and(f32x4.gt(x, splat(0)), splat(1.0)), v128.and(f32x4.lt(x, splat(0)), splat(-1.0)));
    return f32x4.mul(g, s);
  }
  if (op == TANH) return f32x4.mul(g, f32x4.sub(splat(1.0), f32x4.mul(y, y)));
  if (op == SIGMOID) return f32x4.mul(g, f32x4.mul(y, f32x4.sub(splat(1.0), y)));
  if (op == RELU) return v128.and(g, f32x4.gt(x, splat(0)));
  if (op == GELU) {
    const pdf = f32x4.mul(splat(INV_SQRT_2PI), exp4(f32x4.mul(splat(-0.5), f32x4.mul(x, x))));
    return f32x4.mul(g, madd(x, pdf, phi4(x)));
  }
  if (op == GELU_TANH) {
    // With s = sigmoid(2u): 0.5 (1 + tanh u) = s and 1 - tanh^2 u = 4 s (1 - s).
    const x2 = f32x4.mul(x, x);
    const u = f32x4.mul(splat(SQRT_2_OVER_PI), madd(f32x4.mul(splat(GELU_C), x), x2, x));
    const s = f32x4.div(splat(1.0), f32x4.add(splat(1.0), exp4(f32x4.mul(u, splat(-2.0)))));
    const du = f32x4.mul(splat(SQRT_2_OVER_PI), madd(splat(3 * GELU_C), x2, splat(1.0)));
    const d = madd(f32x4.mul(f32x4.mul(splat(2.0), x), f32x4.mul(s, f32x4.sub(splat(1.0), s))), du, s);
    return f32x4.mul(g, d);
  }
  if (op == SILU) {
    const s = sigmoid4(x);
    return f32x4.mul(g, f32x4.mul(s, madd(x, f32x4.sub(splat(1.0), s), splat(1.0))));
  }
  if (op == SQUARE) return f32x4.mul(g, f32x4.add(x, x));
  return f32x4.neg(f32x4.mul(g, f32x4.mul(y, y)));
}

// @ts-ignore: decorator
@inline
function gradLoop(op: i32, x: usize, y: usize, g: usize, o: usize, n: i32): void {
  for (let i = 0; i < n; i += 4) {
    const off = <usize>i << 2;
    const r = n - i;
    storePartial(o + off, ugrad(op, loadPartial(x + off, r), loadPartial(y + off, r), loadPartial(g + off, r)), r);
  }
}

/** dx[i] = dy[i] * f'(x[i]). */
export function unaryGrad(op: i32, x: usize, y: usize, g: usize, o: usize, n: i32): void {
  switch (op) {
    case NEG: gradLoop(NEG, x, y, g, o, n); break;
    case EXP: gradLoop(EXP, x, y, g, o, n); break;
    case LOG: gradLoop(LOG, x, y, g, o, n); break;
    case SQRT: gradLoop(SQRT, x, y, g, o, n); break;
    case RSQRT: gradLoop(RSQRT, x, y, g, o, n); break;
    case ABS: gradLoop(ABS, x, y, g, o, n); break;
    case TANH: gradLoop(TANH, x, y, g, o, n); break;
    case SIGMOID: gradLoop(SIGMOID, x, y, g, o, n); break;
    case RELU: gradLoop(RELU, x, y, g, o, n); break;
    case GELU: gradLoop(GELU, x, y, g, o, n); break;
    case GELU_TANH: gradLoop(GELU_TANH, x, y, g, o, n); break;
    case SILU: gradLoop(SILU, x, y, g, o, n); break;
    case SQUARE: gradLoop(SQUARE, x, y, g, o, n); break;
    case SIGN: gradLoop(SIGN, x, y, g, o, n); break;
    default: gradLoop(RECIP, x, y, g, o, n); break;
  }
}

/** out = x * scale + shift. */
export function affine(x: usize, scale: f32, shift: f32, o: usize, n: i32): void {
  const s = splat(scale), t = splat(shift);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const off = <usize>i << 2;
    const v0 = madd(v128.load(x + off), s, t);
    const v1 = madd(v128.load(x + off, 16), s, t);
    v128.store(o + off, v0);
    v128.store(o + off, v1, 16);
  }
  for (; i < n; i += 4) {
    const off = <usize>i << 2;
    storePartial(o + off, madd(loadPartial(x + off, n - i), s, t), n - i);
  }
}

/** out = min(max(x, lo), hi); NaN stays NaN. */
export function clamp(x: usize, lo: f32, hi: f32, o: usize, n: i32): void {
  const l = splat(lo), h = splat(hi);
  for (let i = 0; i < n; i += 4) {
    const off = <usize>i << 2;
    const v = loadPartial(x + off, n - i);
    // x < lo ? lo : x > hi ? hi : x
    const r = v128.bitselect(l, v128.bitselect(h, v, f32x4.gt(v, h)), f32x4.lt(v, l));
    storePartial(o + off, r, n - i);
  }
}

export function fill(o: usize, value: f32, n: i32): void {
  const v = splat(value);
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(o + (<usize>i << 2), v);
  for (; i < n; i++) store<f32>(o + (<usize>i << 2), value);
}

export function copy(src: usize, dst: usize, n: i32): void {
  memory.copy(dst, src, <usize>n << 2);
}
