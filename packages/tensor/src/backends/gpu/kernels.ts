// Every kernel of the gpu backend as gpu.js kernels (sources from codegen.ts). An op that is not
// one data-parallel kernel is composed of several (a row reduction, then an elementwise pass);
// nothing reads back to the host except sumSquares, whose contract returns a number. Integer
// inputs (token ids, targets) are uploaded as float arrays (exact below 2^24).

import type { AdamWStep, BinaryOp, Kernels, MatmulSpec, Storage, UnaryOp } from '../../backend.js';
import { RrtError } from '../../errors.js';
import { KernelSource, batchStructure, collapse, lit, stridesFor } from './codegen.js';
import type { GpuDeviceCore, GpuStorage, KernelRef } from './device-core.js';
import type { GpuMode } from './device.js';

/** What the kernels need from the backend. */
export interface KernelHost {
  device: GpuDeviceCore;
  mode: GpuMode;
  /** A temporary storage (counted in memory(); free it). */
  alloc(size: number): GpuStorage;
  upload(values: Float32Array): GpuStorage;
  free(s: GpuStorage): void;
  read(s: GpuStorage): Float32Array;
}

type Arg = [name: string, value: GpuStorage | number];

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const NEG_BIG = lit(-3.4e38);

// Statements computing erf(x) into a new variable (|error| < 1.2e-7, as the js kernels).
function erfCode(src: KernelSource, x: string): string {
  const z = src.name('z'), t = src.name('t'), r = src.name('r'), out = src.name('erf');
  src.line(`const ${z} = Math.abs(${x});`);
  src.line(`const ${t} = 1.0 / (1.0 + 0.5 * ${z});`);
  src.line(
    `const ${r} = ${t} * Math.exp(0.0 - ${z} * ${z} - 1.26551223 + ${t} * (1.00002368 + ${t} * (0.37409196 + ${t} * (0.09678418 + ${t} * (${t} * (0.27886807 + ${t} * (${t} * (1.48851587 + ${t} * (${t} * 0.17087277 - 0.82215223)) - 1.13520398)) - 0.18628806)))));`,
  );
  src.line(`let ${out} = 1.0 - ${r};`);
  src.line(`if (${x} < 0.0) { ${out} = ${r} - 1.0; }`);
  return out;
}

// tanh is clamped first: some WebGPU implementations overflow inside tanh for large |x|.
const tanhOf = (x: string) => `Math.tanh(Math.min(Math.max(${x}, -15.0), 15.0))`;

/** An expression of f(v) (helper statements go to src). */
function unaryCode(op: UnaryOp, src: KernelSource, v: string): string {
  switch (op) {
    case 'neg': return `0.0 - ${v}`;
    case 'exp': return `Math.exp(${v})`;
    case 'log': return `Math.log(${v})`;
    case 'sqrt': return `Math.sqrt(${v})`;
    case 'rsqrt': return `1.0 / Math.sqrt(${v})`;
    case 'abs': return `Math.abs(${v})`;
    case 'tanh': return tanhOf(v);
    case 'sigmoid': return `1.0 / (1.0 + Math.exp(0.0 - ${v}))`;
    case 'relu': return `(${v} > 0.0 ? ${v} : 0.0)`;
    case 'gelu': {
      const e = erfCode(src, `(${v} * ${lit(Math.SQRT1_2)})`);
      return `0.5 * ${v} * (1.0 + ${e})`;
    }
    case 'gelu_tanh': return `0.5 * ${v} * (1.0 + ${tanhOf(`${lit(SQRT_2_OVER_PI)} * (${v} + 0.044715 * ${v} * ${v} * ${v})`)})`;
    case 'silu': return `${v} / (1.0 + Math.exp(0.0 - ${v}))`;
    case 'square': return `${v} * ${v}`;
    case 'sign': return `(${v} > 0.0 ? 1.0 : (${v} < 0.0 ? -1.0 : 0.0))`;
    case 'recip': return `1.0 / ${v}`;
  }
}

/** An expression of f'(x) given x and y = f(x). */
function derivativeCode(op: UnaryOp, src: KernelSource, x: string, y: string): string {
  switch (op) {
    case 'neg': return '-1.0';
    case 'exp': return y;
    case 'log': return `1.0 / ${x}`;
    case 'sqrt': return `0.5 / ${y}`;
    case 'rsqrt': return `-0.5 * ${y} * ${y} * ${y}`;
    case 'abs': return `(${x} > 0.0 ? 1.0 : (${x} < 0.0 ? -1.0 : 0.0))`;
    case 'tanh': return `1.0 - ${y} * ${y}`;
    case 'sigmoid': return `${y} * (1.0 - ${y})`;
    case 'relu': return `(${x} > 0.0 ? 1.0 : 0.0)`;
    case 'gelu': {
      const e = erfCode(src, `(${x} * ${lit(Math.SQRT1_2)})`);
      return `0.5 * (1.0 + ${e}) + ${x} * Math.exp(-0.5 * ${x} * ${x}) * ${lit(1 / Math.sqrt(2 * Math.PI))}`;
    }
    case 'gelu_tanh': {
      const th = src.name('th');
      src.line(`const ${th} = ${tanhOf(`${lit(SQRT_2_OVER_PI)} * (${x} + 0.044715 * ${x} * ${x} * ${x})`)};`);
      return `0.5 * (1.0 + ${th}) + 0.5 * ${x} * (1.0 - ${th} * ${th}) * ${lit(SQRT_2_OVER_PI)} * (1.0 + ${lit(3 * 0.044715)} * ${x} * ${x})`;
    }
    case 'silu': {
      const s = src.name('sg');
      src.line(`const ${s} = 1.0 / (1.0 + Math.exp(0.0 - ${x}));`);
      return `${s} * (1.0 + ${x} * (1.0 - ${s}))`;
    }
    case 'square': return `2.0 * ${x}`;
    case 'sign': return '0.0';
    case 'recip': return `0.0 - ${y} * ${y}`;
  }
}

/** a ** b with JavaScript's sign rules (WGSL's pow is undefined for a negative base). */
function powCode(src: KernelSource, a: string, b: string): string {
  const p = src.name('pw');
  src.line(`let ${p} = Math.pow(Math.abs(${a}), ${b});`);
  src.line(
    `if (${a} < 0.0) { if (Math.floor(${b}) == ${b}) { if (Math.abs(${b} - 2.0 * Math.floor(${b} * 0.5)) > 0.5) { ${p} = 0.0 - ${p}; } } else { ${p} = Math.sqrt(${a}); } }`,
  );
  return p;
}

function binaryCode(op: BinaryOp, src: KernelSource, a: string, b: string): string {
  switch (op) {
    case 'add': return `${a} + ${b}`;
    case 'sub': return `${a} - ${b}`;
    case 'mul': return `${a} * ${b}`;
    case 'div': return `${a} / ${b}`;
    case 'maximum': return `(${a} >= ${b} ? ${a} : ${b})`;
    case 'minimum': return `(${a} <= ${b} ? ${a} : ${b})`;
    case 'eq': return `(${a} == ${b} ? 1.0 : 0.0)`;
    case 'gt': return `(${a} > ${b} ? 1.0 : 0.0)`;
    case 'pow': return powCode(src, a, b);
  }
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

interface ReduceSpec {
  key: string;
  out: GpuStorage;
  inputs: Arg[];
  outer: number;
  r: number;
  inner: number;
  /** The element at reduction index $J, flat input index $I; may use o and ii. */
  elem: string;
  combine: 'sum' | 'max' | 'lse';
  /** The result from acc (sum, max) or m and s (lse: default m + log(s)); may use o and ii. */
  post?: string;
  /** Statements run once per output before the loop (may use o and ii). */
  pre?: string[];
}

export function createGpuKernels(host: KernelHost): Kernels {
  const dev = host.device;
  const gpuLike = host.mode === 'webgpu' || host.mode === 'headlessgl';
  const S = (s: Storage) => s as GpuStorage;

  function exec(k: KernelRef, out: GpuStorage, args: Arg[]): void {
    const values = args.map((a) => a[1]);
    for (const v of values) if (typeof v !== 'number' && !v.written) fillValue(v, 0);
    dev.run(k, out, values);
  }

  /** A kernel over out's elements; body adds statements and returns the result expression. */
  function elementwise(key: string, out: GpuStorage, args: Arg[], body: (src: KernelSource) => string): void {
    const n = out.size;
    if (n === 0) return;
    const k = dev.kernel(`${key}|${n}`, () => {
      const src = new KernelSource(args.map((a) => a[0]));
      const ret = body(src);
      return { source: src.toString(ret), output: n };
    });
    exec(k, out, args);
  }

  function fillValue(out: GpuStorage, value: number): void {
    elementwise('fill', out, [['V', value]], () => 'V');
  }

  /** Splits [rows..] over chunks so a GPU gets enough threads for long, few reductions. */
  function chunking(outputs: number, r: number): { chunks: number; chunk: number } | null {
    if (!gpuLike || r < 1024 || outputs >= 8192) return null;
    let chunks = Math.min(Math.ceil(r / 64), Math.ceil(16384 / outputs));
    const chunk = Math.ceil(r / chunks);
    chunks = Math.ceil(r / chunk);
    return chunks > 1 ? { chunks, chunk } : null;
  }

  function reduction(spec: ReduceSpec): void {
    const { outer, r, inner, combine } = spec;
    const nOut = outer * inner;
    if (nOut === 0) return;
    const plan = chunking(nOut, r);
    const scalars: Arg[] = combine === 'max' ? [['NEG', -Infinity]] : [];
    const args = [...spec.inputs, ...scalars];
    const names = args.map((a) => a[0]);
    const initAcc = (src: KernelSource) => {
      if (combine === 'lse') {
        src.line(`let m = ${NEG_BIG};`);
        src.line('let s = 0.0;');
      } else src.line(`let acc = ${combine === 'max' ? 'NEG' : '0.0'};`);
    };
    const step = (elem: string) => {
      if (combine === 'sum') return `acc += ${elem};`;
      if (combine === 'max') return `const v = ${elem}; if (v > acc) { acc = v; }`;
      return `const v = ${elem}; if (v > m) { s = s * Math.exp(m - v); m = v; } s += Math.exp(v - m);`;
    };
    const result = (post: string | undefined) => post ?? (combine === 'lse' ? 'm + Math.log(s)' : 'acc');
    const fill = (elem: string, j: string, rb: string) => elem.replaceAll('$I', inner === 1 ? `(${rb} + ${j})` : `(${rb} + (${j}) * ${inner})`).replaceAll('$J', `(${j})`);

    if (!plan) {
      const k = dev.kernel(`${spec.key}|${outer},${r},${inner}`, () => {
        const src = new KernelSource(names);
        const [o, ii] = inner === 1 ? ['t', src.int('ii', '0')] : outer === 1 ? [src.int('o', '0'), 't'] : src.divmod('t', inner, nOut);
        if (o !== 'o') src.int('o', o);
        if (ii !== 'ii') src.int('ii', ii);
        src.int('rb', `o * ${r * inner} + ii`);
        for (const l of spec.pre ?? []) src.line(l);
        initAcc(src);
        src.line(`for (let j = 0; j < ${r}; j++) { ${step(fill(spec.elem, 'j', 'rb'))} }`);
        return { source: src.toString(result(spec.post)), output: nOut };
      });
      exec(k, spec.out, args);
      return;
    }
    // Stage 1: partial results per (o, chunk, ii); stage 2 reduces the chunks.
    const { chunks, chunk } = plan;
    const partial = host.alloc(outer * chunks * inner);
    const k = dev.kernel(`${spec.key}|${outer},${r},${inner}|chunks ${chunks}x${chunk}`, () => {
      const src = new KernelSource(names);
      const [q, ii] = inner === 1 ? ['t', src.int('ii', '0')] : src.divmod('t', inner, nOut * chunks);
      const [o, c] = src.divmod(q, chunks, outer * chunks);
      src.int('o', o);
      if (ii !== 'ii') src.int('ii', ii);
      src.int('rb', `o * ${r * inner} + ii`);
      src.int('cb', `${c} * ${chunk}`);
      for (const l of spec.pre ?? []) src.line(l);
      initAcc(src);
      src.line(`for (let jj = 0; jj < ${chunk}; jj++) { if (cb + jj < ${r}) { ${step(fill(spec.elem, 'cb + jj', 'rb'))} } }`);
      return { source: src.toString(result(undefined)), output: outer * chunks * inner };
    });
    exec(k, partial, args);
    reduction({
      ...spec,
      key: `${spec.key}/stage2`,
      inputs: [['P', partial], ...spec.inputs.filter((a) => a[0] !== 'P')],
      r: chunks,
      elem: 'P[$I]',
      combine: combine === 'max' ? 'max' : combine === 'lse' ? 'lse' : 'sum',
      pre: spec.pre,
    });
    host.free(partial);
  }

  /** Per-row log-sum-exp of x viewed as [rows, cols]. */
  function rowLse(x: GpuStorage, rows: number, cols: number, out: GpuStorage): void {
    reduction({ key: 'lse', out, inputs: [['X', x]], outer: rows, r: cols, inner: 1, elem: 'X[$I]', combine: 'lse' });
  }

  /** Row and column of output index t for a [rows, cols] layout. */
  function rowCol(src: KernelSource, rows: number, cols: number): [string, string] {
    return src.divmod('t', cols, rows * cols);
  }

  function broadcastKernel(
    key: string,
    inputs: { name: string; s: GpuStorage; shape: number[] }[],
    out: GpuStorage,
    outShape: number[],
    scalars: Arg[],
    combine: (src: KernelSource, values: string[]) => string,
  ): void {
    const full = inputs.map((i) => stridesFor(i.shape, outShape));
    const { shape, strides } = collapse(outShape, full);
    // Inputs shaped like the output read element t; fully broadcast ones read element 0.
    const direct = inputs.map((i, n) => (i.shape.every((d, k) => d === outShape[k]) ? true : strides[n].every((s) => s === 0) ? 'scalar' : false));
    const sig = inputs.map((i) => i.shape.join('x')).join(',');
    elementwise(`${key}|${sig}|${outShape.join('x')}`, out, [...inputs.map((i) => [i.name, i.s] as Arg), ...scalars], (src) => {
      const needs = inputs.map((_, n) => direct[n] === false);
      const offs = needs.some(Boolean) ? src.offsets(shape, strides.filter((_, n) => needs[n])) : [];
      let next = 0;
      const values = inputs.map((i, n) => {
        if (direct[n] === true) return `${i.name}[t]`;
        if (direct[n] === 'scalar') return `${i.name}[0]`;
        return `${i.name}[${offs[next++]}]`;
      });
      const vars = values.map((v) => {
        const name = src.name('v');
        src.line(`const ${name} = ${v};`);
        return name;
      });
      return combine(src, vars);
    });
  }

  function matmul(a: Storage, b: Storage, out: Storage, spec: MatmulSpec): void {
    const A = S(a), B = S(b), C = S(out);
    const { batch, m, k: K, n, transA, transB, accumulate } = spec;
    if (C.size === 0) return;
    if (K === 0) {
      if (!accumulate) fillValue(C, 0);
      return;
    }
    const aStruct = batchStructure(spec.aBatchOffsets), bStruct = batchStructure(spec.bBatchOffsets);
    const temps: GpuStorage[] = [];
    const offsetArg = (name: string, offs: Int32Array): Arg => {
      for (const o of offs) if (o >= 1 << 24) throw new RrtError('gpu backend: matmul batch offsets beyond 2^24 without a broadcast structure');
      const s = host.upload(Float32Array.from(offs));
      temps.push(s);
      return [name, s];
    };
    const args: Arg[] = [['A', A], ['B', B]];
    if (accumulate) args.push(['C', C]);
    if (!aStruct) args.push(offsetArg('AO', spec.aBatchOffsets));
    if (!bStruct) args.push(offsetArg('BO', spec.bBatchOffsets));
    const vec4 = host.mode === 'webgpu' && n % 4 === 0;
    const cols = vec4 ? n / 4 : n;
    const threads = batch * m * cols;
    // WebGPU runs 2D kernels in 8x8 workgroups: each then shares 8 rows of a and 32 columns of b
    // through the caches, where a 1D workgroup would stream 256 columns of b for one row.
    const grid: [number, number] | undefined = host.mode === 'webgpu' && cols / 8 <= 65535 && (batch * m) / 8 <= 65535 ? [cols, batch * m] : undefined;
    const structKey = (s: ReturnType<typeof batchStructure>, offs: Int32Array) => (s ? `${s.base}:${s.sizes.join('x')}:${s.strides.join('x')}` : `table${offs.length}`);
    const key = `matmul|${batch},${m},${K},${n}|${transA ? 'T' : 'N'}${transB ? 'T' : 'N'}|${accumulate ? 'acc' : ''}|${structKey(aStruct, spec.aBatchOffsets)}|${structKey(bStruct, spec.bBatchOffsets)}`;
    const kernel = dev.kernel(key, () => {
      const src = new KernelSource(args.map((x) => x[0]), grid);
      const [q, j] = grid ? ['ty', 'tx'] : src.divmod('t', cols, threads);
      const [bt, i] = batch === 1 ? [src.int('bt', '0'), q] : src.divmod(q, m, batch * m);
      const batchOffset = (st: ReturnType<typeof batchStructure>, table: string) => {
        if (!st) return `(${table}[${bt}] | 0)`;
        const terms = [String(st.base)];
        let rest = bt;
        for (let d = st.sizes.length - 1; d >= 0; d--) {
          let coord = rest;
          if (d > 0) {
            const [qq, rr] = src.divmod(rest, st.sizes[d], batch);
            coord = rr;
            rest = qq;
          }
          if (st.strides[d] !== 0) terms.push(`${coord} * ${st.strides[d]}`);
        }
        return terms.join(' + ');
      };
      // Element strides of a[i, p] and b[p, j].
      const aRow = transA ? 1 : K, aCol = transA ? m : 1;
      const bRow = transB ? 1 : n, bCol = transB ? K : 1;
      const jj = vec4 ? `${j} * 4` : j;
      src.int('ab', `${batchOffset(aStruct, 'AO')} + ${i} * ${aRow}`);
      src.int('bb', `${batchOffset(bStruct, 'BO')} + ${jj} * ${bCol}`);
      const aAt = `A[ab + p${aCol === 1 ? '' : ` * ${aCol}`}]`;
      const bAt = (c: number) => `B[bb + p${bRow === 1 ? '' : ` * ${bRow}`}${c === 0 ? '' : ` + ${c * bCol}`}]`;
      if (!vec4) {
        src.line('let s = 0.0;');
        src.line(`for (let p = 0; p < ${K}; p++) { s += ${aAt} * ${bAt(0)}; }`);
        return { source: src.toString(accumulate ? 'C[t] + s' : 's'), output: batch * m * n, threads: grid };
      }
      src.line('let s0 = 0.0; let s1 = 0.0; let s2 = 0.0; let s3 = 0.0;');
      src.line(`for (let p = 0; p < ${K}; p++) { const av = ${aAt}; s0 += av * ${bAt(0)}; s1 += av * ${bAt(1)}; s2 += av * ${bAt(2)}; s3 += av * ${bAt(3)}; }`);
      const ret = accumulate ? '[C[t * 4] + s0, C[t * 4 + 1] + s1, C[t * 4 + 2] + s2, C[t * 4 + 3] + s3]' : '[s0, s1, s2, s3]';
      return { source: src.toString(ret), output: batch * m * n, vec4: true, threads: grid };
    });
    exec(kernel, C, args);
    for (const s of temps) host.free(s);
  }

  function copyRegion(
    src: Storage, srcShape: number[], srcStart: number[],
    dst: Storage, dstShape: number[], dstStart: number[], region: number[], accumulate: boolean,
  ): void {
    const Sx = S(src), D = S(dst);
    const n = size(region);
    if (n === 0 || D.size === 0) return;
    const rank = region.length;
    const ss = stridesFor(srcShape, srcShape);
    const base = srcStart.reduce((acc, s, d) => acc + s * ss[d], 0);
    const covers = region.every((r, d) => r === dstShape[d] && dstStart[d] === 0);
    const key = `copyRegion|${srcShape.join('x')}@${srcStart.join(',')}|${dstShape.join('x')}@${dstStart.join(',')}|${region.join('x')}|${accumulate ? 'acc' : ''}`;
    if (covers && !accumulate) {
      // The region is all of dst: a strided read of src.
      const { shape, strides } = collapse(region, [ss]);
      elementwise(key, D, [['X', Sx]], (k) => {
        const [o] = k.offsets(shape, strides);
        return `X[${base} + ${o}]`;
      });
      return;
    }
    elementwise(key, D, [['X', Sx], ['D', D]], (k) => {
      k.int('inside', '1');
      let rest = 't';
      const terms: string[] = [String(base)];
      for (let d = rank - 1; d >= 0; d--) {
        let c = rest;
        if (d > 0) {
          const [q, r] = k.divmod(rest, dstShape[d], D.size);
          c = r;
          rest = q;
        }
        if (region[d] !== dstShape[d]) k.line(`if (${c} < ${dstStart[d]}) { inside = 0; } if (${c} >= ${dstStart[d] + region[d]}) { inside = 0; }`);
        if (ss[d] !== 0) terms.push(`(${c} - ${dstStart[d]}) * ${ss[d]}`);
      }
      k.int('si', terms.join(' + '));
      k.clampIndex('si', Sx.size);
      return `(inside == 1 ? ${accumulate ? 'D[t] + X[si]' : 'X[si]'} : D[t])`;
    });
  }

  const kernels: Kernels = {
    fill(out, value) {
      fillValue(S(out), value);
    },
    copy(src, out) {
      elementwise('copy', S(out), [['X', S(src)]], () => 'X[t]');
    },

    unary(op, x, out) {
      elementwise(`unary:${op}`, S(out), [['X', S(x)]], (src) => {
        src.line('const v = X[t];');
        return unaryCode(op, src, 'v');
      });
    },
    unaryGrad(op, x, y, dy, dx) {
      elementwise(`unaryGrad:${op}`, S(dx), [['X', S(x)], ['Y', S(y)], ['G', S(dy)]], (src) => {
        src.line('const x = X[t]; const y = Y[t];');
        return `G[t] * (${derivativeCode(op, src, 'x', 'y')})`;
      });
    },

    binary(op, a, aShape, b, bShape, out, outShape) {
      broadcastKernel(`binary:${op}`, [{ name: 'A', s: S(a), shape: aShape }, { name: 'B', s: S(b), shape: bShape }], S(out), outShape, [],
        (src, [x, y]) => binaryCode(op, src, x, y));
    },
    affine(x, scale, shift, out) {
      elementwise('affine', S(out), [['X', S(x)], ['SC', scale], ['SH', shift]], () => 'X[t] * SC + SH');
    },
    powScalar(x, p, out) {
      elementwise('powScalar', S(out), [['X', S(x)], ['PW', p]], (src) => {
        src.line('const v = X[t];');
        return powCode(src, 'v', 'PW');
      });
    },
    clamp(x, lo, hi, out) {
      elementwise('clamp', S(out), [['X', S(x)], ['LO', lo], ['HI', hi]], (src) => {
        src.line('const v = X[t];');
        return '(v < LO ? LO : (v > HI ? HI : v))';
      });
    },
    where(cond, cShape, a, aShape, b, bShape, out, outShape) {
      broadcastKernel('where', [{ name: 'C', s: S(cond), shape: cShape }, { name: 'A', s: S(a), shape: aShape }, { name: 'B', s: S(b), shape: bShape }], S(out), outShape, [],
        (_src, [c, x, y]) => `(${c} != 0.0 ? ${x} : ${y})`);
    },

    matmul,

    reduce(op, x, outer, r, inner, out) {
      const X = S(x), O = S(out);
      if (outer * inner === 0) return;
      if (r === 0) {
        fillValue(O, op === 'sum' ? 0 : op === 'max' ? -Infinity : 0);
        return;
      }
      if (op === 'argmax') {
        elementwise(`argmax|${outer},${r},${inner}`, O, [['X', X], ['NEG', -Infinity]], (src) => {
          const [o, ii] = inner === 1 ? ['t', '0'] : src.divmod('t', inner, outer * inner);
          src.int('rb', `${o} * ${r * inner} + ${ii}`);
          src.line('let best = NEG; let arg = 0.0;');
          src.line(`for (let j = 0; j < ${r}; j++) { const v = X[rb + j * ${inner}]; if (v > best) { best = v; arg = j; } }`);
          return 'arg';
        });
        return;
      }
      reduction({ key: `reduce:${op}`, out: O, inputs: [['X', X]], outer, r, inner, elem: 'X[$I]', combine: op });
    },

    softmax(x, rows, cols, log, out) {
      const X = S(x), O = S(out);
      if (rows * cols === 0) return;
      const lse = host.alloc(rows);
      rowLse(X, rows, cols, lse);
      elementwise(`softmax:${log ? 'log' : 'exp'}|${cols}`, O, [['X', X], ['L', lse]], (src) => {
        const [row] = rowCol(src, rows, cols);
        return log ? `X[t] - L[${row}]` : `Math.exp(X[t] - L[${row}])`;
      });
      host.free(lse);
    },
    softmaxGrad(y, dy, rows, cols, log, dx) {
      const Y = S(y), G = S(dy), DX = S(dx);
      if (rows * cols === 0) return;
      const s = host.alloc(rows);
      reduction({ key: `softmaxGrad:${log}`, out: s, inputs: [['Y', Y], ['G', G]], outer: rows, r: cols, inner: 1, elem: log ? 'G[$I]' : 'G[$I] * Y[$I]', combine: 'sum' });
      elementwise(`softmaxGrad:${log ? 'log' : 'exp'}|${cols}`, DX, [['Y', Y], ['G', G], ['R', s]], (src) => {
        const [row] = rowCol(src, rows, cols);
        return log ? `G[t] - Math.exp(Y[t]) * R[${row}]` : `Y[t] * (G[t] - R[${row}])`;
      });
      host.free(s);
    },

    layerNorm(x, w, b, rows, cols, eps, out, mean, rstd) {
      const X = S(x), M = S(mean), R = S(rstd);
      if (rows === 0) return;
      reduction({ key: 'layerNorm:mean', out: M, inputs: [['X', X]], outer: rows, r: cols, inner: 1, elem: 'X[$I]', combine: 'sum', post: `acc / ${lit(cols)}` });
      reduction({
        key: 'layerNorm:rstd', out: R, inputs: [['X', X], ['M', M], ['EPS', eps]], outer: rows, r: cols, inner: 1,
        pre: ['const mu = M[o];'], elem: '(X[$I] - mu) * (X[$I] - mu)', combine: 'sum', post: `1.0 / Math.sqrt(acc / ${lit(cols)} + EPS)`,
      });
      const args: Arg[] = [['X', X], ['M', M], ['R', R]];
      if (w) args.push(['W', S(w)]);
      if (b) args.push(['B', S(b)]);
      elementwise(`layerNorm|${cols}|${w ? 'w' : ''}${b ? 'b' : ''}`, S(out), args, (src) => {
        const [row, col] = rowCol(src, rows, cols);
        let e = `(X[t] - M[${row}]) * R[${row}]`;
        if (w) e = `${e} * W[${col}]`;
        if (b) e = `${e} + B[${col}]`;
        return e;
      });
    },
    layerNormGrad(x, w, mean, rstd, dy, rows, cols, dx, dw, db) {
      const X = S(x), M = S(mean), R = S(rstd), G = S(dy);
      if (rows === 0) return;
      const W = w ? S(w) : null;
      const gw = W ? 'G[$I] * W[$J]' : 'G[$I]';
      const sg = host.alloc(rows), sgx = host.alloc(rows);
      const wIn: Arg[] = W ? [['W', W]] : [];
      reduction({ key: `layerNormGrad:sg:${!!W}`, out: sg, inputs: [['G', G], ...wIn], outer: rows, r: cols, inner: 1, elem: gw, combine: 'sum', post: `acc / ${lit(cols)}` });
      reduction({
        key: `layerNormGrad:sgx:${!!W}`, out: sgx, inputs: [['G', G], ['X', X], ['M', M], ['R', R], ...wIn], outer: rows, r: cols, inner: 1,
        pre: ['const mu = M[o]; const rs = R[o];'], elem: `${gw} * (X[$I] - mu) * rs`, combine: 'sum', post: `acc / ${lit(cols)}`,
      });
      elementwise(`layerNormGrad:dx|${cols}|${!!W}`, S(dx), [['G', G], ['X', X], ['M', M], ['R', R], ['SG', sg], ['SGX', sgx], ...wIn], (src) => {
        const [row, col] = rowCol(src, rows, cols);
        src.line(`const rs = R[${row}];`);
        src.line(`const xh = (X[t] - M[${row}]) * rs;`);
        return `rs * (G[t]${W ? ` * W[${col}]` : ''} - SG[${row}] - xh * SGX[${row}])`;
      });
      host.free(sg);
      host.free(sgx);
      if (dw) {
        reduction({
          key: 'layerNormGrad:dw', out: S(dw), inputs: [['G', G], ['X', X], ['M', M], ['R', R], ['DW', S(dw)]], outer: 1, r: rows, inner: cols,
          elem: 'G[$I] * (X[$I] - M[$J]) * R[$J]', combine: 'sum', post: 'DW[ii] + acc',
        });
      }
      if (db) {
        reduction({ key: 'layerNormGrad:db', out: S(db), inputs: [['G', G], ['DB', S(db)]], outer: 1, r: rows, inner: cols, elem: 'G[$I]', combine: 'sum', post: 'DB[ii] + acc' });
      }
    },
    rmsNorm(x, w, rows, cols, eps, addOne, out, rstd) {
      const X = S(x), R = S(rstd);
      if (rows === 0) return;
      reduction({ key: 'rmsNorm:rstd', out: R, inputs: [['X', X], ['EPS', eps]], outer: rows, r: cols, inner: 1, elem: 'X[$I] * X[$I]', combine: 'sum', post: `1.0 / Math.sqrt(acc / ${lit(cols)} + EPS)` });
      const args: Arg[] = [['X', X], ['R', R]];
      if (w) args.push(['W', S(w)]);
      elementwise(`rmsNorm|${cols}|${w ? (addOne ? 'w+1' : 'w') : ''}`, S(out), args, (src) => {
        const [row, col] = rowCol(src, rows, cols);
        const scale = w ? (addOne ? `(1.0 + W[${col}])` : `W[${col}]`) : '1.0';
        return `X[t] * R[${row}] * ${scale}`;
      });
    },
    rmsNormGrad(x, w, rstd, dy, rows, cols, addOne, dx, dw) {
      const X = S(x), R = S(rstd), G = S(dy);
      if (rows === 0) return;
      const wIn: Arg[] = w ? [['W', S(w)]] : [];
      const scaleAt = (j: string) => (w ? (addOne ? `(1.0 + W[${j}])` : `W[${j}]`) : '1.0');
      const sgx = host.alloc(rows);
      reduction({ key: `rmsNormGrad:sgx:${w ? (addOne ? 'w+1' : 'w') : ''}`, out: sgx, inputs: [['G', G], ['X', X], ...wIn], outer: rows, r: cols, inner: 1, elem: `G[$I] * ${scaleAt('$J')} * X[$I]`, combine: 'sum' });
      elementwise(`rmsNormGrad:dx|${cols}|${w ? (addOne ? 'w+1' : 'w') : ''}`, S(dx), [['G', G], ['X', X], ['R', R], ['SGX', sgx], ...wIn], (src) => {
        const [row, col] = rowCol(src, rows, cols);
        src.line(`const rs = R[${row}];`);
        return `G[t] * ${scaleAt(col)} * rs - X[t] * (SGX[${row}] * rs * rs * rs / ${lit(cols)})`;
      });
      host.free(sgx);
      if (dw) {
        reduction({ key: 'rmsNormGrad:dw', out: S(dw), inputs: [['G', G], ['X', X], ['R', R], ['DW', S(dw)]], outer: 1, r: rows, inner: cols, elem: 'G[$I] * X[$I] * R[$J]', combine: 'sum', post: 'DW[ii] + acc' });
      }
    },

    crossEntropy(logits, targets, rows, vocab, ignoreIndex, loss, lse) {
      const X = S(logits), L = S(lse);
      if (rows === 0) return;
      rowLse(X, rows, vocab, L);
      const T = host.upload(Float32Array.from(targets));
      elementwise(`crossEntropy|${vocab}`, S(loss), [['X', X], ['L', L], ['T', T], ['IGN', ignoreIndex]], (src) => {
        src.line('const tf = T[t];');
        src.intOf('ti', 'tf');
        src.clampIndex('ti', vocab);
        return `(tf == IGN ? 0.0 : L[t] - X[t * ${vocab} + ti])`;
      });
      host.free(T);
    },
    crossEntropyGrad(logits, targets, lse, dloss, rows, vocab, ignoreIndex, dlogits) {
      const X = S(logits), L = S(lse), G = S(dloss);
      if (rows === 0) return;
      const T = host.upload(Float32Array.from(targets));
      elementwise(`crossEntropyGrad|${rows},${vocab}`, S(dlogits), [['X', X], ['L', L], ['G', G], ['T', T], ['IGN', ignoreIndex]], (src) => {
        const [row, col] = rowCol(src, rows, vocab);
        src.line(`const tf = T[${row}]; const g = G[${row}];`);
        src.line(`const d = g * Math.exp(X[t] - L[${row}]);`);
        return `(tf == IGN ? 0.0 : (${col} == tf ? d - g : d))`;
      });
      host.free(T);
    },

    gather(table, ids, cols, out) {
      const Tb = S(table);
      if (ids.length === 0 || cols === 0) return;
      const I = host.upload(Float32Array.from(ids));
      const rows = Tb.size / cols;
      elementwise(`gather|${ids.length},${cols},${rows}`, S(out), [['TB', Tb], ['I', I]], (src) => {
        const [r, c] = src.divmod('t', cols, ids.length * cols);
        src.intOf('id', `I[${r}]`);
        src.clampIndex('id', rows);
        return `TB[id * ${cols} + ${c}]`;
      });
      host.free(I);
    },
    scatterAdd(dy, ids, cols, dtable) {
      const G = S(dy), DT = S(dtable);
      const nIds = ids.length;
      if (nIds === 0 || cols === 0) return;
      const rows = DT.size / cols;
      // Group positions by id on the host (ids are host data): each (id, column) then sums its
      // own positions, with no write conflicts between threads.
      const order = Int32Array.from({ length: nIds }, (_, i) => i).sort((p, q) => ids[p] - ids[q] || p - q);
      const starts = new Float32Array(nIds + 1).fill(nIds);
      // slot[id] = 1 + its group (0: not among ids), so no negative value needs converting.
      const slot = new Float32Array(rows);
      let groups = 0, maxCount = 0, runStart = 0;
      for (let i = 0; i <= nIds; i++) {
        if (i === nIds || (i > 0 && ids[order[i]] !== ids[order[i - 1]])) {
          maxCount = Math.max(maxCount, i - runStart);
          runStart = i;
        }
        if (i < nIds && (i === 0 || ids[order[i]] !== ids[order[i - 1]])) {
          starts[groups] = i;
          slot[ids[order[i]]] = groups + 1;
          groups++;
        }
      }
      let loop = 1;
      while (loop < maxCount) loop *= 2;
      const POS = host.upload(Float32Array.from(order)), ST = host.upload(starts), SL = host.upload(slot);
      const sums = host.alloc(nIds * cols);
      elementwise(`scatterAdd:sums|${nIds},${cols}|${loop}`, sums, [['G', G], ['POS', POS], ['ST', ST]], (src) => {
        const [u, c] = src.divmod('t', cols, nIds * cols);
        src.intOf('st', `ST[${u}]`);
        src.int('cnt', `(ST[${u} + 1] | 0) - st`);
        src.line('let acc = 0.0;');
        src.line(
          `for (let k = 0; k < ${loop}; k++) { if (k < cnt) { let pi = 0; pi++; pi = st + k; if (pi > ${nIds - 1}) { pi = ${nIds - 1}; } let p = 0; p++; p = POS[pi] | 0; acc += G[p * ${cols} + ${c}]; } }`,
        );
        return 'acc';
      });
      elementwise(`scatterAdd:add|${nIds},${cols},${rows}`, DT, [['DT', DT], ['SUMS', sums], ['SL', SL]], (src) => {
        const [v, c] = src.divmod('t', cols, rows * cols);
        src.intOf('sl', `SL[${v}]`);
        src.int('si', `(sl - 1) * ${cols} + ${c}`);
        src.clampIndex('si', nIds * cols);
        return `(sl > 0 ? DT[t] + SUMS[si] : DT[t])`;
      });
      for (const s of [POS, ST, SL, sums]) host.free(s);
    },

    permute(x, shape, perm, out) {
      const X = S(x);
      const inStrides = stridesFor(shape, shape);
      const outShape = perm.map((p) => shape[p]);
      const { shape: cs, strides } = collapse(outShape, [perm.map((p) => inStrides[p])]);
      elementwise(`permute|${shape.join('x')}|${perm.join(',')}`, S(out), [['X', X]], (src) => {
        const [o] = src.offsets(cs, strides);
        return `X[${o}]`;
      });
    },

    copyRegion,

    adamw(p, g, m, v, o: AdamWStep) {
      const P = S(p), G = S(g), M = S(m), V = S(v);
      if (P.size === 0) return;
      elementwise('adamw:m', M, [['M', M], ['G', G], ['B1', o.beta1], ['OB1', 1 - o.beta1], ['GS', o.gradScale]], () => 'B1 * M[t] + OB1 * (G[t] * GS)');
      elementwise('adamw:v', V, [['V', V], ['G', G], ['B2', o.beta2], ['OB2', 1 - o.beta2], ['GS', o.gradScale]], (src) => {
        src.line('const gi = G[t] * GS;');
        return 'B2 * V[t] + OB2 * gi * gi';
      });
      elementwise('adamw:p', P, [['P', P], ['M', M], ['V', V], ['LR', o.lr], ['EPS', o.eps], ['WD', o.weightDecay], ['BC1', o.biasCorrection1], ['BC2', o.biasCorrection2]], (src) => {
        src.line('const pv = P[t]; const mh = M[t] / BC1; const vh = V[t] / BC2;');
        return 'pv - LR * (mh / (Math.sqrt(vh) + EPS) + WD * pv)';
      });
    },

    sumSquares(x) {
      const X = S(x);
      if (X.size === 0) return 0;
      const out = host.alloc(1);
      reduction({ key: 'sumSquares', out, inputs: [['X', X]], outer: 1, r: X.size, inner: 1, elem: 'X[$I] * X[$I]', combine: 'sum' });
      const v = host.read(out)[0];
      host.free(out);
      return v;
    },
  };
  return kernels;
}
