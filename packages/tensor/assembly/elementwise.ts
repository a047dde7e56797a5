// Elementwise kernels. Operands are byte pointers; n counts floats.

import { splat, madd, loadPartial, storePartial, exp4, log4, tanh4, sigmoid4, phi4 } from './simd';

// Ops are selected at compile time through marker types: each generic loop is compiled once
// per op with the other ops' code removed. (A constant op argument is not enough: Binaryen
// merges the identical inlined copies back into one loop that tests the op per vector.)
class Add {}
class Sub {}
class Mul {}
class Div {}
class Maximum {}
class Minimum {}
class Eq {}
class Gt {}
class Vec {}
class Splat {}

// Binary op codes (JS side: BINARY_CODES).
const ADD = 0, SUB = 1, MUL = 2, DIV = 3, MAXIMUM = 4, MINIMUM = 5, EQ = 6;

// @ts-ignore: decorator
@inline
function bop<Op>(a: v128, b: v128): v128 {
  if (idof<Op>() == idof<Add>()) return f32x4.add(a, b);
  if (idof<Op>() == idof<Sub>()) return f32x4.sub(a, b);
  if (idof<Op>() == idof<Mul>()) return f32x4.mul(a, b);
  if (idof<Op>() == idof<Div>()) return f32x4.div(a, b);
  // maximum/minimum pick a on ties and when b is NaN, like the JS kernels (a >= b ? a : b).
  if (idof<Op>() == idof<Maximum>()) return v128.bitselect(a, b, f32x4.ge(a, b));
  if (idof<Op>() == idof<Minimum>()) return v128.bitselect(a, b, f32x4.le(a, b));
  if (idof<Op>() == idof<Eq>()) return v128.and(f32x4.eq(a, b), splat(1.0));
  return v128.and(f32x4.gt(a, b), splat(1.0));
}

// @ts-ignore: decorator
@inline
function operand<M>(p: usize, s: v128): v128 {
  if (idof<M>() == idof<Vec>()) return v128.load(p);
  return s;
}

// @ts-ignore: decorator
@inline
function operandPartial<M>(p: usize, s: v128, k: i32): v128 {
  if (idof<M>() == idof<Vec>()) return loadPartial(p, k);
  return s;
}

// One row of n outputs; each operand is a vector (Vec) or a broadcast value (Splat).
function binRow<Op, A, B>(a: usize, as: v128, b: usize, bs: v128, o: usize, n: i32): void {
  let i = 0;
  for (; i + 16 <= n; i += 16) {
    const off = <usize>i << 2;
    const ap = a + off, bp = b + off, op = o + off;
    v128.store(op, bop<Op>(operand<A>(ap, as), operand<B>(bp, bs)));
    v128.store(op + 16, bop<Op>(operand<A>(ap + 16, as), operand<B>(bp + 16, bs)));
    v128.store(op + 32, bop<Op>(operand<A>(ap + 32, as), operand<B>(bp + 32, bs)));
    v128.store(op + 48, bop<Op>(operand<A>(ap + 48, as), operand<B>(bp + 48, bs)));
  }
  for (; i < n; i += 4) {
    const off = <usize>i << 2;
    const r = n - i;
    storePartial(o + off, bop<Op>(operandPartial<A>(a + off, as, r), operandPartial<B>(b + off, bs, r)), r);
  }
}

// Operand modes: 0 full [rows, cols], 1 scalar, 2 row vector [cols] repeated over rows,
// 3 column vector [rows] repeated over cols.
function binOp<Op>(a: usize, am: i32, b: usize, bm: i32, o: usize, rows: i32, cols: i32): void {
  const rowBytes = <usize>cols << 2;
  const aVec = am == 0 || am == 2, bVec = bm == 0 || bm == 2;
  for (let r = 0; r < rows; r++) {
    const ap = am == 0 ? a + <usize>r * rowBytes : a;
    const bp = bm == 0 ? b + <usize>r * rowBytes : b;
    const op = o + <usize>r * rowBytes;
    const as = aVec ? splat(0) : v128.load32_splat(am == 3 ? a + (<usize>r << 2) : a);
    const bs = bVec ? splat(0) : v128.load32_splat(bm == 3 ? b + (<usize>r << 2) : b);
    if (aVec) {
      if (bVec) binRow<Op, Vec, Vec>(ap, as, bp, bs, op, cols);
      else binRow<Op, Vec, Splat>(ap, as, bp, bs, op, cols);
    } else {
      if (bVec) binRow<Op, Splat, Vec>(ap, as, bp, bs, op, cols);
      else binRow<Op, Splat, Splat>(ap, as, bp, bs, op, cols);
    }
  }
}

/** out = a op b over [rows, cols] with operand modes (see binOp). */
export function binary(op: i32, a: usize, am: i32, b: usize, bm: i32, o: usize, rows: i32, cols: i32): void {
  switch (op) {
    case ADD: binOp<Add>(a, am, b, bm, o, rows, cols); break;
    case SUB: binOp<Sub>(a, am, b, bm, o, rows, cols); break;
    case MUL: binOp<Mul>(a, am, b, bm, o, rows, cols); break;
    case DIV: binOp<Div>(a, am, b, bm, o, rows, cols); break;
    case MAXIMUM: binOp<Maximum>(a, am, b, bm, o, rows, cols); break;
    case MINIMUM: binOp<Minimum>(a, am, b, bm, o, rows, cols); break;
    case EQ: binOp<Eq>(a, am, b, bm, o, rows, cols); break;
    default: binOp<Gt>(a, am, b, bm, o, rows, cols); break;
  }
}

class Neg {}
class Exp {}
class Log {}
class Sqrt {}
class Rsqrt {}
class Abs {}
class Tanh {}
class Sigmoid {}
class Relu {}
class Gelu {}
class GeluTanh {}
class Silu {}
class Square {}
class Sign {}
class Recip {}

// Unary op codes (JS side: UNARY_CODES).
const NEG = 0, EXP = 1, LOG = 2, SQRT = 3, RSQRT = 4, ABS = 5, TANH = 6, SIGMOID = 7, RELU = 8;
const GELU = 9, GELU_TANH = 10, SILU = 11, SQUARE = 12, SIGN = 13;
const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;
const INV_SQRT_2PI: f32 = 0.3989422804014327;

// @ts-ignore: decorator
@inline
function signOf(x: v128): v128 {
  return v128.or(v128.and(f32x4.gt(x, splat(0)), splat(1.0)), v128.and(f32x4.lt(x, splat(0)), splat(-1.0)));
}

// @ts-ignore: decorator
@inline
function uop<Op>(x: v128): v128 {
  if (idof<Op>() == idof<Neg>()) return f32x4.neg(x);
  if (idof<Op>() == idof<Exp>()) return exp4(x);
  if (idof<Op>() == idof<Log>()) return log4(x);
  if (idof<Op>() == idof<Sqrt>()) return f32x4.sqrt(x);
  if (idof<Op>() == idof<Rsqrt>()) return f32x4.div(splat(1.0), f32x4.sqrt(x));
  if (idof<Op>() == idof<Abs>()) return f32x4.abs(x);
  if (idof<Op>() == idof<Tanh>()) return tanh4(x);
  if (idof<Op>() == idof<Sigmoid>()) return sigmoid4(x);
  if (idof<Op>() == idof<Relu>()) return v128.and(x, f32x4.gt(x, splat(0)));
  if (idof<Op>() == idof<Gelu>()) return f32x4.mul(x, phi4(x));
  if (idof<Op>() == idof<GeluTanh>()) {
    // 0.5 x (1 + tanh u) = x * sigmoid(2u): no cancellation for negative x.
    const u = f32x4.mul(splat(SQRT_2_OVER_PI), madd(f32x4.mul(splat(GELU_C), x), f32x4.mul(x, x), x));
    return f32x4.div(x, f32x4.add(splat(1.0), exp4(f32x4.mul(u, splat(-2.0)))));
  }
  if (idof<Op>() == idof<Silu>()) return f32x4.div(x, f32x4.add(splat(1.0), exp4(f32x4.neg(x))));
  if (idof<Op>() == idof<Square>()) return f32x4.mul(x, x);
  if (idof<Op>() == idof<Sign>()) return signOf(x);
  return f32x4.div(splat(1.0), x);
}

function unaryLoop<Op>(x: usize, o: usize, n: i32): void {
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const off = <usize>i << 2;
    const v0 = uop<Op>(v128.load(x + off));
    const v1 = uop<Op>(v128.load(x + off, 16));
    v128.store(o + off, v0);
    v128.store(o + off, v1, 16);
  }
  for (; i < n; i += 4) {
    const off = <usize>i << 2;
    storePartial(o + off, uop<Op>(loadPartial(x + off, n - i)), n - i);
  }
}

/** out[i] = f(x[i]). */
export function unary(op: i32, x: usize, o: usize, n: i32): void {
  switch (op) {
    case NEG: unaryLoop<Neg>(x, o, n); break;
    case EXP: unaryLoop<Exp>(x, o, n); break;
    case LOG: unaryLoop<Log>(x, o, n); break;
    case SQRT: unaryLoop<Sqrt>(x, o, n); break;
    case RSQRT: unaryLoop<Rsqrt>(x, o, n); break;
    case ABS: unaryLoop<Abs>(x, o, n); break;
    case TANH: unaryLoop<Tanh>(x, o, n); break;
    case SIGMOID: unaryLoop<Sigmoid>(x, o, n); break;
    case RELU: unaryLoop<Relu>(x, o, n); break;
    case GELU: unaryLoop<Gelu>(x, o, n); break;
    case GELU_TANH: unaryLoop<GeluTanh>(x, o, n); break;
    case SILU: unaryLoop<Silu>(x, o, n); break;
    case SQUARE: unaryLoop<Square>(x, o, n); break;
    case SIGN: unaryLoop<Sign>(x, o, n); break;
    default: unaryLoop<Recip>(x, o, n); break;
  }
}

// dy * f'(x), with y = f(x).
// @ts-ignore: decorator
@inline
function ugrad<Op>(x: v128, y: v128, g: v128): v128 {
  if (idof<Op>() == idof<Neg>()) return f32x4.neg(g);
  if (idof<Op>() == idof<Exp>()) return f32x4.mul(g, y);
  if (idof<Op>() == idof<Log>()) return f32x4.div(g, x);
  if (idof<Op>() == idof<Sqrt>()) return f32x4.div(f32x4.mul(g, splat(0.5)), y);
  if (idof<Op>() == idof<Rsqrt>()) return f32x4.mul(g, f32x4.mul(splat(-0.5), f32x4.mul(y, f32x4.mul(y, y))));
  if (idof<Op>() == idof<Abs>()) return f32x4.mul(g, signOf(x));
  if (idof<Op>() == idof<Sign>()) return splat(0);
  if (idof<Op>() == idof<Tanh>()) return f32x4.mul(g, f32x4.sub(splat(1.0), f32x4.mul(y, y)));
  if (idof<Op>() == idof<Sigmoid>()) return f32x4.mul(g, f32x4.mul(y, f32x4.sub(splat(1.0), y)));
  if (idof<Op>() == idof<Relu>()) return v128.and(g, f32x4.gt(x, splat(0)));
  if (idof<Op>() == idof<Gelu>()) {
    const pdf = f32x4.mul(splat(INV_SQRT_2PI), exp4(f32x4.mul(splat(-0.5), f32x4.mul(x, x))));
    return f32x4.mul(g, madd(x, pdf, phi4(x)));
  }
  if (idof<Op>() == idof<GeluTanh>()) {
    // With s = sigmoid(2u): 0.5 (1 + tanh u) = s and 1 - tanh^2 u = 4 s (1 - s).
    const x2 = f32x4.mul(x, x);
    const u = f32x4.mul(splat(SQRT_2_OVER_PI), madd(f32x4.mul(splat(GELU_C), x), x2, x));
    const s = f32x4.div(splat(1.0), f32x4.add(splat(1.0), exp4(f32x4.mul(u, splat(-2.0)))));
    const du = f32x4.mul(splat(SQRT_2_OVER_PI), madd(splat(3 * GELU_C), x2, splat(1.0)));
    const d = madd(f32x4.mul(f32x4.mul(splat(2.0), x), f32x4.mul(s, f32x4.sub(splat(1.0), s))), du, s);
    return f32x4.mul(g, d);
  }
  if (idof<Op>() == idof<Silu>()) {
    const s = sigmoid4(x);
    return f32x4.mul(g, f32x4.mul(s, madd(x, f32x4.sub(splat(1.0), s), splat(1.0))));
  }
  if (idof<Op>() == idof<Square>()) return f32x4.mul(g, f32x4.add(x, x));
  return f32x4.neg(f32x4.mul(g, f32x4.mul(y, y)));
}

function gradLoop<Op>(x: usize, y: usize, g: usize, o: usize, n: i32): void {
  for (let i = 0; i < n; i += 4) {
    const off = <usize>i << 2;
    const r = n - i;
    storePartial(o + off, ugrad<Op>(loadPartial(x + off, r), loadPartial(y + off, r), loadPartial(g + off, r)), r);
  }
}

/** dx[i] = dy[i] * f'(x[i]). */
export function unaryGrad(op: i32, x: usize, y: usize, g: usize, o: usize, n: i32): void {
  switch (op) {
    case NEG: gradLoop<Neg>(x, y, g, o, n); break;
    case EXP: gradLoop<Exp>(x, y, g, o, n); break;
    case LOG: gradLoop<Log>(x, y, g, o, n); break;
    case SQRT: gradLoop<Sqrt>(x, y, g, o, n); break;
    case RSQRT: gradLoop<Rsqrt>(x, y, g, o, n); break;
    case ABS: gradLoop<Abs>(x, y, g, o, n); break;
    case TANH: gradLoop<Tanh>(x, y, g, o, n); break;
    case SIGMOID: gradLoop<Sigmoid>(x, y, g, o, n); break;
    case RELU: gradLoop<Relu>(x, y, g, o, n); break;
    case GELU: gradLoop<Gelu>(x, y, g, o, n); break;
    case GELU_TANH: gradLoop<GeluTanh>(x, y, g, o, n); break;
    case SILU: gradLoop<Silu>(x, y, g, o, n); break;
    case SQUARE: gradLoop<Square>(x, y, g, o, n); break;
    case SIGN: gradLoop<Sign>(x, y, g, o, n); break;
    default: gradLoop<Recip>(x, y, g, o, n); break;
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
  for (; i + 16 <= n; i += 16) {
    const p = o + (<usize>i << 2);
    v128.store(p, v);
    v128.store(p, v, 16);
    v128.store(p, v, 32);
    v128.store(p, v, 48);
  }
  for (; i + 4 <= n; i += 4) v128.store(o + (<usize>i << 2), v);
  for (; i < n; i++) store<f32>(o + (<usize>i << 2), value);
}

export function copy(src: usize, dst: usize, n: i32): void {
  memory.copy(dst, src, <usize>n << 2);
}
