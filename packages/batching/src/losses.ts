// Exit-aware training: cross-entropy at every loop's exit, weighted by a schedule, each exit
// optionally distilled from a teacher's logits. The paper's best recipe was post-training (after
// uptraining, nothing frozen) with the aggressive schedule plus KD.

import { RrtError, ShapeError, type Tensor, add, affine, crossEntropy, fmtShape, fromValues, klDivergence, mul, noGrad, sum } from '@rrt/tensor';
import type { CausalLM } from '@rrt/layers';
import { type ExitHeadAdapters, allExitLogits, resolveLayout } from './exits.js';
import type { LoopLayout, LoopLayoutOptions } from './loops.js';

/**
 * How the exits' losses are weighted (the paper does not give formulas; these are ours):
 * 'weighted': w_b = (b + 1) / loops, deeper exits count more and the last counts 1;
 * 'aggressive': 0.1 on every earlier exit, 1 on the last (the paper's coefficient);
 * 'final': only the last exit (plain training); or explicit weights, one per loop.
 */
export type ExitLossSchedule = 'weighted' | 'aggressive' | 'final' | readonly number[];

/** Teacher logits for a batch: a model run under noGrad, a function, or precomputed [B, T, V]. */
export type TeacherSource = CausalLM | ((ids: ArrayLike<number>, shape: [number, number]) => Tensor) | Tensor;

/** What exitTrainingLoss needs of a batch (the layers `Batch`): ids and targets, B*T each, shape [B, T]. */
export interface ExitLossBatch {
  ids: ArrayLike<number>;
  targets: ArrayLike<number>;
  shape: [number, number];
}

export interface ExitLossOptions {
  /** Default 'aggressive'. */
  schedule?: ExitLossSchedule;
  /** Adds KD to every exit: loss_b = (1 - kdWeight) * CE_b + kdWeight * KL_b. */
  teacher?: TeacherSource;
  /** Weight of the KD term in [0, 1] (default 0.5 with a teacher). */
  kdWeight?: number;
  /** Softmax temperature of the KD term; KL is scaled by T^2 (default 1). */
  temperature?: number;
  /** 'forward' = KL(teacher || student) (default) or 'reverse'. */
  kdDirection?: 'forward' | 'reverse';
  /** Scale the weights to sum to 1 (default false: the last exit keeps weight 1 as in plain training). */
  normalize?: boolean;
  layout?: LoopLayout | LoopLayoutOptions;
  adapters?: ExitHeadAdapters;
  /** Targets equal to this are not scored (default -100). */
  ignoreIndex?: number;
}

/** The per-loop weights of a schedule for `loops` exits. */
export function exitLossWeights(schedule: ExitLossSchedule, loops: number, normalize = false): number[] {
  if (!Number.isInteger(loops) || loops < 1) throw new RrtError(`exitLossWeights: loops must be an integer >= 1, got ${loops}`);
  let w: number[];
  if (schedule === 'weighted') w = Array.from({ length: loops }, (_, b) => (b + 1) / loops);
  else if (schedule === 'aggressive') w = Array.from({ length: loops }, (_, b) => (b === loops - 1 ? 1 : 0.1));
  else if (schedule === 'final') w = Array.from({ length: loops }, (_, b) => (b === loops - 1 ? 1 : 0));
  else if (Array.isArray(schedule)) {
    if (schedule.length !== loops) throw new RrtError(`exit loss weights: ${schedule.length} given for ${loops} exits`);
    if (schedule.some((x) => !(x >= 0) || !Number.isFinite(x))) throw new RrtError(`exit loss weights must be finite and >= 0, got [${schedule.join(', ')}]`);
    w = [...schedule];
  } else {
    throw new RrtError(`unknown exit loss schedule ${JSON.stringify(schedule)}; expected 'weighted', 'aggressive', 'final' or one weight per exit`);
  }
  const total = w.reduce((a, b) => a + b, 0);
  if (!(total > 0)) throw new RrtError('exit loss weights are all zero');
  return normalize ? w.map((x) => x / total) : w;
}

export interface ExitLosses {
  /** The weighted sum, a scalar with autograd. */
  total: Tensor;
  /** Each exit's unweighted loss (CE, or the CE/KD mix with a teacher), scalars. */
  perExit: Tensor[];
  weights: number[];
}

/**
 * Every exit's loss on one batch and their weighted sum. ids/targets: B*T each, shape [B, T];
 * the model runs once and each loop's hidden state goes through the (shared) head.
 */
export function exitLosses(model: CausalLM, batch: ExitLossBatch, opts: ExitLossOptions = {}): ExitLosses {
  const layout = resolveLayout(model, opts.layout);
  const weights = exitLossWeights(opts.schedule ?? 'aggressive', layout.loops, opts.normalize ?? false);
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const [B, T] = batch.shape;
  if (batch.ids.length !== B * T || batch.targets.length !== B * T) {
    throw new ShapeError(`exitTrainingLoss: ${batch.ids.length} ids and ${batch.targets.length} targets for a batch of [${B}, ${T}]`);
  }
  const temperature = opts.temperature ?? 1;
  const kdWeight = opts.kdWeight ?? 0.5;
  if (!(temperature > 0)) throw new RrtError(`exitTrainingLoss: temperature must be > 0, got ${temperature}`);
  if (!(kdWeight >= 0 && kdWeight <= 1)) throw new RrtError(`exitTrainingLoss: kdWeight must be in [0, 1], got ${kdWeight}`);
  const teacher = opts.teacher !== undefined && kdWeight > 0 ? teacherLogits(opts.teacher, batch) : null;
  const exits = allExitLogits(model, batch.ids, batch.shape, { layout, adapters: opts.adapters });
  const mask = teacher ? scoredMask(batch.targets, ignoreIndex) : null;
  const perExit: Tensor[] = [];
  let total: Tensor | null = null;
  exits.forEach((logits, b) => {
    let loss = crossEntropy(logits, batch.targets, { ignoreIndex, reduction: 'mean' });
    if (teacher) {
      if (teacher.shape.join() !== logits.shape.join()) {
        throw new ShapeError(`exitTrainingLoss: teacher logits ${fmtShape(teacher.shape)} and student logits ${fmtShape(logits.shape)} differ`);
      }
      const kd = maskedKl(logits, teacher, mask!, temperature, opts.kdDirection ?? 'forward');
      loss = add(affine(loss, 1 - kdWeight, 0), affine(kd, kdWeight, 0));
    }
    perExit.push(loss);
    if (weights[b] === 0) return;
    const term = affine(loss, weights[b], 0);
    total = total ? add(total, term) : term;
  });
  return { total: total!, perExit, weights };
}

/**
 * The exit-aware training loss: a scalar to minimise, for the layers Trainer's `loss`, e.g.
 * `loss: (batch) => exitTrainingLoss(model, batch, { schedule: 'aggressive', teacher, kdWeight: 0.5 })`.
 * batch: ids and targets B*T each with shape [B, T].
 */
export function exitTrainingLoss(model: CausalLM, batch: ExitLossBatch, opts: ExitLossOptions = {}): Tensor {
  return exitLosses(model, batch, opts).total;
}

function teacherLogits(source: TeacherSource, batch: ExitLossBatch): Tensor {
  return noGrad(() => {
    if (typeof source === 'function') return source(batch.ids, batch.shape).detach();
    if ('forward' in source && typeof source.forward === 'function') return (source as CausalLM).forward(batch.ids, batch.shape).logits;
    return (source as Tensor).detach();
  });
}

/** 1 where the target is scored, 0 where it is ignoreIndex; null when every position counts. */
function scoredMask(targets: ArrayLike<number>, ignoreIndex: number): Float32Array | null {
  let ignored = 0;
  for (let i = 0; i < targets.length; i++) if (targets[i] === ignoreIndex) ignored++;
  if (ignored === 0) return null;
  const m = new Float32Array(targets.length);
  for (let i = 0; i < targets.length; i++) m[i] = targets[i] === ignoreIndex ? 0 : 1;
  return m;
}

/** Mean KL over the scored positions. */
function maskedKl(student: Tensor, teacher: Tensor, mask: Float32Array | null, temperature: number, direction: 'forward' | 'reverse'): Tensor {
  if (!mask) return klDivergence(student, teacher, { temperature, direction, reduction: 'mean' });
  const perRow = klDivergence(student, teacher, { temperature, direction, reduction: 'none' });
  let scored = 0;
  for (const m of mask) scored += m;
  const total = sum(mul(perRow, fromValues(mask, perRow.shape.slice(), perRow.backend)));
  return affine(total, 1 / Math.max(scored, 1), 0);
}
