// The matrix-vector products of one batch-1 decode step of the reference model (d 256, 4 layers,
// ffn 1024, tied 256-token head), each weight distinct, run back to back on the cpu backend:
// the time a decode step needs to stream its weights through the cache. Build first
// (`npx turbo run build --filter=@rrt/tensor`), then `node packages/tensor/scripts/bench-decode-gemv.mjs`.
// RRT_THREADS picks the thread count (default 1).
import { createCpuBackend } from '../dist/index.js';

const cpu = createCpuBackend({ threads: Number(process.env.RRT_THREADS ?? 1) });
const shapes = []; // [out, in] of each weight in the order a step uses them
for (let l = 0; l < 4; l++) shapes.push([768, 256], [256, 256], [1024, 256], [256, 1024]);
shapes.push([256, 256]);
const layers = shapes.map(([n, k]) => ({
  n, k,
  w: cpu.upload(Float32Array.from({ length: n * k }, (_, i) => ((i % 7) - 3) * 0.01)),
  x: cpu.upload(new Float32Array(k).fill(0.5)),
  y: cpu.alloc(n),
}));
const zero = Int32Array.of(0);
const step = () => {
  for (const { n, k, w, x, y } of layers) {
    cpu.kernels.matmul(x, w, y, { batch: 1, m: 1, k, n, transA: false, transB: true, aBatchOffsets: zero, bBatchOffsets: zero, accumulate: false });
  }
};
for (let i = 0; i < 20; i++) step();
const medians = [];
for (let r = 0; r < 9; r++) {
  const t = performance.now();
  for (let i = 0; i < 50; i++) step();
  medians.push((performance.now() - t) / 50);
}
medians.sort((a, b) => a - b);
const ms = medians[4], bytes = shapes.reduce((s, [n, k]) => s + 4 * n * k, 0);
// One hot weight (the same 256 x 1024 matrix each time): the kernel's rate from cache.
const hot = layers[2];
const t = performance.now();
for (let i = 0; i < 2000; i++) cpu.kernels.matmul(hot.x, hot.w, hot.y, { batch: 1, m: 1, k: 256, n: 1024, transA: false, transB: true, aBatchOffsets: zero, bBatchOffsets: zero, accumulate: false });
const hotUs = ((performance.now() - t) / 2000) * 1000;
console.log(JSON.stringify({
  threads: cpu.threads, weightsMiB: +(bytes / 2 ** 20).toFixed(1), stepGemvMs: +ms.toFixed(3), streamGBs: +(bytes / ms / 1e6).toFixed(1),
  hot1024x256Us: +hotUs.toFixed(1), hotGflops: +((2 * 256 * 1024) / hotUs / 1e3).toFixed(1),
}));
cpu.close();
