import { registerBackend, backendByName, randn, matmul, tidy } from '@rrt/tensor';
import { createCpuBackend } from '../../tensor/src/backends/cpu/index.ts';
registerBackend('cpu', () => createCpuBackend());
const b = backendByName('cpu') as any;
tidy(() => matmul(randn([1024, 1024], { backend: b }), randn([1024, 1024], { backend: b })));
console.log('threads ready', await b.whenThreadsReady(5000), b.threads, b.fma);
for (const [m, k, n, tA] of [[1024, 1024, 1024, false], [2048, 2048, 512, false], [2048, 16384, 522, false], [16384, 2048, 522, true]] as [number, number, number, boolean][]) {
  const a = tA ? randn([k, m], { backend: b }) : randn([m, k], { backend: b }), c = randn([k, n], { backend: b });
  tidy(() => matmul(a, c, { transA: tA }));
  const t0 = performance.now();
  for (let i = 0; i < 2; i++) tidy(() => matmul(a, c, { transA: tA }).dataSync());
  const dt = (performance.now() - t0) / 2;
  console.log(m, k, n, tA, dt.toFixed(1), 'ms', (2 * m * n * k / dt / 1e6).toFixed(1), 'GFLOP/s');
}
process.exit(0);
