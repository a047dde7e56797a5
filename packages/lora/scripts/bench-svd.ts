// Times the truncated SVD of the LoRA SVD init at the paper's largest case: a Gemma-2B MLP
// matrix (2048 x 16384) at rank 512.
//
//   npx tsx packages/lora/scripts/bench-svd.ts \
//     [--m 2048] [--n 16384] [--rank 512] [--power-iterations 2] [--oversample 10] [--repeat 3] [--check]
//
// --repeat N times the SVD N times on the same matrix and prints the median wall and CPU time.
// --check also computes the Eckart-Young optimum (exact spectrum from the Gram matrix) and the
// achieved error ||A - U S V^T||_F. Runs on the active backend ($RRT_BACKEND, else cpu).

import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { Generator, backendByName, fromValues, getBackend, matmul, noGrad, tidy, type Backend } from '@rrt/tensor';
import { symmetricEigen, truncatedSvd } from '@rrt/lora';

const { values } = parseArgs({
  options: {
    m: { type: 'string', default: '2048' },
    n: { type: 'string', default: '16384' },
    rank: { type: 'string', default: '512' },
    'power-iterations': { type: 'string', default: '2' },
    oversample: { type: 'string', default: '10' },
    seed: { type: 'string', default: '0' },
    repeat: { type: 'string', default: '1' },
    check: { type: 'boolean', default: false },
  },
});
const m = Number(values.m), n = Number(values.n), k = Number(values.rank);
const q = Number(values['power-iterations']), p = Number(values.oversample);

let backend: Backend;
try {
  backend = getBackend();
} catch (err) {
  console.warn(`no default backend (${(err as Error).message}); using ref (slow, float64 JS kernels)`);
  backend = backendByName('ref');
}
console.log(`backend: ${backend.name} ${JSON.stringify(backend.info().details)}`);

const rng = new Generator(Number(values.seed));
const data = new Float32Array(m * n);
for (let i = 0; i < data.length; i++) data[i] = rng.normal() * 0.02;
const l = Math.min(k + p, Math.min(m, n));

// One product of the size the SVD does 2q + 2 of, for the backend's speed in this run.
const matmulSeconds = noGrad(() => tidy(() => {
  const A = fromValues(data, [m, n], backend);
  const X = fromValues(new Float32Array(n * l).fill(1e-3), [n, l], backend);
  matmul(A, X).dataSync();
  const t0 = performance.now();
  matmul(A, X).dataSync();
  return (performance.now() - t0) / 1000;
}));
console.log(`one [${m}, ${n}] x [${n}, ${l}] matmul: ${matmulSeconds.toFixed(2)} s (${((2 * m * n * l) / matmulSeconds / 1e9).toFixed(1)} GFLOP/s)`);

// CPU time (all threads) next to wall time: on a shared machine the wall time mostly measures the load.
const repeat = Math.max(1, Number(values.repeat));
const walls: number[] = [], cpus: number[] = [];
let svd!: ReturnType<typeof truncatedSvd>;
for (let r = 0; r < repeat; r++) {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  svd = truncatedSvd({ shape: [m, n], data }, k, { backend, powerIterations: q, oversample: p });
  walls.push((performance.now() - t0) / 1000);
  const cpu = process.cpuUsage(cpu0);
  cpus.push((cpu.user + cpu.system) / 1e6);
  console.log(
    `truncatedSvd [${m}, ${n}] rank ${k} (${svd.method}, oversample ${p}, power iterations ${q}) run ${r + 1}/${repeat}: ${walls[r].toFixed(2)} s wall, ` +
      `${cpus[r].toFixed(2)} s CPU, ${(walls[r] / matmulSeconds).toFixed(1)} x the matmul above; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`,
  );
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const seconds = median(walls), cpuSeconds = median(cpus);
if (repeat > 1) console.log(`median of ${repeat}: ${seconds.toFixed(2)} s wall, ${cpuSeconds.toFixed(2)} s CPU`);

const result: Record<string, unknown> = { m, n, rank: k, oversample: p, powerIterations: q, backend: backend.name, seconds, cpuSeconds, walls, cpus, matmulSeconds };
if (values.check) {
  const t1 = performance.now();
  const { achieved, optimum } = noGrad(() => tidy(() => {
    const A = fromValues(data, [m, n], backend);
    // Achieved: ||A - U (S Vt)||_F.
    const svt = new Float32Array(k * n);
    for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) svt[i * n + j] = svd.S[i] * svd.Vt[i * n + j];
    const approx = matmul(fromValues(svd.U, [m, k], backend), fromValues(svt, [k, n], backend)).dataSync();
    let err = 0, total = 0;
    for (let i = 0; i < data.length; i++) {
      err += (data[i] - approx[i]) ** 2;
      total += data[i] * data[i];
    }
    // Optimum: sum of the squared singular values past k, from the eigenvalues of A A^T.
    const small = Math.min(m, n);
    const gram = (m <= n ? matmul(A, A, { transB: true }) : matmul(A, A, { transA: true })).dataSync();
    const { values: eig } = symmetricEigen(Float64Array.from(gram), small);
    let kept = 0;
    for (let i = 0; i < k; i++) kept += Math.max(eig[i], 0);
    return { achieved: Math.sqrt(err), optimum: Math.sqrt(Math.max(total - kept, 0)) };
  }));
  console.log(`error ||A - A_k||_F: ${achieved.toPrecision(6)}, Eckart-Young optimum ${optimum.toPrecision(6)} (ratio ${(achieved / optimum).toFixed(4)}); check took ${((performance.now() - t1) / 1000).toFixed(1)} s`);
  Object.assign(result, { achieved, optimum, ratio: achieved / optimum });
}
console.log(JSON.stringify(result));
process.exit(0);
