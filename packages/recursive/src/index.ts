// @rrt/recursive: Recursive Transformers (PAPER.md section 1). Sharing schemes and init methods
// as small objects, conversion of a pretrained CausalLM into a RecursiveLM with the residuals
// the LoRA SVD init needs, uptraining with knowledge distillation, parameter accounting, and
// compact / unrolled checkpoints.

export {
  type SharingScheme, type SchemeSpec, defineScheme, withTie, depthsOf, checkDepthMap, CYCLE, SEQUENCE, MIDDLE_CYCLE, MIDDLE_SEQUENCE, SCHEMES,
  evenlySpaced, evenlySpacedSourceLayers, roundHalfEven,
} from './schemes.js';
export { type DepthMapFn, validLoopCounts } from './schemes-maps.js';
export {
  type InitContext, type InitMethod, type SelectionInit, type NormInit, selectionInit, tiedGroup, stepwise, stepwiseFixedStart, lower, upper, random,
  average, INITS, isNormPath,
} from './init.js';
export { RecursiveLM, type RecursionInfo, type RecursiveParamReport, withNumLayers, writeValues } from './model.js';
export { toRecursive, type ToRecursiveOptions, type Conversion, type Residuals, type WeightValues } from './convert.js';
export { uptrain, uptrainLoss, type UptrainLoss, type UptrainLossOptions, type UptrainOptions } from './uptrain.js';
export { saveRecursive, loadRecursive, exportUnrolled, RECURSIVE_JSON, type RecursiveJson } from './io.js';
export { countRecursiveParams, sharedLayerCount, type RecursiveParamCount } from './params.js';
