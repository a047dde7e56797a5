import { RrtError } from '@rrt/tensor';
import { type ScheduleTrace, type Scheduler, type SchedulerKind, type StepKind, type TraceStep, resolveScheduler } from '../scheduler.js';
import type { CostModel } from './cost.js';
import { checkExitDistribution, exitSampler, type ExitDistribution, type RequestSpec } from './requests.js';
import { SimRng, streamSeed } from './rng.js';

export interface SimulationConfig {
  /** 'static', 'sequence', 'depthwise' or your own Scheduler. */
  scheduler: SchedulerKind | Scheduler;
  /** Loops of the shared block per token (a vanilla model is 1 "loop" of the whole model). */
  loops: number;
  /** Most requests resident at once (KV-cache slots) = most items in one call. */
  maxBatch: number;
  cost: CostModel;
  requests: readonly RequestSpec[];
  /**
   * Exit depths of tokens under a scheduler that starts a request's next token at once
   * (depthwise); the iteration-level ones (static, sequence) run every loop, as the paper's
   * baselines do. Default: no early exit.
   */
  exitDistribution?: ExitDistribution;
  /**
   * Charge prefill calls (default true): newly admitted requests are prefilled together,
   * before the next decode call, by `loops` calls over their summed prefix tokens (the
   * prefix needs K/V at every depth, so it never exits early). Decode waits meanwhile.
   */
  prefill?: boolean;
  /**
   * With prefill charged: admitted prompts join the decode calls instead (default false). A
   * prompt's tokens are rows of the next `loops` calls, as the serving engine's mixed calls do
   * (ServingEngineOptions.mixPrefill), so a prompt that arrives while others decode adds rows,
   * not calls; its request decodes once its prompt has run every loop. A call with no decode
   * rows is a prefill call. The paper's analysis prefills separately (the default).
   */
  mixPrefill?: boolean;
  /** Seeds exit sampling. */
  seed?: number;
  /** Keep at most this many calls in the trace (default: all). */
  traceSteps?: number;
  /** Guard: throw if the run needs more calls than this (default 1e8). */
  maxSteps?: number;
}

export interface RequestOutcome {
  id: number;
  arrival: number;
  admitted: number;
  firstToken: number;
  finished: number;
  /** finished - arrival, seconds. */
  latency: number;
  tokens: number;
  /** Block calls spent on this request's decoded tokens (sum of exit depths). */
  loopsRun: number;
}

export interface SimulationResult {
  /** The scheduler's name. */
  scheduler: string;
  costModel: string;
  loops: number;
  maxBatch: number;
  requests: number;
  /** Decoded tokens (prefix tokens are not counted). */
  tokens: number;
  /** Seconds from the first arrival to the last completion. */
  makespan: number;
  /** Decoded tokens per second over the makespan. */
  throughput: number;
  /** Seconds. p95 is nearest-rank. */
  latency: { mean: number; p95: number; max: number; meanTimeToFirstToken: number };
  /** Mean items per decode call (idle static slots not counted). */
  meanBatchSize: number;
  /** meanBatchSize / maxBatch. */
  meanOccupancy: number;
  /** All calls (decode + prefill). */
  steps: number;
  /** Calls with decode rows (mixed ones included). */
  decodeSteps: number;
  prefillSteps: number;
  /** Decode calls that prompts joined (mixPrefill). */
  mixedSteps: number;
  /** Seconds spent in decode and prefill calls. */
  decodeTime: number;
  prefillTime: number;
  /** Mean loops run per decoded token (loops, unless tokens exit early). */
  meanLoopsPerToken: number;
  perRequest: RequestOutcome[];
  trace: ScheduleTrace;
}

interface Active {
  spec: RequestSpec;
  slot: number;
  /** Index of the token being computed. */
  token: number;
  /** Loops already done on the current token. */
  depth: number;
  /** Loop after which the current token exits. */
  exitLoop: number;
  /** Its token is done and it waits for the iteration boundary. */
  parked: boolean;
  /** Finished, holding its slot as a padding row (a scheduler that pads). */
  padding: boolean;
  /** Loops its prompt still has to run (mixPrefill); it decodes once this is 0. */
  promptLoops: number;
  /** Its prompt has run and it waits for the iteration boundary to decode. */
  promptDone: boolean;
  outcome: RequestOutcome;
}

/**
 * Runs one scheduler over a request stream and returns throughput, latency, occupancy and
 * the schedule. Time advances only by calls (and by idle gaps waiting for arrivals).
 */
export function simulate(config: SimulationConfig): SimulationResult {
  const sim = new Simulation(config);
  sim.run();
  return sim.result();
}

class Simulation {
  private readonly scheduler: Scheduler;
  private readonly loops: number;
  private readonly maxBatch: number;
  private readonly cost: CostModel;
  private readonly queue: RequestSpec[];
  private queueHead = 0;
  private readonly slots: (Active | null)[];
  /** Requests still generating (padding rows not counted). */
  private activeCount = 0;
  private readonly drawExit: () => number;
  private readonly prefill: boolean;
  private readonly mixPrefill: boolean;
  private readonly traceSteps: number;
  private readonly maxSteps: number;
  private readonly outcomes: RequestOutcome[] = [];
  private readonly trace: TraceStep[] = [];

  private time = 0;
  private steps = 0;
  private decodeSteps = 0;
  private prefillSteps = 0;
  private mixedSteps = 0;
  private decodeItems = 0;
  private decodeTime = 0;
  private prefillTime = 0;

  constructor(private readonly config: SimulationConfig) {
    const { loops, maxBatch, requests } = config;
    this.scheduler = resolveScheduler(config.scheduler, 'simulate');
    if (!Number.isInteger(loops) || loops < 1) throw new RrtError(`simulate: loops must be an integer >= 1, got ${loops}`);
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RrtError(`simulate: maxBatch must be an integer >= 1, got ${maxBatch}`);
    const ids = new Set<number>();
    for (const r of requests) {
      if (ids.has(r.id)) throw new RrtError(`simulate: request id ${r.id} appears twice`);
      ids.add(r.id);
      if (!(r.arrival >= 0) || !Number.isFinite(r.arrival)) throw new RrtError(`simulate: request ${r.id} has arrival ${r.arrival}, expected a finite time >= 0`);
      if (!Number.isInteger(r.decodeLength) || r.decodeLength < 1) {
        throw new RrtError(`simulate: request ${r.id} has decodeLength ${r.decodeLength}, expected an integer >= 1`);
      }
      if (!Number.isInteger(r.prefixLength) || r.prefixLength < 0) {
        throw new RrtError(`simulate: request ${r.id} has prefixLength ${r.prefixLength}, expected an integer >= 0`);
      }
    }
    this.loops = loops;
    this.maxBatch = maxBatch;
    this.cost = config.cost;
    // FIFO by arrival; ties by id so runs are deterministic.
    this.queue = [...requests].sort((a, b) => a.arrival - b.arrival || a.id - b.id);
    this.slots = new Array<Active | null>(maxBatch).fill(null);
    const dist = config.exitDistribution;
    if (dist !== undefined) checkExitDistribution(dist, loops);
    const rng = new SimRng(streamSeed(config.seed ?? 0, 3));
    this.drawExit = dist === undefined || this.scheduler.nextToken !== 'now' ? () => loops : exitSampler(dist, rng);
    this.prefill = config.prefill ?? true;
    this.mixPrefill = this.prefill && (config.mixPrefill ?? false);
    this.traceSteps = config.traceSteps ?? Infinity;
    this.maxSteps = config.maxSteps ?? 1e8;
    if (this.queue.length > 0) this.time = this.queue[0].arrival;
  }

  /**
   * The step loop every scheduler shares: release a finished padded batch, admit what the
   * scheduler allows (prefilling it), run one call of every ready item, then move finished
   * tokens on: at once, or all together at the iteration boundary.
   */
  run(): void {
    const sch = this.scheduler;
    while (this.activeCount > 0 || this.queueHead < this.queue.length) {
      if (this.activeCount === 0) {
        for (const a of this.slots) if (a) this.slots[a.slot] = null;
        this.waitForArrival();
      }
      const occupied = this.occupied();
      // An iteration boundary: no token and no prompt is part-way through its loops.
      if (sch.admits(occupied.length, occupied.every((a) => a.padding || (a.depth === 0 && a.promptLoops === 0)))) {
        const admitted = this.admit();
        if (!this.mixPrefill) this.prefillCall(admitted);
        else for (const a of admitted) if (a.spec.prefixLength > 0) a.promptLoops = this.loops;
      }
      if (this.activeCount === 0) throw new RrtError(`simulate: scheduler '${sch.name}' admitted nothing into an empty batch`);
      const ready = this.occupied().filter((a) => !a.padding && !a.parked && a.promptLoops === 0 && !a.promptDone);
      const prompts = this.mixPrefill ? this.occupied().filter((a) => a.promptLoops > 0) : [];
      let rows = sch.pads ? this.occupied().length - prompts.length : ready.length;
      for (const a of prompts) rows += a.spec.prefixLength;
      const kind = prompts.length === 0 ? 'decode' : ready.length === 0 ? 'prefill' : 'mixed';
      this.call(kind, rows, ready, prompts);
      for (const a of prompts) {
        a.promptLoops -= 1;
        if (a.promptLoops === 0 && sch.nextToken !== 'now') a.promptDone = true;
      }
      for (const a of ready) {
        a.depth += 1;
        if (a.depth < a.exitLoop) continue;
        if (sch.nextToken === 'now') this.emitToken(a);
        else a.parked = true;
      }
      if (sch.nextToken === 'boundary' && this.occupied().every((a) => a.padding || a.parked || a.promptDone)) {
        for (const a of this.occupied()) {
          if (a.parked) this.emitToken(a);
          a.promptDone = false;
        }
      }
    }
  }

  private emitToken(a: Active): void {
    const o = a.outcome;
    o.loopsRun += a.depth;
    o.tokens += 1;
    if (o.tokens === 1) o.firstToken = this.time;
    a.token += 1;
    a.depth = 0;
    a.parked = false;
    if (a.token >= a.spec.decodeLength) {
      o.finished = this.time;
      o.latency = o.finished - o.arrival;
      this.activeCount -= 1;
      // A padded batch keeps computing the finished row until every request in it is done.
      if (this.scheduler.pads) a.padding = true;
      else this.slots[a.slot] = null;
    } else {
      a.exitLoop = this.drawExit();
    }
  }

  /** Requests holding a slot, padding rows included, by slot. */
  private occupied(): Active[] {
    const out: Active[] = [];
    for (const s of this.slots) if (s !== null) out.push(s);
    return out;
  }

  private waitForArrival(): void {
    if (this.queueHead < this.queue.length) this.time = Math.max(this.time, this.queue[this.queueHead].arrival);
  }

  /** Fills free slots (lowest first) with requests that have arrived, in FIFO order. */
  private admit(): Active[] {
    const admitted: Active[] = [];
    let slot = 0;
    while (this.queueHead < this.queue.length && this.queue[this.queueHead].arrival <= this.time) {
      while (slot < this.maxBatch && this.slots[slot] !== null) slot++;
      if (slot >= this.maxBatch) break;
      const spec = this.queue[this.queueHead++];
      const outcome: RequestOutcome = {
        id: spec.id, arrival: spec.arrival, admitted: this.time, firstToken: NaN, finished: NaN, latency: NaN, tokens: 0, loopsRun: 0,
      };
      this.outcomes.push(outcome);
      const a: Active = { spec, slot, token: 0, depth: 0, exitLoop: this.drawExit(), parked: false, padding: false, promptLoops: 0, promptDone: false, outcome };
      this.slots[slot] = a;
      this.activeCount += 1;
      admitted.push(a);
    }
    return admitted;
  }

  private prefillCall(batch: Active[]): void {
    if (!this.prefill) return;
    let tokens = 0;
    for (const a of batch) tokens += a.spec.prefixLength;
    if (tokens === 0) return;
    const withPrefix = batch.filter((a) => a.spec.prefixLength > 0);
    for (let d = 0; d < this.loops; d++) this.call('prefill', tokens, [], withPrefix, d);
  }

  /**
   * One call: decode items at their depths and prompt items (whose prompts run one loop: at
   * prefillDepth in a separate prefill, at loops - promptLoops when mixed), costBatch rows.
   */
  private call(kind: StepKind, costBatch: number, items: Active[], prompts: Active[], prefillDepth = -1): void {
    if (this.steps >= this.maxSteps) {
      throw new RrtError(`simulate: more than ${this.maxSteps} calls; raise maxSteps if the workload is really this large`);
    }
    const duration = this.cost.timePerStep(costBatch, kind);
    if (!(duration > 0) || !Number.isFinite(duration)) {
      throw new RrtError(`simulate: cost model '${this.cost.name}' gave ${duration} s for a ${kind} call of ${costBatch}, expected a finite time > 0`);
    }
    if (items.length > this.maxBatch) {
      throw new RrtError(`simulate: internal error, ${items.length} items exceed maxBatch ${this.maxBatch}`);
    }
    if (this.trace.length < this.traceSteps) {
      this.trace.push({
        step: this.steps,
        time: this.time,
        duration,
        kind,
        items: [
          ...items.map((a) => ({ request: a.spec.id, token: a.token, depth: a.depth, slot: a.slot })),
          ...prompts.map((a) => ({ request: a.spec.id, token: -1, depth: prefillDepth >= 0 ? prefillDepth : this.loops - a.promptLoops, slot: a.slot })),
        ],
      });
    }
    this.steps += 1;
    this.time += duration;
    if (kind !== 'prefill') {
      this.decodeSteps += 1;
      this.decodeItems += items.length;
      this.decodeTime += duration;
      if (kind === 'mixed') this.mixedSteps += 1;
    } else {
      this.prefillSteps += 1;
      this.prefillTime += duration;
    }
  }

  result(): SimulationResult {
    const outs = this.outcomes;
    const tokens = outs.reduce((acc, o) => acc + o.tokens, 0);
    const loopsRun = outs.reduce((acc, o) => acc + o.loopsRun, 0);
    const start = this.queue.length > 0 ? this.queue[0].arrival : 0;
    const end = outs.reduce((acc, o) => Math.max(acc, o.finished), start);
    const makespan = end - start;
    const latencies = outs.map((o) => o.latency).sort((a, b) => a - b);
    const mean = (xs: number[]): number => (xs.length === 0 ? 0 : xs.reduce((acc, x) => acc + x, 0) / xs.length);
    const meanBatchSize = this.decodeSteps === 0 ? 0 : this.decodeItems / this.decodeSteps;
    return {
      scheduler: this.scheduler.name,
      costModel: this.cost.name,
      loops: this.loops,
      maxBatch: this.maxBatch,
      requests: outs.length,
      tokens,
      makespan,
      throughput: makespan > 0 ? tokens / makespan : 0,
      latency: {
        mean: mean(latencies),
        p95: latencies.length === 0 ? 0 : latencies[Math.ceil(0.95 * latencies.length) - 1],
        max: latencies.length === 0 ? 0 : latencies[latencies.length - 1],
        meanTimeToFirstToken: mean(outs.map((o) => o.firstToken - o.arrival)),
      },
      meanBatchSize,
      meanOccupancy: meanBatchSize / this.maxBatch,
      steps: this.steps,
      decodeSteps: this.decodeSteps,
      prefillSteps: this.prefillSteps,
      mixedSteps: this.mixedSteps,
      decodeTime: this.decodeTime,
      prefillTime: this.prefillTime,
      meanLoopsPerToken: tokens === 0 ? 0 : loopsRun / tokens,
      perRequest: outs,
      trace: {
        scheduler: this.scheduler.name,
        loops: this.loops,
        maxBatch: this.maxBatch,
        steps: this.trace,
        totalSteps: this.steps,
        truncated: this.steps > this.trace.length,
      },
    };
  }
}
