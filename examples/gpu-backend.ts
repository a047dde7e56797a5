// The gpu backend: the same ops on gpu.js kernels (WebGPU, headless GL, WebAssembly or gpu.js's
// CPU mode, the best that runs here; RRT_GPU_MODE forces one). Runs a matmul and a model forward
// pass on it and checks them against the reference backend. Where the backend cannot start, the
// script says why and exits normally: every other example runs on the default cpu backend.
// Run: npx tsx examples/gpu-backend.ts   (TINY=1 for smaller shapes)

import { Generator, getBackend, matmul, randn, setBackend, tidy, toBackend, type GpuBackend } from '@rrt/tensor';
import { CausalLM, defineConfig } from '@rrt/layers';

const tiny = process.env.TINY === '1';
let gpu: GpuBackend;
try {
  gpu = setBackend('gpu') as GpuBackend;
} catch (err) {
  console.log(`gpu backend not available: ${err instanceof Error ? err.message : String(err)}`);
  console.log('it needs gpu.js and, for a real device, WebGPU or headless GL; the cpu backend (the default) runs everything else');
  process.exit(0);
}
console.log(`gpu backend mode: ${gpu.mode} (${gpu.mode === 'cpu' ? "gpu.js's JavaScript fallback, no device" : 'kernels on the device or in WebAssembly'})`);

// A matmul on the gpu backend against the reference backend.
const n = tiny ? 32 : 256;
const rng = new Generator(0);
const maxErr = tidy(() => {
  const a = randn([n, n], { rng }), b = randn([n, n], { rng });
  const got = matmul(a, b).dataSync();
  const want = matmul(toBackend(a, 'ref'), toBackend(b, 'ref')).dataSync();
  let e = 0;
  for (let i = 0; i < got.length; i++) e = Math.max(e, Math.abs(got[i]! - want[i]!));
  return e;
});
console.log(`matmul ${n}x${n}: max difference from the reference backend ${maxErr.toExponential(2)}`);

// Models run on whatever backend is active.
const cfg = defineConfig('llama', { vocabSize: 64, hiddenSize: tiny ? 16 : 64, numLayers: 2, numHeads: 2, maxPositions: 16 });
const model = new CausalLM(cfg, { rng: new Generator(0) });
const shape = tidy(() => model.forward([1, 2, 3, 4], [1, 4]).logits.shape);
console.log(`forward on ${getBackend().name}: logits ${JSON.stringify(shape)}`);
model.dispose();
// The device thread may still be compiling kernels in the background; do not wait for it.
process.exit(0);
