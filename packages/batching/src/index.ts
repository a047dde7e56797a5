// @rrt/batching: early exits, exit policies and exit-aware losses, KV-cache fill for exited
// tokens, the continuous depth-wise batching engine with its static and sequence-wise baselines,
// serving benchmarks, and the discrete-event simulator of the paper's throughput analysis.

export { type LoopLayout, type LoopLayoutOptions, loopLayout, loopEndingAt, loopEndsOfDepthMap } from './loops.js';
export {
  ExitHeadAdapters, type ExitHeadAdapterOptions, exitLogits, type ExitLogitsOptions, allExitLogits, type AllExitsOptions, resolveLayout,
} from './exits.js';
export {
  type ExitPolicy, maxProbExit, entropyExit, marginExit, fixedDepthExit, neverExit, oracleExit, parseExitPolicy, argmaxRow, maxProbability, entropy,
  topMargin,
} from './policies.js';
export {
  ExitRouter, type ExitRouterJSON, type ExitRouterOptions, routerExit, trainExitRouter, type TrainExitRouterOptions, type ExitRouterTraining, ROUTER_TRAINING_SEQUENCES,
} from './router.js';
export {
  exitTrainingLoss, exitLosses, exitLossWeights, type ExitLossSchedule, type ExitLossOptions, type ExitLossBatch, type ExitLosses, type TeacherSource,
} from './losses.js';
export {
  type KvFillMode, type KvFill, KV_FILL_MODES, kvFillName, ServingLayerCache, ServingKVCache, type ExitedToken, fillExitedKV, projectKV, appendCopies, type EntryCopy,
} from './kv-fill.js';
export { StatePredictor, type StatePredictorJSON, type StateMap, fitStatePredictor, type FitStatePredictorOptions } from './state-predictor.js';
export { sampleToken, requestRng } from './sampling.js';
export {
  ServingEngine, type ServingEngineOptions, type GenerationRequest, type GenerationResult, type FinishReason, type EngineStats,
} from './engine/index.js';
export { referenceGenerate } from './reference.js';
export { evaluateExits, type ExitEvalOptions, type ExitEvalResult, generationAgreement, type GenerationAgreement, servedTextNll } from './quality.js';
export {
  serveBench, benchWorkload, servedContinuations, formatServeBench, formatServeBenchTimes, type CallCost, type ServeBenchOptions, type ServeBenchReport, type ServeBenchRow, type BaselineRatios, type IntRange,
} from './bench.js';
export {
  type Scheduler, type SchedulerKind, STATIC, SEQUENCE, DEPTHWISE, SCHEDULERS, resolveScheduler, type StepKind, type TraceItem, type TraceStep, type ScheduleTrace,
} from './scheduler.js';
export * from './simulator/index.js';
export {
  soak, soakModel, soakReference, formatSoak, SOAK_FAULTS, type SoakFault, type SoakCancelKind, type SoakOptions, type SoakReference, type SoakReport,
} from './soak.js';
