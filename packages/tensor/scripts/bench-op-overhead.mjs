// What an op costs in JavaScript on the cpu backend, apart from its kernel: tiny tensors (64
// floats), so the time is dispatch, shape checks, tensor objects, allocation and the tape.
//   noGradUs: one add() inside tidy() under noGrad (the decode path), microseconds per op;
//   tapeUs:   one add() recorded for autograd plus its share of backward() (the training path);
//   tapeBytes: JS heap bytes held per recorded op while the tape is alive (after a full GC), the
//              part of a training step's garbage that outlives the young generation.
// Build first (`npx turbo run build --filter=@rrt/tensor`), then
//   node --expose-gc packages/tensor/scripts/bench-op-overhead.mjs
// (RRT_TENSOR_DIST=<path to an index.js> measures another build of the package).
import { pathToFileURL } from 'node:url';

const dist = process.env.RRT_TENSOR_DIST ? pathToFileURL(process.env.RRT_TENSOR_DIST).href : '../dist/index.js';
const { add, noGrad, randn, setBackend, sum, tidy } = await import(dist);
if (typeof globalThis.gc !== 'function') throw new Error('run with node --expose-gc (tapeBytes needs a full collection)');

const cpu = setBackend('cpu');
const x = randn([64], { backend: cpu }).keep();
const w = randn([64], { backend: cpu, requiresGrad: true }).keep();
const OPS = 200;

const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
function time(fn, reps = 200) {
  for (let i = 0; i < 20; i++) fn();
  const runs = [];
  for (let r = 0; r < 9; r++) {
    const t = performance.now();
    for (let i = 0; i < reps; i++) fn();
    runs.push(((performance.now() - t) * 1000) / (reps * OPS));
  }
  return median(runs);
}

// A chain of OPS adds, as a decode step chains its ops.
const noGradUs = time(() => noGrad(() => tidy(() => {
  let h = x;
  for (let i = 0; i < OPS; i++) h = add(h, x);
  return null;
})));
// The same chain on a parameter, then backward (each op also runs its gradient).
const tapeUs = time(() => tidy(() => {
  let h = w;
  for (let i = 0; i < OPS; i++) h = add(h, x);
  sum(h).backward();
  w.zeroGrad();
  return null;
}), 50);

// Heap held by a live tape of OPS recorded ops (tensors, gradient records, closures).
const held = [];
function tapeBytes() {
  globalThis.gc();
  const before = process.memoryUsage().heapUsed;
  tidy(() => {
    let h = w;
    for (let i = 0; i < OPS * 10; i++) h = add(h, x);
    globalThis.gc();
    held.push(process.memoryUsage().heapUsed - before);
    return null;
  });
  return held[held.length - 1] / (OPS * 10);
}
for (let i = 0; i < 3; i++) tapeBytes();
const bytes = median([tapeBytes(), tapeBytes(), tapeBytes(), tapeBytes(), tapeBytes()]);

console.log(JSON.stringify({ noGradUs: +noGradUs.toFixed(3), tapeUs: +tapeUs.toFixed(3), tapeBytes: Math.round(bytes) }));
cpu.close?.();
