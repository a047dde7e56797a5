// Discrete-event simulator of serving schedulers (static, sequence-wise, depth-wise) and its plots.
export { constantCost, linearPerTokenCost, linearStepCost, scaledCost, type CostModel, type MeasuredTimes } from './cost.js';
export {
  checkExitDistribution,
  geometricExit,
  makeRequests,
  meanExitLoops,
  noEarlyExit,
  type ArrivalModel,
  type ExitDistribution,
  type LengthModel,
  type RequestSpec,
  type RequestStreamOptions,
} from './requests.js';
export { SimRng } from './rng.js';
export {
  simulate,
  type RequestOutcome,
  type SimulationConfig,
  type SimulationResult,
} from './simulate.js';
export {
  PAPER_FIT,
  PAPER_MODELS,
  PAPER_THROUGHPUT,
  simulatePaper,
  type PaperModel,
  type PaperRow,
  type PaperSimulationOptions,
  type PaperSimulationReport,
} from './paper.js';
export { scheduleToSvg, type ScheduleSvgOptions } from './schedule-svg.js';
