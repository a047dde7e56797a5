// Decode attention of a serving step: 32 sequences, one new token each, over 80 cached
// positions (4 heads of 64, the shipped model's shape), through the cpu backend's attendCaches
// (what appendAttend runs), against the same attention as one cachedAttention per sequence.
// "hot" reuses one set of caches every call; "cold" cycles through 6 sets (one per layer of a
// 6-layer model, 24 MiB in all), as a served model does, so the caches come from memory.
// Build first (`npx turbo run build --filter=@rrt/tensor`), then
// `node packages/tensor/scripts/bench-attend.mjs`; RRT_THREADS picks the thread count.
import { cachedAttention, createCpuBackend, fromValues, matmul, narrow, noGrad, reshape, tidy, zeros } from '../dist/index.js';

const cpu = createCpuBackend({ threads: Number(process.env.RRT_THREADS ?? 2) });
const S = 32, H = 4, Dh = 64, C = 128, cached = 80, SETS = 6;
let seed = 1;
const values = (n) => Float32Array.from({ length: n }, () => ((seed = (seed * 16807) % 2147483647) / 2147483647) - 0.5);
const sets = Array.from({ length: SETS }, () => Array.from({ length: S }, () => ({
  k: fromValues(values(H * C * Dh), [H, C, Dh], cpu).keep(), v: fromValues(values(H * C * Dh), [H, C, Dh], cpu).keep(),
})));
const q = fromValues(values(S * H * Dh), [S, H, Dh], cpu).keep();
const out = zeros([S, H, Dh], { backend: cpu }).keep();
const caps = new Int32Array(S).fill(C), starts = new Int32Array(S).fill(cached), lens = new Int32Array(S).fill(1);
// A large matmul starts the worker threads (attention only joins a pool that is running).
if (cpu.threads > 1) {
  noGrad(() => tidy(() => matmul(zeros([256, 256], { backend: cpu }), zeros([256, 256], { backend: cpu }))));
  await cpu.whenThreadsReady(10_000);
}

const time = (sets, call) => {
  let i = 0;
  for (let r = 0; r < 60; r++) call(sets[i++ % sets.length]);
  const medians = [];
  for (let rep = 0; rep < 7; rep++) {
    const t = performance.now();
    for (let r = 0; r < 120; r++) call(sets[i++ % sets.length]);
    medians.push(((performance.now() - t) / 120) * 1000);
  }
  return +medians.sort((a, b) => a - b)[3].toFixed(1);
};
const fused = (set) => cpu.kernels.attendCaches(q.storage, set.map((c) => c.k.storage), set.map((c) => c.v.storage), caps, starts, lens, H, H, Dh, 0.125, out.storage);
const perSequence = (set) => noGrad(() => tidy(() => {
  for (let s = 0; s < S; s++) cachedAttention(reshape(narrow(q, 0, s, 1), [H, 1, Dh]), set[s].k, set[s].v, cached + 1);
}));
const hot = [sets[0]];
const result = {
  threads: cpu.threads,
  cacheMiBRead: +((S * 2 * H * (cached + 1) * Dh * 4) / 2 ** 20).toFixed(2),
  hotUs: { attendCaches: time(hot, fused), perSequence: time(hot, perSequence) },
  coldUs: { attendCaches: time(sets, fused), perSequence: time(sets, perSequence) },
  parallelAttends: cpu.info().details.parallelAttends,
};
result.coldGBs = +((result.cacheMiBRead * 2 ** 20) / result.coldUs.attendCaches / 1e3).toFixed(1);
console.log(JSON.stringify(result));
cpu.close();
