// @rrt/lora in a browser bundle (the "browser" export condition): the Node entry (index.ts)
// without PEFT adapter files (saveAdapters / loadAdapters read and write folders).

export { LoraPair, LoraAdapter, LoraSet, addLora, type LoraPairInit, type LoraAdapterOptions, type AddLoraOptions, type BlockAdapter } from './adapter.js';
export { relax, residualsFrom, type RelaxOptions, type ResidualFn, type ResidualMatrix } from './relax.js';
export { RelaxedLora, type RelaxedInfo } from './relaxed.js';
export { DepthLora } from './depth-hook.js';
export { truncatedSvd, exactSvd, randomizedSvd, symmetricEigen, type MatrixF32, type TruncatedSvd, type SvdOptions } from './svd.js';
export { targetSlots, availableTargets, partRows, type OutputPart, type TargetSlot } from './targets.js';
export {
  countRelaxedParams, loraParams, DEFAULT_LORA_TARGETS, type LoraTarget, type RelaxedParamOptions, type RelaxedParamCount, type LoraModuleCount,
} from './params.js';
