// A training loop for anything with parameters and a loss: AdamW, lr schedules, clipping,
// gradient accumulation, evaluation, atomic checkpoints that resume exactly, and skipping of
// non-finite steps. The recursive, LoRA and early-exit packages reuse it with their own losses.

import { existsSync, mkdirSync, readFileSync, readdirSync, unlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import {
  AdamW, FormatError, type Generator as RandomGenerator, type LrSchedule, type OptimizerState, RrtError, type Tensor, affine, clipGradNorm, constantLr, fmtShape, fromValues,
  globalGenerator, gradNorm, noGrad, tidy, warmupCosine, warmupStableDecay, type F32Tensor,
} from '@rrt/tensor';
import { SafetensorsFile, writeSafetensorsFile } from '@rrt/tensor/node';
import { type DataSource, writeFileAtomic } from './data.js';

/** What the Trainer needs of a model: its trainable tensors (names make checkpoints readable). */
export interface Trainable {
  parameters(): Tensor[];
  namedParameters?(): Map<string, Tensor>;
  train?(flag?: boolean): unknown;
}

/** A learning-rate schedule by name; `lr` is the peak rate, steps come from the Trainer. */
export type ScheduleSpec =
  | { kind: 'constant' }
  | { kind: 'cosine'; warmup: number; minLr?: number }
  | { kind: 'wsd'; warmup: number; decayFraction?: number; minLr?: number };

/** Progress after each optimizer step. */
export interface StepInfo {
  /** Steps done, counting this one (1-based); skipped steps count. */
  step: number;
  /** Mean loss over this step's micro-batches (NaN/Infinity for a skipped step). */
  loss: number;
  /** Learning rate used by this step. */
  lr: number;
  /** Global gradient L2 norm before clipping (NaN when the step was skipped before backward). */
  gradNorm: number;
  /** True when the step was skipped because the loss or gradient norm was not finite. */
  skipped: boolean;
  /** Tokens per second since run() started (0 when the items have no token count). */
  tokensPerSec: number;
  /** Wall time since run() (or the first trainStep) started. */
  elapsedMs: number;
  /** Estimated time to the last step at this session's average pace. */
  etaMs: number;
}

export interface EvalRecord {
  step: number;
  metrics: Record<string, number>;
}

export interface TrainerOptions<B> {
  model: Trainable;
  /** Scalar loss of one micro-batch, with autograd recorded. Runs inside tidy(). */
  loss: (batch: B, ctx: { step: number; micro: number }) => Tensor;
  data: DataSource<B>;
  /** Total optimizer steps. */
  steps: number;
  /** Peak learning rate (default 3e-4). */
  lr?: number;
  /** 'constant' (default), warmup + cosine, warmup-stable-decay, or any function step -> lr. */
  schedule?: ScheduleSpec | LrSchedule;
  /** Decoupled weight decay of AdamW on parameters of rank >= 2 (default 0.1); norms and biases (rank 1) get none. */
  weightDecay?: number;
  beta1?: number;
  /** Default 0.95. */
  beta2?: number;
  eps?: number;
  /** Clip the global gradient norm to this (default 1; 0 or Infinity disables). */
  gradClip?: number;
  /** Micro-batches per optimizer step; their gradients are averaged (default 1). */
  accumulation?: number;
  /** Call evaluate every this many steps and after the last one (0 = only after the last). */
  evalEvery?: number;
  /** Runs with the model in eval mode; returned metrics are kept in evals. */
  evaluate?: (step: number) => Record<string, number> | void;
  /** Folder for checkpoints; none are written without it. */
  checkpointDir?: string;
  /** Write a checkpoint every this many steps and after the last one (0 = only after the last). */
  checkpointEvery?: number;
  /** How many checkpoints to keep in checkpointDir (default 2). */
  keepCheckpoints?: number;
  /** Stop with an error after this many skipped (non-finite) steps in a row (default 5). */
  maxBadSteps?: number;
  onStep?: (info: StepInfo) => void;
  /** Tokens in one micro-batch, for tokens/s (default: batch.ids.length when present). */
  tokenCount?: (batch: B) => number;
  /** A generator the loss uses (dropout, sampling); its state is checkpointed. */
  rng?: RandomGenerator;
  /**
   * Dispose the loss's intermediate tensors as backward uses them (lower peak memory; see
   * BackwardOptions.freeIntermediates). Default true; set false when the loss function keeps
   * intermediate tensors to read after the step.
   */
  freeIntermediates?: boolean;
}

export interface TrainSummary {
  /** Steps done in total (including earlier sessions). */
  steps: number;
  /** Loss of the last step. */
  lastLoss: number;
  /** Skipped (non-finite) steps in total. */
  skippedSteps: number;
  /** Tokens consumed in this session. */
  tokens: number;
  /** Wall time of this session. */
  elapsedMs: number;
  evals: EvalRecord[];
  /** Path of the last checkpoint written, if any. */
  checkpoint: string | null;
}

/** Thrown when too many steps in a row were not finite; the last good checkpoint is kept. */
export class TrainingDivergedError extends RrtError {
  constructor(message: string, readonly step: number, readonly lastCheckpoint: string | null) {
    super(message);
  }
}

interface CheckpointJson {
  format: 'rrt-trainer-checkpoint';
  version: 1;
  step: number;
  weights: string;
  paramNames: string[];
  optimizer: { kind: string; step: number; lr: number };
  rng: { global: number[]; trainer: number[] | null };
  data: unknown;
  skippedSteps: number;
  tokens: number;
  trainingMs: number;
  evals: EvalRecord[];
}

const CHECKPOINT_RE = /^step-(\d+)\.json$/;
// Temporary files of an interrupted atomic write: ".step-N.safetensors.<pid>.<ms>.<n>.tmp" and "step-N.json.<pid>.<ms>.tmp".
const TEMP_RE = /^\.?step-\d+\.(?:safetensors|json)\.(\d+)\.\d+(?:\.\d+)?\.tmp$/;

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Validates a parsed sidecar. A sidecar is data only: its `weights` must be a plain file name in
 * the sidecar's own folder, and every field must have the type saveCheckpoint writes; anything
 * else is a FormatError naming the field, thrown before the trainer is touched.
 */
function parseSidecar(raw: unknown, path: string): CheckpointJson {
  const bad = (field: string, expected: string, found: unknown): never => {
    let shown: string;
    try {
      shown = JSON.stringify(found)?.slice(0, 60) ?? String(found);
    } catch {
      shown = String(found);
    }
    throw new FormatError(`${path}: checkpoint field "${field}": expected ${expected}, found ${shown}. The file is damaged or not an rrt trainer checkpoint; resume from another one.`);
  };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) bad('(top level)', 'a JSON object', raw);
  const j = raw as Record<string, unknown>;
  if (j.format !== 'rrt-trainer-checkpoint') throw new RrtError(`${path}: not an rrt trainer checkpoint (format ${JSON.stringify(j.format)})`);
  if (j.version !== 1) bad('version', '1', j.version);
  if (!isCount(j.step)) bad('step', 'a non-negative integer', j.step);
  const w = j.weights;
  if (typeof w !== 'string' || w !== basename(w) || w === '.' || w === '..' || w.includes('\\') || !w.endsWith('.safetensors')) {
    bad('weights', 'the name of a .safetensors file in the same folder', w);
  }
  if (!Array.isArray(j.paramNames) || !j.paramNames.every((n) => typeof n === 'string')) bad('paramNames', 'an array of strings', j.paramNames);
  const o = j.optimizer as Record<string, unknown> | null;
  if (!o || typeof o !== 'object' || typeof o.kind !== 'string' || !isCount(o.step) || typeof o.lr !== 'number' || !Number.isFinite(o.lr)) {
    bad('optimizer', '{ kind: string, step: integer, lr: finite number }', o);
  }
  const rng = j.rng as Record<string, unknown> | null;
  const isState = (s: unknown) => Array.isArray(s) && s.length >= 4 && s.length <= 5 && s.slice(0, 4).every((x) => isCount(x) && x <= 0xffffffff) && (s[4] === undefined || s[4] === null || (typeof s[4] === 'number' && Number.isFinite(s[4])));
  if (!rng || typeof rng !== 'object' || !isState(rng.global) || !(rng.trainer === null || isState(rng.trainer))) {
    bad('rng', '{ global: generator state, trainer: generator state or null }', rng);
  }
  // JSON turns the generator's "no spare" NaN into null; the generator reads either as none.
  const state = (s: unknown) => (s as (number | null)[]).map((x) => (x === null ? NaN : x));
  if (!isCount(j.skippedSteps)) bad('skippedSteps', 'a non-negative integer', j.skippedSteps);
  if (!isCount(j.tokens)) bad('tokens', 'a non-negative integer', j.tokens);
  if (typeof j.trainingMs !== 'number' || !(j.trainingMs >= 0)) bad('trainingMs', 'a non-negative number', j.trainingMs);
  const evals = j.evals ?? [];
  if (!Array.isArray(evals) || !evals.every((e) => e && typeof e === 'object' && isCount((e as EvalRecord).step) && (e as EvalRecord).metrics && typeof (e as EvalRecord).metrics === 'object')) {
    bad('evals', 'an array of { step, metrics }', evals);
  }
  return {
    ...(j as unknown as CheckpointJson),
    rng: { global: state(rng!.global), trainer: rng!.trainer === null ? null : state(rng!.trainer) },
    data: j.data ?? null,
    evals: evals as EvalRecord[],
  };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Deletes temporary files that a killed process left behind in a checkpoint folder (those of
 * processes that no longer run; another live writer's files are left alone). Returns their names.
 */
export function removeStaleTempFiles(dir: string): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const f of names) {
    const m = TEMP_RE.exec(f);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    try {
      unlinkSync(join(dir, f));
      removed.push(f);
    } catch {
      // removed by someone else meanwhile
    }
  }
  return removed;
}

/** Resolves a ScheduleSpec (or passes a function through) into step -> lr. */
export function makeSchedule(lr: number, steps: number, spec: ScheduleSpec | LrSchedule = { kind: 'constant' }): LrSchedule {
  if (typeof spec === 'function') return spec;
  switch (spec.kind) {
    case 'constant': return constantLr(lr);
    case 'cosine': return warmupCosine(lr, spec.warmup, steps, spec.minLr ?? 0);
    case 'wsd': return warmupStableDecay(lr, spec.warmup, steps, spec.decayFraction ?? 0.2, spec.minLr ?? 0);
    default: throw new RrtError(`unknown lr schedule ${JSON.stringify(spec)}; expected kind 'constant', 'cosine' or 'wsd'`);
  }
}

/**
 * Trains a model with AdamW. Each micro-batch runs inside tidy(), so memory stays flat over any
 * number of steps; gradients live only between backward and the optimizer step.
 */
export class Trainer<B> {
  readonly optimizer: AdamW;
  readonly params: Tensor[];
  readonly paramNames: string[];
  /** step -> lr, built from the options (rebuilt by setPlannedSteps). */
  schedule: LrSchedule;
  /** Evaluation results so far (restored on resume). */
  evals: EvalRecord[] = [];
  private stepsDone = 0;
  private skipped = 0;
  private badStreak = 0;
  private tokensTotal = 0;
  private trainingMsBefore = 0;
  private sessionStart = 0;
  private sessionSteps = 0;
  private sessionTokens = 0;
  private lastCheckpoint: string | null = null;
  private lastLoss = NaN;
  private stopRequested = false;
  private readonly opts: TrainerOptions<B>;

  constructor(opts: TrainerOptions<B>) {
    if (!Number.isInteger(opts.steps) || opts.steps < 0) throw new RrtError(`Trainer: steps must be a non-negative integer, got ${opts.steps}`);
    const accumulation = opts.accumulation ?? 1;
    if (!Number.isInteger(accumulation) || accumulation < 1) throw new RrtError(`Trainer: accumulation must be a positive integer, got ${accumulation}`);
    this.opts = { ...opts };
    this.params = opts.model.parameters();
    if (this.params.length === 0) throw new RrtError('Trainer: the model has no parameters');
    this.paramNames = nameParams(opts.model, this.params);
    // A token id past the model's vocabulary would fail deep inside the first forward pass; say so now.
    const vocab = (opts.model as { cfg?: { vocabSize?: unknown } }).cfg?.vocabSize;
    if (typeof vocab === 'number' && opts.data.maxTokenId) {
      const maxId = opts.data.maxTokenId();
      if (maxId >= vocab) {
        throw new RrtError(
          `Trainer: the data holds token id ${maxId} but the model's vocabulary has ${vocab} tokens (ids 0..${vocab - 1}); ` +
            'the tokenizer does not match the model: tokenize with the model\'s tokenizer, or build the model with vocabSize >= the tokenizer\'s',
        );
      }
    }
    const lr = opts.lr ?? 3e-4;
    this.optimizer = new AdamW(this.params, {
      lr, beta1: opts.beta1 ?? 0.9, beta2: opts.beta2 ?? 0.95, eps: opts.eps ?? 1e-8, weightDecay: opts.weightDecay ?? 0.1,
      noDecay: new Set(this.params.filter((p) => p.rank <= 1)),
    });
    this.schedule = makeSchedule(lr, opts.steps, opts.schedule);
  }

  /** Optimizer steps done (skipped ones included). */
  get step(): number {
    return this.stepsDone;
  }

  /** Steps skipped because of a non-finite loss or gradient norm. */
  get skippedSteps(): number {
    return this.skipped;
  }

  /** Total steps run() trains to. */
  get plannedSteps(): number {
    return this.opts.steps;
  }

  /**
   * Changes the total number of steps (e.g. to fit a time budget measured during warmup). A
   * named schedule is rebuilt for the new total, so a change made during warmup gives exactly
   * the run that would have been planned with that total from the start.
   */
  setPlannedSteps(steps: number): void {
    if (!Number.isInteger(steps) || steps < this.stepsDone) throw new RrtError(`setPlannedSteps: expected an integer >= ${this.stepsDone} (steps done), got ${steps}`);
    this.opts.steps = steps;
    this.schedule = makeSchedule(this.opts.lr ?? 3e-4, steps, this.opts.schedule);
  }

  /** Asks run() to return after the current step (e.g. from a SIGINT handler). */
  stop(): void {
    this.stopRequested = true;
  }

  /**
   * One optimizer step: `accumulation` micro-batches, each loss / accumulation backpropagated,
   * then clipping and AdamW. A non-finite loss or gradient norm skips the update (the data is
   * still consumed); too many in a row throws TrainingDivergedError.
   */
  trainStep(): StepInfo {
    if (this.sessionStart === 0) this.sessionStart = performance.now();
    const accumulation = this.opts.accumulation ?? 1;
    const step = this.stepsDone;
    const lr = this.schedule(step);
    this.optimizer.lr = lr;
    let lossSum = 0;
    let finite = true;
    let tokens = 0;
    for (let micro = 0; micro < accumulation; micro++) {
      const batch = this.opts.data.next();
      tokens += this.countTokens(batch);
      if (!finite) continue;
      const value = tidy(() => {
        const loss = this.opts.loss(batch, { step, micro });
        if (loss.size !== 1) throw new RrtError(`Trainer: the loss must be a scalar, got shape ${fmtShape(loss.shape)}`);
        const v = loss.item();
        if (!Number.isFinite(v)) return v;
        (accumulation > 1 ? affine(loss, 1 / accumulation, 0) : loss).backward(undefined, { freeIntermediates: this.opts.freeIntermediates ?? true });
        return v;
      });
      lossSum += value;
      if (!Number.isFinite(value)) finite = false;
    }
    const loss = finite ? lossSum / accumulation : lossSum;
    let norm = NaN;
    if (finite) {
      const clip = this.opts.gradClip ?? 1;
      norm = clip > 0 && Number.isFinite(clip) ? clipGradNorm(this.params, clip) : gradNorm(this.params);
      if (!Number.isFinite(norm)) finite = false;
    }
    if (finite) noGrad(() => this.optimizer.step());
    this.optimizer.zeroGrad();
    this.stepsDone++;
    this.sessionSteps++;
    this.tokensTotal += tokens;
    this.sessionTokens += tokens;
    this.lastLoss = loss;
    if (finite) {
      this.badStreak = 0;
    } else {
      this.skipped++;
      this.badStreak++;
    }
    const elapsedMs = performance.now() - this.sessionStart;
    const info: StepInfo = {
      step: this.stepsDone, loss, lr, gradNorm: norm, skipped: !finite,
      tokensPerSec: elapsedMs > 0 ? (this.sessionTokens * 1000) / elapsedMs : 0,
      elapsedMs,
      etaMs: (elapsedMs / this.sessionSteps) * Math.max(0, this.opts.steps - this.stepsDone),
    };
    this.opts.onStep?.(info);
    const maxBad = this.opts.maxBadSteps ?? 5;
    if (this.badStreak >= maxBad) {
      throw new TrainingDivergedError(
        `training stopped at step ${this.stepsDone}: ${this.badStreak} steps in a row had a non-finite loss or gradient norm ` +
          `(last loss ${loss}, gradient norm ${norm}); ` +
          (this.lastCheckpoint ? `the last good checkpoint is ${this.lastCheckpoint}` : 'no checkpoint was written') +
          '. Lower the learning rate or check the data.',
        this.stepsDone, this.lastCheckpoint,
      );
    }
    return info;
  }

  /** Runs evaluate() with the model in eval mode and records the metrics. */
  evaluateNow(): Record<string, number> | undefined {
    if (!this.opts.evaluate) return undefined;
    this.opts.model.train?.(false);
    try {
      const metrics = noGrad(() => this.opts.evaluate!(this.stepsDone)) ?? undefined;
      if (metrics) this.evals.push({ step: this.stepsDone, metrics });
      return metrics;
    } finally {
      this.opts.model.train?.(true);
    }
  }

  /**
   * Trains until `steps` steps are done (continuing from a resumed step), evaluating and
   * checkpointing on the configured periods and after the last step. Yields to the event loop
   * between steps so signal handlers can call stop().
   */
  async run(): Promise<TrainSummary> {
    this.sessionStart = performance.now();
    this.sessionSteps = 0;
    this.sessionTokens = 0;
    this.stopRequested = false;
    this.opts.model.train?.(true);
    const evalEvery = this.opts.evalEvery ?? 0;
    const ckptEvery = this.opts.checkpointEvery ?? 0;
    let pendingCheckpoint = false;
    while (this.stepsDone < this.opts.steps && !this.stopRequested) {
      this.trainStep();
      const s = this.stepsDone;
      const last = s === this.opts.steps;
      if (this.opts.evaluate && ((evalEvery > 0 && s % evalEvery === 0) || last)) this.evaluateNow();
      if (this.opts.checkpointDir && ((ckptEvery > 0 && s % ckptEvery === 0) || last || this.stopRequested)) pendingCheckpoint = true;
      // A checkpoint is only written from a good step, so the last one on disk is always good.
      if (pendingCheckpoint && this.badStreak === 0) {
        this.saveCheckpoint();
        pendingCheckpoint = false;
      }
      await new Promise<void>((r) => setImmediate(r));
    }
    return {
      steps: this.stepsDone, lastLoss: this.lastLoss, skippedSteps: this.skipped, tokens: this.sessionTokens,
      elapsedMs: performance.now() - this.sessionStart, evals: this.evals, checkpoint: this.lastCheckpoint,
    };
  }

  /**
   * Writes `step-NNNNNNNN.safetensors` (model parameters as `model.<name>`, AdamW moments as
   * `optimizer.m.<name>` / `optimizer.v.<name>`) and then its JSON sidecar `step-NNNNNNNN.json`
   * (step, optimizer step and lr, RNG states, data position, counters), each atomically
   * (temporary file, fsync, rename). The sidecar is written last: a checkpoint exists once its
   * sidecar does. Older checkpoints beyond keepCheckpoints are deleted. Returns the sidecar path.
   */
  saveCheckpoint(dir = this.opts.checkpointDir): string {
    if (!dir) throw new RrtError('saveCheckpoint: no folder given (set checkpointDir)');
    mkdirSync(dir, { recursive: true });
    removeStaleTempFiles(dir);
    const base = `step-${String(this.stepsDone).padStart(8, '0')}`;
    const state = this.optimizer.stateDict();
    const names = this.paramNames;
    const params = this.params;
    function* tensors(): Generator<[string, F32Tensor]> {
      for (let i = 0; i < params.length; i++) yield [`model.${names[i]}`, { shape: params[i].shape.slice(), data: params[i].dataSync() }];
      for (const buf of ['m', 'v']) {
        const list = state.buffers[buf] ?? [];
        for (let i = 0; i < params.length; i++) if (list[i]) yield [`optimizer.${buf}.${names[i]}`, { shape: params[i].shape.slice(), data: list[i]! }];
      }
    }
    writeSafetensorsFile(join(dir, `${base}.safetensors`), tensors(), { format: 'rrt-trainer', step: String(this.stepsDone) });
    const json: CheckpointJson = {
      format: 'rrt-trainer-checkpoint', version: 1, step: this.stepsDone, weights: `${base}.safetensors`, paramNames: names,
      optimizer: { kind: state.kind, step: state.step, lr: state.lr },
      rng: { global: globalGenerator().getState(), trainer: this.opts.rng?.getState() ?? null },
      data: this.opts.data.getState?.() ?? null,
      skippedSteps: this.skipped, tokens: this.tokensTotal,
      trainingMs: this.trainingMsBefore + (this.sessionStart ? performance.now() - this.sessionStart : 0),
      evals: this.evals,
    };
    const path = join(dir, `${base}.json`);
    writeFileAtomic(path, new TextEncoder().encode(JSON.stringify(json, null, 1) + '\n'));
    this.lastCheckpoint = path;
    pruneCheckpoints(dir, this.opts.keepCheckpoints ?? 2);
    return path;
  }

  /**
   * Restores a checkpoint written by saveCheckpoint: parameters (in place), AdamW state, RNG
   * states, data position and counters. `path` is a sidecar .json or a folder (its latest
   * checkpoint). Returns false when the folder holds no checkpoint.
   */
  loadCheckpoint(path = this.opts.checkpointDir): boolean {
    if (!path) throw new RrtError('loadCheckpoint: no path given (set checkpointDir)');
    const sidecar = path.endsWith('.json') ? path : latestCheckpoint(path);
    if (!sidecar) return false;
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(sidecar, 'utf8'));
    } catch (e) {
      throw new RrtError(`${sidecar}: cannot read the checkpoint sidecar: ${(e as Error).message}`);
    }
    const json = parseSidecar(raw, sidecar);
    const missing = this.paramNames.filter((n) => !json.paramNames.includes(n));
    const extra = json.paramNames.filter((n) => !this.paramNames.includes(n));
    if (missing.length || extra.length) {
      throw new RrtError(`${sidecar}: parameters differ from the model's (missing: ${missing.slice(0, 5).join(', ') || 'none'}; unexpected: ${extra.slice(0, 5).join(', ') || 'none'})`);
    }
    // Everything is read and checked before anything is changed, so a bad file leaves the trainer as it was.
    const file = SafetensorsFile.open(join(dirname(sidecar), json.weights));
    const values: Float32Array[] = [];
    const buffers: OptimizerState['buffers'] = { m: [], v: [] };
    try {
      const has = new Set(file.names());
      this.params.forEach((p, i) => {
        const name = this.paramNames[i];
        const t = file.read(`model.${name}`);
        if (t.shape.join() !== p.shape.join()) throw new FormatError(`${file.path}: "model.${name}" has shape ${fmtShape(t.shape)}, the model has ${fmtShape(p.shape)}`);
        values.push(t.data);
        for (const b of ['m', 'v']) {
          const key = `optimizer.${b}.${name}`;
          const m = has.has(key) ? file.read(key) : null;
          if (m && m.data.length !== p.size) throw new FormatError(`${file.path}: "${key}" has ${m.data.length} values, the parameter has ${p.size}`);
          buffers[b].push(m ? m.data : null);
        }
      });
    } finally {
      file.close();
    }
    noGrad(() => {
      this.params.forEach((p, i) => {
        const tmp = fromValues(values[i], p.shape.slice(), p.backend);
        p.backend.kernels.copy(tmp.storage, p.storage);
        tmp.dispose();
      });
    });
    this.optimizer.loadStateDict({ kind: json.optimizer.kind, step: json.optimizer.step, lr: json.optimizer.lr, buffers });
    globalGenerator().setState(json.rng.global);
    if (json.rng.trainer && this.opts.rng) this.opts.rng.setState(json.rng.trainer);
    if (json.data !== null && this.opts.data.setState) this.opts.data.setState(json.data);
    this.stepsDone = json.step;
    this.skipped = json.skippedSteps;
    this.badStreak = 0;
    this.tokensTotal = json.tokens;
    this.trainingMsBefore = json.trainingMs;
    this.evals = json.evals;
    this.lastCheckpoint = sidecar;
    return true;
  }

  private countTokens(batch: B): number {
    if (this.opts.tokenCount) return this.opts.tokenCount(batch);
    const ids = (batch as { ids?: ArrayLike<number> } | null)?.ids;
    return ids && typeof ids.length === 'number' ? ids.length : 0;
  }
}

/** The sidecar path of the newest checkpoint in a folder, or null. */
export function latestCheckpoint(dir: string): string | null {
  if (!existsSync(dir)) return null;
  const steps = listCheckpoints(dir);
  return steps.length ? join(dir, steps[steps.length - 1][1]) : null;
}

function listCheckpoints(dir: string): [number, string][] {
  return readdirSync(dir)
    .map((f) => [CHECKPOINT_RE.exec(f), f] as const)
    .filter(([m]) => m)
    .map(([m, f]) => [Number(m![1]), f] as [number, string])
    .sort((a, b) => a[0] - b[0]);
}

function pruneCheckpoints(dir: string, keep: number): void {
  const all = listCheckpoints(dir);
  for (const [, f] of all.slice(0, Math.max(0, all.length - Math.max(1, keep)))) {
    // Sidecar first: a checkpoint without its sidecar is never picked up.
    for (const name of [f, f.replace(/\.json$/, '.safetensors')]) {
      try {
        unlinkSync(join(dir, name));
      } catch {
        // already gone
      }
    }
  }
}

/** Checkpoint names of the parameters: the model's dotted paths when it has them (first path of a tied one), else param.<i>. */
function nameParams(model: Trainable, params: Tensor[]): string[] {
  const byTensor = new Map<Tensor, string>();
  if (model.namedParameters) for (const [name, t] of model.namedParameters()) if (!byTensor.has(t)) byTensor.set(t, name);
  const names = params.map((p, i) => byTensor.get(p) ?? `param.${i}`);
  if (new Set(names).size !== names.length) return params.map((_, i) => `param.${i}`);
  return names;
}
