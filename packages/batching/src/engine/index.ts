// The serving engine: requests in, tokens out, scheduled by a Scheduler (scheduler.ts).
export { ServingEngine, type ServingEngineOptions } from './engine.js';
export { type GenerationRequest, type GenerationResult, type FinishReason } from './request.js';
export { type EngineStats } from './stats.js';
