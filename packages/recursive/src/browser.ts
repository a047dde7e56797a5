// @rrt/recursive in a browser bundle (the "browser" export condition): the Node entry
// (index.ts) without uptraining (it uses the file-checkpointing Trainer) and without compact /
// unrolled checkpoint files (io.ts). Sharing schemes, init methods, RecursiveLM, conversion and
// parameter accounting all work in a page.

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
export { countRecursiveParams, sharedLayerCount, type RecursiveParamCount } from './params.js';
