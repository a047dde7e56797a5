import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, BinaryOp, MatmulSpec, Storage, UnaryOp } from '../../backend.js';
import { RrtError } from '../../errors.js';
import { createRefBackend } from '../ref.js';
import { ATTEND_PARALLEL_MIN } from './attend.js';
import type { WasmHeap } from './heap.js';
import { WeightPacks } from './packs.js';
import type { KernelExports } from './wasm.js';
import { classBytes, createCpuBackend, MATMUL_PARALLEL_MIN, MATMUL_SMALL_M, MATMUL_SMALL_PARALLEL_MIN, sizeClass, type CpuBackend } from './index.js';

const cpu: CpuBackend = createCpuBackend({ threads: 2 });
const ref: Backend = createRefBackend(32);

afterAll(() => cpu.close());

// Deterministic inputs (xorshift) so a failure reproduces; RRT_TEST_SEED picks another stream.
let seed = Number(process.env.RRT_TEST_SEED ?? 12345) | 0 || 12345;
function rand(): number {
  seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
  return ((seed >>> 0) / 4294967296) * 2 - 1;
}
function randn(n: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + ((rand() + 1) / 2) * (hi - lo);
  return out;
}

/** The same values on both backends. */
function both(values: Float32Array): [Storage, Storage] {
  return [cpu.upload(values), ref.upload(values)];
}

function expectClose(actual: Float32Array, expected: Float32Array, rtol = 1e-5, atol = 1e-6, what = ''): void {
  expect(actual.length, `${what} length`).toBe(expected.length);
  let worst = -1, worstErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(e) || Number.isNaN(a)) {
      if (Number.isNaN(e) !== Number.isNaN(a)) { worst = i; worstErr = Infinity; break; }
      continue;
    }
    if (a === e) continue;
    const err = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(err <= 0) && (worst < 0 || err > worstErr)) { worst = i; worstErr = err; }
  }
  if (worst >= 0) {
    expect.fail(`${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (rtol ${rtol}, atol ${atol})`);
  }
}

const read = (s: Storage): Float32Array => s.backend.read(s);

describe('cpu backend: matmul', () => {
  function check(m: number, k: number, n: number, o: Partial<MatmulSpec> & { aBatch?: number; bBatch?: number } = {}): void {
    const batch = o.batch ?? 1;
    const aBatch = o.aBatch ?? batch, bBatch = o.bBatch ?? batch;
    const aOff = o.aBatchOffsets ?? Int32Array.from({ length: batch }, (_, i) => (aBatch === 1 ? 0 : i) * m * k);
    const bOff = o.bBatchOffsets ?? Int32Array.from({ length: batch }, (_, i) => (bBatch === 1 ? 0 : i) * k * n);
    const spec: MatmulSpec = {
      batch, m, k, n, transA: o.transA ?? false, transB: o.transB ?? false,
      aBatchOffsets: aOff, bBatchOffsets: bOff, accumulate: o.accumulate ?? false,
    };
    const [ac, ar] = both(randn(aBatch * m * k));
    const [bc, br] = both(randn(bBatch * k * n));
    const init = o.accumulate ? randn(batch * m * n) : new Float32Array(batch * m * n).fill(7);
    const [oc, or] = both(init);
    cpu.kernels.matmul(ac, bc, oc, spec);
    ref.kernels.matmul(ar, br, or, spec);
    const tol = 1e-5 * Math.sqrt(Math.max(k, 1));
    expectClose(read(oc), read(or), 1e-5, tol, `matmul ${batch}x${m}x${k}x${n} ${JSON.stringify(o)}`);
    for (const s of [ac, bc, oc]) cpu.free(s);
  }

  it('matches the JS kernel at odd and edge sizes', () => {
    for (const [m, k, n] of [[1, 1, 1], [1, 3, 1], [3, 1, 3], [2, 2, 16], [3, 5, 7], [17, 17, 17], [33, 65, 129], [1, 257, 33], [2, 300, 17], [65, 513, 31], [130, 40, 47]]) {
      check(m, k, n);
    }
  });

  it('reads transposed operands in place', () => {
    for (const [m, k, n] of [[1, 1, 1], [3, 5, 7], [17, 33, 18], [33, 65, 129], [5, 300, 40], [40, 514, 70], [64, 257, 48]]) {
      check(m, k, n, { transA: true });
      check(m, k, n, { transB: true });
      check(m, k, n, { transA: true, transB: true });
    }
  });

  it('handles batches with broadcast offsets and accumulation', () => {
    check(5, 7, 9, { batch: 3 });
    check(5, 7, 9, { batch: 4, aBatch: 1 });
    check(17, 9, 33, { batch: 3, bBatch: 1, transB: true });
    check(6, 20, 19, { batch: 2, accumulate: true });
    check(33, 65, 129, { accumulate: true, transA: true });
    // Batch offsets in an arbitrary order.
    check(4, 6, 5, { batch: 3, aBatchOffsets: Int32Array.of(48, 0, 24), bBatchOffsets: Int32Array.of(0, 60, 30), aBatch: 3, bBatch: 3 });
  });

  it('takes the few-row path (B read in place) for m <= MATMUL_SMALL_M, at every tail of k and n', () => {
    const before = Number(cpu.info().details.smallMatmuls);
    let calls = 0;
    for (let m = 1; m <= MATMUL_SMALL_M; m++) {
      for (const [k, n] of [[1, 1], [3, 5], [4, 4], [7, 19], [64, 33], [67, 16], [256, 100]]) {
        check(m, k, n);
        check(m, k, n, { transB: true });
        check(m, k, n, { transB: m % 2 === 0, accumulate: true });
        calls += 3;
      }
    }
    check(1, 64, 40, { batch: 4, aBatchOffsets: Int32Array.of(192, 0, 64, 128), bBatchOffsets: Int32Array.of(0, 7680, 2560, 5120), aBatch: 4, bBatch: 4, transB: true });
    check(1, 40, 64, { batch: 3, bBatch: 1 });
    calls += 2;
    expect(Number(cpu.info().details.smallMatmuls) - before).toBe(calls);
  });

  it('handles k = 0 and empty outputs', () => {
    const a = cpu.alloc(0), b = cpu.alloc(0), out = cpu.upload(new Float32Array(6).fill(3));
    const spec: MatmulSpec = { batch: 1, m: 2, k: 0, n: 3, transA: false, transB: false, aBatchOffsets: new Int32Array(1), bBatchOffsets: new Int32Array(1), accumulate: false };
    cpu.kernels.matmul(a, b, out, spec);
    expect(Array.from(read(out))).toEqual([0, 0, 0, 0, 0, 0]);
    cpu.kernels.matmul(a, b, out, { ...spec, accumulate: true });
    expect(Array.from(read(out))).toEqual([0, 0, 0, 0, 0, 0]);
    cpu.kernels.matmul(a, b, cpu.alloc(0), { ...spec, m: 0 });
  });

  /**
   * linearGroups on cpu against ref (the reference kernel, itself checked against products written
   * out in float64 in ops/grouped-linear.test.ts). A stale value under the output would show: it
   * starts as NaN.
   */
  function checkGroups(be: CpuBackend, rows: number[], k: number, n: number): void {
    const N = rows.reduce((a, b) => a + b, 0);
    const x = randn(N * k), ws = rows.map(() => randn(n * k));
    const oc = be.upload(new Float32Array(N * n).fill(NaN)), or = ref.alloc(N * n);
    be.kernels.linearGroups!(be.upload(x), ws.map((w) => be.upload(w)), Int32Array.from(rows), k, n, oc);
    ref.kernels.linearGroups!(ref.upload(x), ws.map((w) => ref.upload(w)), Int32Array.from(rows), k, n, or);
    expectClose(read(oc), read(or), 1e-4, 1e-5, `linearGroups rows ${rows} k ${k} n ${n}`);
  }

  it('linearGroups: each group of rows through its own weight, on one thread (few rows and packed)', () => {
    const one = createCpuBackend({ threads: 1 });
    try {
      checkGroups(one, [3, 5], 64, 40); // few rows: B read in place, group by group
      checkGroups(one, [30, 10], 256, 256); // packed: one job, a group per batch item
      checkGroups(one, [17, 0, 70, 2], 33, 19); // an empty group, odd k and n, more than one row block
      checkGroups(one, [1], 8, 8);
    } finally {
      one.close();
    }
  });

  describe('on worker threads', () => {
    beforeAll(async () => {
      // Start the pool, then wait for the worker to take jobs.
      check(128, 128, 128);
      expect(await cpu.whenThreadsReady(20_000)).toBe(1);
    });

    it('splits large matmuls by columns, rows and batches', () => {
      expect(256 * 256 * 256).toBeGreaterThanOrEqual(MATMUL_PARALLEL_MIN);
      check(256, 256, 256);
      check(40, 300, 1000);
      check(1001, 70, 20); // odd m, narrow
      check(20, 64, 1000, { transA: true, transB: true });
      check(128, 128, 96, { batch: 4 });
      check(127, 129, 131, { batch: 3, aBatch: 1, accumulate: true });
      check(18, 2048, 1000); // one row block: split by column steps
      check(17, 70000, 20); // k beyond the default pack buffer
      // Which thread takes which chunk depends on timing; on a busy machine the worker may miss
      // a job. It must take part eventually.
      for (let i = 0; i < 100 && cpu.info().details.workerChunks === 0; i++) check(256, 256, 256);
      const d = cpu.info().details;
      expect(d.workersReady).toBe(1);
      expect(d.parallelMatmuls).toBeGreaterThan(0);
      expect(d.workerChunks).toBeGreaterThan(0);
    });

    it('shares the segments of a large attendCaches call with the worker, with the values of ref', () => {
      // 24 sequences of 1 or 3 new tokens over 20..89 cached ones: H 4, KV 2, Dh 64.
      const H = 4, KV = 2, Dh = 64, n = 24;
      const starts = Int32Array.from({ length: n }, (_, i) => 20 + ((i * 37) % 70));
      const lens = Int32Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 3 : 1));
      const caps = Int32Array.from(starts, (s, i) => s + lens[i] + (i % 4));
      const S = lens.reduce((a, b) => a + b, 0);
      const reads = Array.from(starts).reduce((a, s, i) => a + lens[i] * (s + 1), 0) * 2 * KV * Dh;
      expect(reads).toBeGreaterThanOrEqual(ATTEND_PARALLEL_MIN);
      const [qc, qr] = both(randn(S * H * Dh));
      const caches = Array.from(caps, (c) => [both(randn(KV * c * Dh)), both(randn(KV * c * Dh))]);
      const run = (be: Backend, side: 0 | 1) => {
        const out = be.alloc(S * H * Dh);
        be.kernels.attendCaches!(side === 0 ? qc : qr, caches.map((c) => c[0][side]), caches.map((c) => c[1][side]), caps, starts, lens, H, KV, Dh, 0.125, out);
        return read(out);
      };
      const want = run(ref, 1);
      expectClose(run(cpu, 0), want, 1e-4, 1e-5, 'attendCaches');
      // As with matmuls, a busy machine may make the worker miss a call: it must join eventually.
      for (let i = 0; i < 100 && Number(cpu.info().details.workerSegments) === 0; i++) expectClose(run(cpu, 0), want, 1e-4, 1e-5, 'attendCaches');
      expect(Number(cpu.info().details.parallelAttends)).toBeGreaterThan(0);
      expect(Number(cpu.info().details.workerSegments)).toBeGreaterThan(0);
    });

    it('shares a grouped Linear product (linearGroups) with the worker', () => {
      const before = Number(cpu.info().details.parallelMatmuls);
      checkGroups(cpu, [30, 10], 256, 512); // a serving call at two depths
      checkGroups(cpu, [9, 40, 0, 3], 256, 256);
      checkGroups(cpu, [12, 4], 1024, 600); // few rows, enough work to split columns
      checkGroups(cpu, [130, 2], 70, 1000);
      for (let i = 0; i < 100 && Number(cpu.info().details.parallelMatmuls) === before; i++) checkGroups(cpu, [30, 10], 256, 512);
      expect(Number(cpu.info().details.parallelMatmuls)).toBeGreaterThan(before);
    });

    it('splits few-row matmuls by column blocks (B read in place)', () => {
      expect(16 * 1024 * 600).toBeGreaterThanOrEqual(MATMUL_SMALL_PARALLEL_MIN);
      const before = Number(cpu.info().details.smallMatmuls);
      check(16, 1024, 600, { transB: true });
      check(8, 1024, 1100);
      check(15, 1025, 555, { transB: true, accumulate: true });
      check(4, 700, 1001, { batch: 3, bBatch: 1 });
      check(2, 300000, 16, { transB: true }); // long k, one column block per thread
      expect(Number(cpu.info().details.smallMatmuls) - before).toBeGreaterThanOrEqual(5);
    });
  });
});

describe('cpu backend: packed weights (packWeight)', () => {
  const ONE = new Int32Array(1);
  const linearSpec = (m: number, k: number, n: number, accumulate = false): MatmulSpec => ({
    batch: 1, m, k, n, transA: false, transB: true, aBatchOffsets: ONE, bBatchOffsets: ONE, accumulate,
  });
  const packedJobs = (be: CpuBackend): number => Number(be.info().details.packedMatmuls);

  /** x W^T with W packed against ref; the product must read the packed form (counted). */
  function checkPacked(be: CpuBackend, m: number, k: number, n: number, accumulate = false): void {
    const x = randn(m * k), w = randn(n * k), init = randn(m * n);
    const wc = be.upload(w);
    expect(be.packWeight!(wc, n, k)).toBe(true);
    const oc = be.upload(accumulate ? init : new Float32Array(m * n).fill(NaN)), or = ref.upload(init);
    const before = packedJobs(be);
    be.kernels.matmul(be.upload(x), wc, oc, linearSpec(m, k, n, accumulate));
    ref.kernels.matmul(ref.upload(x), ref.upload(w), or, linearSpec(m, k, n, accumulate));
    expect(packedJobs(be), `${m}x${k}x${n} read the packed form`).toBe(before + 1);
    expectClose(read(oc), read(or), 1e-4, 1e-5, `packed ${m}x${k}x${n}${accumulate ? ' accumulate' : ''}`);
    be.releaseWeight!(wc);
  }

  function shapes(be: CpuBackend): void {
    checkPacked(be, 17, 256, 256); // just past the few-row path
    checkPacked(be, 33, 300, 70); // two k slabs, a last panel of 6 columns
    checkPacked(be, 70, 530, 33); // three k slabs, two row blocks
    checkPacked(be, 20, 64, 2100); // two column steps (the second starts at packed column 2048)
    checkPacked(be, 40, 1, 5);
    checkPacked(be, 31, 129, 97, true);
  }

  it('products read a packed weight and match ref (one thread)', () => {
    const one = createCpuBackend({ threads: 1 });
    try {
      shapes(one);
    } finally {
      one.close();
    }
  });

  it('products read a packed weight and match ref (worker threads)', async () => {
    check2(128);
    expect(await cpu.whenThreadsReady(20_000)).toBe(1);
    shapes(cpu);
    checkPacked(cpu, 64, 256, 2048); // an LM head call: columns split across the threads
  });

  function check2(size: number): void {
    // A large product to start the pool.
    const a = cpu.upload(randn(size * size)), c = cpu.alloc(size * size);
    cpu.kernels.matmul(a, a, c, { ...linearSpec(size, size, size), transB: false });
  }

  it('keeps the packed form until the last release; kernel writes and free drop it', () => {
    const m = 24, k = 40, n = 48;
    const x = cpu.upload(randn(m * k)), w1 = randn(n * k), w2 = randn(n * k);
    const w = cpu.upload(w1), out = cpu.alloc(m * n), want = ref.alloc(m * n);
    const product = (): Float32Array => {
      cpu.kernels.matmul(x, w, out, linearSpec(m, k, n));
      return read(out);
    };
    const refProduct = (values: Float32Array): Float32Array => {
      ref.kernels.matmul(ref.upload(read(x)), ref.upload(values), want, linearSpec(m, k, n));
      return read(want);
    };
    const packed = (): number => Number(cpu.info().details.packedWeights);
    const start = packed();
    expect(cpu.packWeight!(w, n, k)).toBe(true);
    expect(cpu.packWeight!(w, n, k)).toBe(true);
    expect(packed()).toBe(start + 1);
    cpu.releaseWeight!(w);
    expect(packed()).toBe(start + 1);
    // Writing through data is not seen: the product still reads the packed form of w1.
    (w as unknown as { data: Float32Array }).data.set(w2);
    expectClose(product(), refProduct(w1), 1e-4, 1e-5, 'packed form after a write through data');
    // A kernel write (copy) drops it: the product reads w again.
    cpu.kernels.copy(cpu.upload(w2), w);
    expect(packed()).toBe(start);
    expectClose(product(), refProduct(w2), 1e-4, 1e-5, 'after copy');
    cpu.releaseWeight!(w); // the hold left: nothing to do
    for (const write of [
      () => cpu.kernels.fill(w, 0.5),
      () => cpu.kernels.adamw(w, cpu.upload(randn(n * k)), cpu.upload(new Float32Array(n * k)), cpu.upload(new Float32Array(n * k)), {
        lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, biasCorrection1: 0.1, biasCorrection2: 0.001, gradScale: 1,
      }),
      () => cpu.kernels.copyRegion(cpu.upload(w1), [n, k], [0, 0], w, [n, k], [0, 0], [1, k], false),
      () => cpu.kernels.scatterAdd(cpu.upload(randn(k)), Int32Array.of(3), k, w),
    ]) {
      cpu.packWeight!(w, n, k);
      write();
      expect(packed(), String(write)).toBe(start);
      expectClose(product(), refProduct(read(w)), 1e-4, 1e-5, `after ${String(write)}`);
    }
    cpu.packWeight!(w, n, k);
    cpu.free(w);
    expect(packed()).toBe(start);
    expect(cpu.packWeight!(cpu.upload(randn(6)), 4, 2)).toBe(false); // 4 x 2 is not its size
  });

  it('a weight that does not fit a second time stays unpacked instead of failing', () => {
    const full = { alloc: () => { throw new RrtError('cpu backend: out of wasm memory'); }, free: () => {}, lastClass: 0 };
    const exports = { matmulPackedBytes: () => 64, matmulPackB: () => { throw new Error('nothing to pack into'); } };
    const packs = new WeightPacks(exports as unknown as KernelExports, full as unknown as WasmHeap);
    const w = cpu.upload(randn(16));
    expect(packs.pack(w, 4, 4)).toBe(false);
    expect(packs.count).toBe(0);
    expect(packs.address(w, 4, 4)).toBe(0);
  });

  it('linearGroups reads the groups\' packed forms when all have one', () => {
    const rows = [30, 10], k = 256, n = 256;
    const x = randn(40 * k), ws = rows.map(() => randn(n * k));
    const wc = ws.map((w) => cpu.upload(w));
    const want = ref.alloc(40 * n);
    ref.kernels.linearGroups!(ref.upload(x), ws.map((w) => ref.upload(w)), Int32Array.from(rows), k, n, want);
    const run = (): Float32Array => {
      const out = cpu.upload(new Float32Array(40 * n).fill(NaN));
      cpu.kernels.linearGroups!(cpu.upload(x), wc, Int32Array.from(rows), k, n, out);
      return read(out);
    };
    cpu.packWeight!(wc[1], n, k);
    let before = packedJobs(cpu);
    expectClose(run(), read(want), 1e-4, 1e-5, 'one group packed');
    expect(packedJobs(cpu)).toBe(before);
    cpu.packWeight!(wc[0], n, k);
    before = packedJobs(cpu);
    expectClose(run(), read(want), 1e-4, 1e-5, 'both packed');
    expect(packedJobs(cpu)).toBe(before + 1);
    for (const w of wc) cpu.releaseWeight!(w);
  });
});

describe('cpu backend: elementwise', () => {
  const sizes = [1, 3, 4, 17, 33, 1000];
  const unaryRange: Record<UnaryOp, [number, number]> = {
    neg: [-3, 3], exp: [-20, 20], log: [1e-3, 100], sqrt: [0, 100], rsqrt: [1e-2, 100], abs: [-3, 3],
    tanh: [-6, 6], sigmoid: [-20, 20], relu: [-3, 3], gelu: [-6, 6], gelu_tanh: [-6, 6], silu: [-20, 20],
    square: [-3, 3], sign: [-3, 3], recip: [0.1, 10],
  };

  it('unary ops match the JS kernels', () => {
    for (const op of Object.keys(unaryRange) as UnaryOp[]) {
      for (const n of sizes) {
        const x = randn(n, ...unaryRange[op]);
        if (n >= 3 && op !== 'log' && op !== 'sqrt' && op !== 'rsqrt' && op !== 'recip') x[1] = 0;
        const [xc, xr] = both(x);
        const oc = cpu.alloc(n), or = ref.alloc(n);
        cpu.kernels.unary(op, xc, oc);
        ref.kernels.unary(op, xr, or);
        expectClose(read(oc), read(or), 2e-6, 1e-7, `unary ${op} n=${n}`);
      }
    }
  });

  it('transcendentals stay accurate near 0 and at the extremes', () => {
    const x = Float32Array.of(0, -0, 1e-6, -1e-6, 1e-3, -1e-3, 0.6, -0.6, 0.65, 9, -9, 20, -20, 50, -50, 88, 88.5, 89, 100, -87, -95, -103, -110, -1000, Infinity, -Infinity, NaN);
    for (const op of ['exp', 'tanh', 'sigmoid', 'silu', 'gelu', 'gelu_tanh', 'log'] as UnaryOp[]) {
      const [xc, xr] = both(op === 'log' ? x.map(Math.abs) : x);
      const oc = cpu.alloc(x.length), or = ref.alloc(x.length);
      cpu.kernels.unary(op, xc, oc);
      ref.kernels.unary(op, xr, or);
      // atol: denormal exp results, and gelu(-9) = -1e-18, which the JS kernel rounds to 0.
      expectClose(read(oc), read(or), 3e-6, 1e-15, `unary ${op} extremes`);
    }
  });

  it('unary gradients match the JS kernels', () => {
    for (const op of Object.keys(unaryRange) as UnaryOp[]) {
      for (const n of [1, 5, 37]) {
        const x = randn(n, ...unaryRange[op]);
        const yv = new Float32Array(n);
        const xr0 = ref.upload(x), yr0 = ref.alloc(n);
        ref.kernels.unary(op, xr0, yr0);
        yv.set(read(yr0));
        const [xc, xr] = both(x), [yc, yr] = both(yv), [gc, gr] = both(randn(n));
        const dc = cpu.alloc(n), dr = ref.alloc(n);
        cpu.kernels.unaryGrad(op, xc, yc, gc, dc);
        ref.kernels.unaryGrad(op, xr, yr, gr, dr);
        expectClose(read(dc), read(dr), 5e-6, 1e-6, `unaryGrad ${op} n=${n}`);
      }
    }
  });

  const binOps: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'eq', 'gt', 'pow'];
  function checkBinary(op: BinaryOp, aShape: number[], bShape: number[]): void {
    const outShape = aShape.map((d, i) => Math.max(d, bShape[i]));
    const size = (s: number[]) => s.reduce((x, y) => x * y, 1);
    const lo = op === 'pow' ? 0.1 : -2;
    const av = randn(size(aShape), lo, 2), bv = randn(size(bShape), op === 'div' ? 0.5 : -2, 2);
    // Exact ties for eq/maximum.
    if (av.length === bv.length && av.length > 2) bv[1] = av[1];
    const [ac, ar] = both(av), [bc, br] = both(bv);
    const n = size(outShape);
    const oc = cpu.alloc(n), or = ref.alloc(n);
    cpu.kernels.binary(op, ac, aShape, bc, bShape, oc, outShape);
    ref.kernels.binary(op, ar, aShape, br, bShape, or, outShape);
    expectClose(read(oc), read(or), 1e-6, 1e-7, `binary ${op} ${JSON.stringify(aShape)} ${JSON.stringify(bShape)}`);
  }

  it('binary ops: same shape, scalars, row/column/suffix broadcasts and the general case', () => {
    const cases: [number[], number[]][] = [
      [[1], [1]], [[3], [3]], [[17], [17]], [[1000], [1000]],
      [[5, 7], [1, 1]], [[1, 1], [5, 7]], [[33], [1]], [[1], [33]],
      [[5, 7], [1, 7]], [[1, 7], [5, 7]], [[5, 7], [5, 1]], [[5, 1], [5, 7]],
      [[5, 1], [1, 7]], [[1, 7], [5, 1]], // both broadcast
      [[2, 3, 19], [1, 3, 19]], [[2, 3, 19], [2, 3, 1]], [[2, 3, 19], [1, 1, 19]], [[2, 3, 19], [2, 1, 1]],
      [[2, 3, 19], [2, 1, 19]], [[2, 1, 19], [1, 3, 1]], [[4, 1, 3, 1], [1, 5, 1, 6]], // general: JS fallback
      [[1, 3, 19], [2, 3, 1]], [[1, 5, 7], [1, 1, 7]], [[1, 1, 7], [1, 5, 7]], [[1, 5, 7], [1, 5, 1]], [[3, 1, 5, 1], [3, 1, 1, 1]],
      // A broadcast in the middle after axes both share (RoPE): one wasm call per outer index.
      [[5, 4, 8], [5, 1, 8]], [[5, 1, 8], [5, 4, 8]], [[2, 3, 4, 5], [2, 3, 1, 5]], [[2, 3, 4, 5], [2, 3, 4, 1]], [[2, 3, 4, 5], [2, 1, 4, 1]],
    ];
    for (const op of binOps) for (const [a, b] of cases) checkBinary(op, a, b);
  });

  it('affine, clamp, powScalar, fill and copy', () => {
    for (const n of sizes) {
      const x = randn(n, -3, 3);
      if (n > 2) x[2] = NaN;
      const [xc, xr] = both(x);
      const oc = cpu.alloc(n), or = ref.alloc(n);
      cpu.kernels.affine(xc, 1.5, -0.25, oc); ref.kernels.affine(xr, 1.5, -0.25, or);
      expectClose(read(oc), read(or), 1e-6, 1e-7, 'affine');
      cpu.kernels.clamp(xc, -1, 0.5, oc); ref.kernels.clamp(xr, -1, 0.5, or);
      expectClose(read(oc), read(or), 0, 0, 'clamp');
      for (const p of [1, 2, -1, 3, 0.5]) {
        cpu.kernels.powScalar(xc, p, oc); ref.kernels.powScalar(xr, p, or);
        expectClose(read(oc), read(or), 1e-6, 1e-7, `powScalar ${p}`);
      }
      cpu.kernels.fill(oc, 2.5);
      expect(Array.from(read(oc))).toEqual(new Array(n).fill(2.5));
      cpu.kernels.copy(xc, oc);
      expectClose(read(oc), x, 0, 0, 'copy');
    }
  });
});

describe('cpu backend: rows, reductions, optimizer', () => {
  const shapes: [number, number][] = [[1, 1], [3, 3], [2, 17], [5, 33], [4, 256], [2, 1001]];

  it('softmax and log-softmax with gradients', () => {
    for (const [rows, cols] of shapes) {
      for (const log of [false, true]) {
        const x = randn(rows * cols, -8, 8);
        if (rows > 2) x.fill(-Infinity, cols, 2 * cols); // a fully masked row
        if (cols > 3) x[3] = -Infinity;
        const [xc, xr] = both(x);
        const yc = cpu.alloc(x.length), yr = ref.alloc(x.length);
        cpu.kernels.softmax(xc, rows, cols, log, yc);
        ref.kernels.softmax(xr, rows, cols, log, yr);
        expectClose(read(yc), read(yr), 2e-6, 1e-7, `softmax log=${log} ${rows}x${cols}`);
        // Non-finite outputs (masked entries, a fully masked row) replaced by valid ones.
        const y = read(yr).map((v) => (Number.isFinite(v) ? v : log ? -Math.log(cols) : 1 / cols));
        const [yc2, yr2] = both(y), [gc, gr] = both(randn(x.length));
        const dc = cpu.alloc(x.length), dr = ref.alloc(x.length);
        cpu.kernels.softmaxGrad(yc2, gc, rows, cols, log, dc);
        ref.kernels.softmaxGrad(yr2, gr, rows, cols, log, dr);
        expectClose(read(dc), read(dr), 1e-5, 1e-6, `softmaxGrad log=${log} ${rows}x${cols}`);
      }
    }
  });

  it('layerNorm with and without affine parameters, and its gradient', () => {
    for (const [rows, cols] of shapes) {
      for (const affine of [true, false]) {
        const [xc, xr] = both(randn(rows * cols, -2, 3));
        const [wc, wr] = both(randn(cols)), [bc, br] = both(randn(cols));
        const oc = cpu.alloc(rows * cols), or = ref.alloc(rows * cols);
        const mc = cpu.alloc(rows), mr = ref.alloc(rows), rc = cpu.alloc(rows), rr = ref.alloc(rows);
        cpu.kernels.layerNorm(xc, affine ? wc : null, affine ? bc : null, rows, cols, 1e-5, oc, mc, rc);
        ref.kernels.layerNorm(xr, affine ? wr : null, affine ? br : null, rows, cols, 1e-5, or, mr, rr);
        expectClose(read(oc), read(or), 1e-5, 2e-6, `layerNorm ${rows}x${cols}`);
        expectClose(read(mc), read(mr), 1e-5, 1e-7, 'layerNorm mean');
        expectClose(read(rc), read(rr), 1e-5, 1e-7, 'layerNorm rstd');
        const [gc, gr] = both(randn(rows * cols));
        const dxc = cpu.alloc(rows * cols), dxr = ref.alloc(rows * cols);
        const dw0 = randn(cols), db0 = randn(cols);
        const [dwc, dwr] = both(dw0), [dbc, dbr] = both(db0);
        cpu.kernels.layerNormGrad(xc, affine ? wc : null, mr.backend === ref ? mc : mc, rc, gc, rows, cols, dxc, affine ? dwc : null, affine ? dbc : null);
        ref.kernels.layerNormGrad(xr, affine ? wr : null, mr, rr, gr, rows, cols, dxr, affine ? dwr : null, affine ? dbr : null);
        expectClose(read(dxc), read(dxr), 1e-4, 2e-5, `layerNormGrad dx ${rows}x${cols}`);
        expectClose(read(dwc), read(dwr), 1e-5, 1e-5, 'layerNormGrad dw');
        expectClose(read(dbc), read(dbr), 1e-5, 1e-5, 'layerNormGrad db');
      }
    }
  });

  it('rmsNorm (w, 1 + w, no weight) and its gradient', () => {
    for (const [rows, cols] of shapes) {
      for (const mode of ['w', 'addOne', 'none'] as const) {
        const [xc, xr] = both(randn(rows * cols, -2, 2));
        const [wc, wr] = both(randn(cols));
        const w = mode === 'none' ? null : 1;
        const oc = cpu.alloc(rows * cols), or = ref.alloc(rows * cols), rc = cpu.alloc(rows), rr = ref.alloc(rows);
        cpu.kernels.rmsNorm(xc, w && wc, rows, cols, 1e-6, mode === 'addOne', oc, rc);
        ref.kernels.rmsNorm(xr, w && wr, rows, cols, 1e-6, mode === 'addOne', or, rr);
        expectClose(read(oc), read(or), 1e-5, 1e-6, `rmsNorm ${mode} ${rows}x${cols}`);
        expectClose(read(rc), read(rr), 1e-5, 1e-7, 'rmsNorm rstd');
        const [gc, gr] = both(randn(rows * cols));
        const [dwc, dwr] = both(randn(cols));
        const dxc = cpu.alloc(rows * cols), dxr = ref.alloc(rows * cols);
        cpu.kernels.rmsNormGrad(xc, w && wc, rc, gc, rows, cols, mode === 'addOne', dxc, w && dwc);
        ref.kernels.rmsNormGrad(xr, w && wr, rr, gr, rows, cols, mode === 'addOne', dxr, w && dwr);
        expectClose(read(dxc), read(dxr), 1e-4, 2e-5, `rmsNormGrad dx ${mode} ${rows}x${cols}`);
        expectClose(read(dwc), read(dwr), 1e-5, 1e-5, 'rmsNormGrad dw');
      }
    }
  });

  it('cross-entropy with ignored rows, and its gradient', () => {
    for (const [rows, vocab] of [[1, 1], [3, 5], [6, 17], [4, 257]] as [number, number][]) {
      const [xc, xr] = both(randn(rows * vocab, -6, 6));
      const targets = Int32Array.from({ length: rows }, (_, r) => (r === 1 ? -100 : (r * 7) % vocab));
      const lc = cpu.alloc(rows), lr = ref.alloc(rows), sc = cpu.alloc(rows), sr = ref.alloc(rows);
      cpu.kernels.crossEntropy(xc, targets, rows, vocab, -100, lc, sc);
      ref.kernels.crossEntropy(xr, targets, rows, vocab, -100, lr, sr);
      expectClose(read(lc), read(lr), 1e-5, 1e-6, `crossEntropy ${rows}x${vocab}`);
      expectClose(read(sc), read(sr), 1e-6, 1e-6, 'crossEntropy lse');
      const [gc, gr] = both(randn(rows));
      const dc = cpu.alloc(rows * vocab), dr = ref.alloc(rows * vocab);
      cpu.kernels.crossEntropyGrad(xc, targets, sc, gc, rows, vocab, -100, dc);
      ref.kernels.crossEntropyGrad(xr, targets, sr, gr, rows, vocab, -100, dr);
      expectClose(read(dc), read(dr), 1e-5, 1e-7, `crossEntropyGrad ${rows}x${vocab}`);
    }
    const x = cpu.upload(randn(6));
    expect(() => cpu.kernels.crossEntropy(x, Int32Array.of(0, 3), 2, 3, -100, cpu.alloc(2), cpu.alloc(2))).toThrow(/outside/);
  });

  it('reduce sum over [outer, r, inner] (and max/argmax via JS)', () => {
    for (const [outer, r, inner] of [[1, 1, 1], [1, 7, 1], [3, 33, 1], [2, 5, 3], [4, 9, 17], [1, 1000, 64], [3, 1, 5]]) {
      const [xc, xr] = both(randn(outer * r * inner));
      for (const op of ['sum', 'max', 'argmax'] as const) {
        const oc = cpu.alloc(outer * inner), or = ref.alloc(outer * inner);
        cpu.kernels.reduce(op, xc, outer, r, inner, oc);
        ref.kernels.reduce(op, xr, outer, r, inner, or);
        expectClose(read(oc), read(or), 1e-6, 1e-6, `reduce ${op} ${outer}x${r}x${inner}`);
      }
    }
  });

  it('adamw and sumSquares', () => {
    for (const n of [1, 3, 17, 1000]) {
      const [pc, pr] = both(randn(n)), [gc, gr] = both(randn(n)), [mc, mr] = both(randn(n, -0.1, 0.1)), [vc, vr] = both(randn(n, 0, 0.01));
      const step = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, biasCorrection1: 1 - 0.9 ** 3, biasCorrection2: 1 - 0.95 ** 3, gradScale: 0.5 };
      cpu.kernels.adamw(pc, gc, mc, vc, step);
      ref.kernels.adamw(pr, gr, mr, vr, step);
      expectClose(read(pc), read(pr), 1e-5, 1e-6, 'adamw p');
      expectClose(read(mc), read(mr), 1e-5, 1e-7, 'adamw m');
      expectClose(read(vc), read(vr), 1e-5, 1e-9, 'adamw v');
      const s = cpu.kernels.sumSquares(pc), t = ref.kernels.sumSquares(pc);
      expect(Math.abs(s - t)).toBeLessThanOrEqual(1e-9 * Math.max(1, t));
    }
  });
});

describe('cpu backend: data movement', () => {
  it('permute matches the JS kernel (merged, strided and trivial axes)', () => {
    const cases: [number[], number[]][] = [
      [[5], [0]], [[3, 4], [1, 0]], [[3, 4], [0, 1]], [[2, 3, 4], [2, 0, 1]], [[2, 5, 3, 7], [0, 2, 1, 3]],
      [[2, 3, 2, 4, 5], [0, 3, 1, 2, 4]], [[1, 6, 1, 5], [3, 2, 1, 0]], [[4, 1, 3], [1, 2, 0]], [[2, 3, 0], [2, 1, 0]],
      [[17, 33], [1, 0]],
    ];
    for (const [shape, perm] of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      const [xc, xr] = both(randn(n));
      const oc = cpu.alloc(n), or = ref.alloc(n);
      cpu.kernels.permute(xc, shape, perm, oc);
      ref.kernels.permute(xr, shape, perm, or);
      expectClose(read(oc), read(or), 0, 0, `permute ${JSON.stringify(shape)} ${JSON.stringify(perm)}`);
    }
  });

  it('copyRegion matches the JS kernel (unit, merged and strided dims, scalars, accumulate)', () => {
    // [source shape, source start, destination shape, destination start, region]
    const cases: [number[], number[], number[], number[], number[]][] = [
      [[], [], [], [], []], [[7], [2], [9], [1], [4]], [[3, 4], [0, 0], [3, 4], [0, 0], [3, 4]],
      [[3, 4], [1, 0], [5, 4], [2, 0], [2, 4]], [[4, 6], [0, 1], [4, 3], [0, 0], [4, 3]],
      [[4, 6], [0, 5], [4, 2], [0, 1], [4, 1]], [[8, 4, 64], [0, 0, 0], [8, 4, 64], [0, 0, 32], [8, 4, 32]],
      [[12, 1, 5], [8, 0, 0], [4, 9, 5], [0, 3, 0], [4, 1, 5]], [[2, 3, 4, 5], [1, 0, 2, 1], [3, 3, 6, 5], [0, 1, 0, 0], [1, 2, 2, 4]],
      [[1, 4, 1, 6], [0, 0, 0, 0], [2, 4, 3, 6], [1, 0, 2, 0], [1, 4, 1, 6]], [[3, 5], [0, 0], [3, 5], [0, 0], [0, 5]],
    ];
    for (const [srcShape, srcStart, dstShape, dstStart, region] of cases) {
      for (const accumulate of [false, true]) {
        const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
        const [sc, sr] = both(randn(size(srcShape)));
        const [dc, dr] = both(randn(size(dstShape)));
        cpu.kernels.copyRegion(sc, srcShape, srcStart, dc, dstShape, dstStart, region, accumulate);
        ref.kernels.copyRegion(sr, srcShape, srcStart, dr, dstShape, dstStart, region, accumulate);
        expectClose(read(dc), read(dr), 0, 0, `copyRegion ${JSON.stringify([srcShape, srcStart, dstShape, dstStart, region])} accumulate ${accumulate}`);
      }
    }
  });

  it('gather and scatterAdd rows, rejecting out-of-range ids', () => {
    const rows = 7, cols = 13;
    const [tc, tr] = both(randn(rows * cols));
    const ids = Int32Array.of(3, 0, 6, 3, 3, 1);
    const oc = cpu.alloc(ids.length * cols), or = ref.alloc(ids.length * cols);
    cpu.kernels.gather(tc, ids, cols, oc);
    ref.kernels.gather(tr, ids, cols, or);
    expectClose(read(oc), read(or), 0, 0, 'gather');
    const [gc, gr] = both(randn(ids.length * cols));
    cpu.kernels.scatterAdd(gc, ids, cols, tc);
    ref.kernels.scatterAdd(gr, ids, cols, tr);
    expectClose(read(tc), read(tr), 1e-6, 1e-7, 'scatterAdd');
    expect(() => cpu.kernels.gather(tc, Int32Array.of(7), cols, oc)).toThrow(/outside/);
    expect(() => cpu.kernels.scatterAdd(gc, Int32Array.of(-1), cols, tc)).toThrow(/outside/);
  });
});

describe('cpu backend: storage and allocator', () => {
  it('size classes cover every size with at most 25% slack', () => {
    for (const bytes of [1, 4, 63, 64, 65, 1000, 1024, 1025, 1280, 1281, 2048, 2049, 4096, 12345, 1 << 20, (1 << 20) + 4, 2 ** 31 + 8, 2 ** 32 - 64]) {
      const c = sizeClass(bytes);
      expect(classBytes(c)).toBeGreaterThanOrEqual(bytes);
      if (c > 0) expect(classBytes(c - 1)).toBeLessThan(bytes);
      if (bytes > 1024) expect(classBytes(c)).toBeLessThanOrEqual(bytes * 1.25 + 64);
    }
  });

  it('reuses freed blocks, keeps views valid across growth, and counts storages', () => {
    const be = createCpuBackend({ threads: 1 });
    const a = be.alloc(1000);
    const p = (a as unknown as { ptr: number }).ptr;
    be.free(a);
    const b = be.alloc(1001); // same size class
    expect((b as unknown as { ptr: number }).ptr).toBe(p);
    expect(() => be.free(a)).toThrow(/twice/);
    const view = (b as unknown as { data: Float32Array }).data;
    view.fill(4);
    const before = be.memory().bytesReserved;
    const big = be.alloc(16 << 20); // 64 MiB: grows the memory
    expect(be.memory().bytesReserved).toBeGreaterThan(before);
    expect(view[999]).toBe(4);
    view[0] = 5;
    expect(be.read(b)[0]).toBe(5);
    be.kernels.fill(big, 1);
    expect(be.kernels.sumSquares(big)).toBe(16 << 20);
    expect(be.memory()).toMatchObject({ storages: 2, bytesInUse: (1001 + (16 << 20)) * 4 });
    const z = be.alloc(0);
    expect(be.read(z).length).toBe(0);
    be.free(z);
    be.free(b);
    be.free(big);
    expect(be.memory()).toMatchObject({ storages: 0, bytesInUse: 0 });
  });

  it('runs at flat memory over many allocations', () => {
    const be = createCpuBackend({ threads: 1 });
    const sizes = Array.from({ length: 200 }, (_, i) => 1 + ((i * 7919) % 5000));
    let reserved = 0;
    for (let round = 0; round < 20; round++) {
      const live = sizes.map((n) => be.alloc(n));
      for (let i = 0; i < live.length; i += 2) be.free(live[i]);
      for (let i = 1; i < live.length; i += 2) be.free(live[i]);
      if (round === 1) reserved = be.memory().bytesReserved;
    }
    expect(be.memory().storages).toBe(0);
    expect(be.memory().bytesReserved).toBe(reserved);
    const many = Array.from({ length: 20000 }, () => be.alloc(16));
    for (const s of many) be.free(s);
    expect(be.memory().storages).toBe(0);
  });

  it('uploads and reads values, and reports info', () => {
    const v = randn(37);
    const s = cpu.upload(v);
    expectClose(cpu.read(s), v, 0, 0, 'read');
    cpu.free(s);
    const info = cpu.info();
    expect(info.name).toBe('cpu');
    expect(info.details).toMatchObject({ threads: 2, simd: true });
    expect(['native', 'flag', 'off']).toContain(info.details.fma);
  });
});
