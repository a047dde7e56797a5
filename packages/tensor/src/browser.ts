// @rrt/tensor in a browser bundle (the "browser" export condition): everything the Node entry
// (index.ts) has except what needs Node. Backends: ref, ref64, and gpu once
// registerBrowserGpuBackend() has started it (gpu.js in a Web Worker: WebGPU, WebGL2,
// WebAssembly or gpu.js's CPU mode). The cpu backend (WebAssembly SIMD kernels with Node worker
// threads) is Node-only for now; setBackend('gpu') or 'ref' in a page.

export * from './errors.js';
export * from './backend.js';
export { Tensor, tidy, dispose, noGrad, isGradEnabled, empty, fromValues, record, shapeSize, type GradNode, type BackwardOptions } from './tensor.js';
export * from './creation.js';
export * from './random.js';
export * from './ops/index.js';
export * from './optim.js';
export * from './gradcheck.js';
export * from './testing.js';
export {
  type TensorEntry, type SafetensorsHeader, type F32Tensor, type SafetensorsReader, type SafetensorsLayout,
  MAX_HEADER_BYTES, DTYPE_SIZES, safetensorsHeaderLength, parseSafetensorsHeader, readSafetensors, decodeToF32,
  f16ToF32, bf16ToF32, planSafetensors, serializeSafetensors,
} from './safetensors.js';
export {
  createBrowserGpuBackend, BROWSER_GPU_MODES, type BrowserGpuBackend, type BrowserGpuBackendOptions, type BrowserGpuMode, type BrowserDeviceMemory,
} from './backends/gpu/browser-backend.js';
export type { DeviceBackend } from './backends/gpu/device-backend.js';

import { registerBackend } from './backend.js';
import { createRefBackend } from './backends/ref.js';
import { createBrowserGpuBackend, type BrowserGpuBackend, type BrowserGpuBackendOptions } from './backends/gpu/browser-backend.js';
registerBackend('ref', () => createRefBackend(32));
registerBackend('ref64', () => createRefBackend(64));

/**
 * Starts the browser gpu backend (in a Web Worker of a cross-origin isolated page) and registers
 * it under its name (default 'gpu'), so setBackend('gpu') and toBackend(t, 'gpu') find it.
 */
export async function registerBrowserGpuBackend(options: BrowserGpuBackendOptions): Promise<BrowserGpuBackend> {
  const backend = await createBrowserGpuBackend(options);
  registerBackend(backend.name, () => backend);
  return backend;
}
