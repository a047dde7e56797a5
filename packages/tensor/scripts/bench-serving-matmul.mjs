// The Linear products of a serving call on the cpu backend: m rows (decode tokens and prompt
// rows of one call) times a weight stored [n, k] (transB, as Linear keeps it), each call with
// another of 12 weights so they come from memory, as a served model's do. Prints the median
// microseconds per product for each shape. Build first (`npx turbo run build
// --filter=@rrt/tensor`), then `node packages/tensor/scripts/bench-serving-matmul.mjs`;
// RRT_THREADS picks the thread count.
import { createCpuBackend } from '../dist/index.js';

const cpu = createCpuBackend({ threads: Number(process.env.RRT_THREADS ?? 2) });
const shapes = [[24, 256, 512], [32, 256, 512], [32, 512, 256], [32, 256, 2048], [64, 256, 512]]; // m, k, n
let seed = 7;
const values = (n) => Float32Array.from({ length: n }, () => ((seed = (seed * 16807) % 2147483647) / 2147483647) - 0.5);
// A large product starts the worker threads.
const big = cpu.upload(values(256 * 256));
cpu.kernels.matmul(big, big, cpu.alloc(256 * 256), { batch: 1, m: 256, k: 256, n: 256, transA: false, transB: false, aBatchOffsets: Int32Array.of(0), bBatchOffsets: Int32Array.of(0), accumulate: false });
if (cpu.threads > 1) await cpu.whenThreadsReady(10_000);
const zero = Int32Array.of(0);
const result = {};
for (const [m, k, n] of shapes) {
  const weights = Array.from({ length: 12 }, () => cpu.upload(values(n * k)));
  const x = cpu.upload(values(m * k)), y = cpu.alloc(m * n);
  const spec = { batch: 1, m, k, n, transA: false, transB: true, aBatchOffsets: zero, bBatchOffsets: zero, accumulate: false };
  let i = 0;
  for (let r = 0; r < 60; r++) cpu.kernels.matmul(x, weights[i++ % 12], y, spec);
  const medians = [];
  for (let rep = 0; rep < 7; rep++) {
    const t = performance.now();
    for (let r = 0; r < 120; r++) cpu.kernels.matmul(x, weights[i++ % 12], y, spec);
    medians.push(((performance.now() - t) / 120) * 1000);
  }
  result[`${m}x${k}x${n}`] = +medians.sort((a, b) => a - b)[3].toFixed(1);
}
console.log(JSON.stringify({ threads: cpu.threads, usPerProduct: result }));
cpu.close();
