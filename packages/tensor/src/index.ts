// @rrt/tensor: tensors, autograd, backends (ref, ref64, cpu, gpu), optimizers, safetensors.

export * from './errors.js';
export * from './backend.js';
export { Tensor, tidy, dispose, noGrad, isGradEnabled, empty, fromValues, record, shapeSize, type GradNode, type BackwardOptions } from './tensor.js';
export * from './creation.js';
export * from './random.js';
export * from './ops/index.js';
export * from './optim.js';
export * from './gradcheck.js';
export * from './testing.js';

import { registerBackend } from './backend.js';
import { createRefBackend } from './backends/ref.js';
import { createCpuBackend } from './backends/cpu/index.js';
export { createCpuBackend, type CpuBackend, type CpuBackendOptions } from './backends/cpu/index.js';
import { createGpuBackend } from './backends/gpu/index.js';
export {
  createGpuBackend, probeGpuModes, GPU_MODES, type GpuBackend, type GpuBackendOptions, type GpuMode, type GpuModeStatus, type DeviceMemory,
} from './backends/gpu/index.js';
// GpuBackend and BrowserGpuBackend are DeviceBackend<mode>: exported so their declarations name a public type.
export type { DeviceBackend } from './backends/gpu/device-backend.js';
registerBackend('ref', () => createRefBackend(32));
registerBackend('ref64', () => createRefBackend(64));
registerBackend('cpu', () => createCpuBackend());
registerBackend('gpu', () => createGpuBackend());
export {
  type TensorEntry, type SafetensorsHeader, type F32Tensor, type SafetensorsReader, type SafetensorsLayout,
  MAX_HEADER_BYTES, DTYPE_SIZES, safetensorsHeaderLength, parseSafetensorsHeader, readSafetensors, decodeToF32,
  f16ToF32, bf16ToF32, planSafetensors, serializeSafetensors,
} from './safetensors.js';
