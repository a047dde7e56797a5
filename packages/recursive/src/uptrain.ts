// Uptraining (PAPER.md section 1): continued training of a converted recursive model, with
// knowledge distillation from the original model. The teacher runs under noGrad on every batch
// and is never handed to the optimizer, so it stays exactly as it was.

import { RrtError, noGrad, type Tensor } from '@rrt/tensor';
import {
  Trainer, distillationLoss, type Batch, type CausalLM, type DataSource, type DistillationKind, type ScheduleSpec, type StepInfo,
  type TrainSummary,
} from '@rrt/layers';
import type { LrSchedule } from '@rrt/tensor';

/** 'kd': KL to the teacher only; 'ce': next-token CE only (no teacher); 'mix': (1 - alpha) CE + alpha KD. */
export type UptrainLoss = 'kd' | 'ce' | 'mix';

export interface UptrainLossOptions {
  /** Default 'kd'. */
  loss?: UptrainLoss;
  /** KL direction: 'forward' = KL(teacher || student) (default), 'reverse' = KL(student || teacher). */
  kdDirection?: 'forward' | 'reverse';
  /** Softmax temperature of the KD term, which is scaled by T^2 (default 1). */
  temperature?: number;
  /** Weight of KD in 'mix', in [0, 1] (default 0.5). */
  alpha?: number;
}

export interface UptrainOptions extends UptrainLossOptions {
  /** Optimizer steps. */
  steps: number;
  /** Peak learning rate (default 3e-4). */
  lr?: number;
  /** Default constant; e.g. { kind: 'cosine', warmup: 10 }. */
  schedule?: ScheduleSpec | LrSchedule;
  /** AdamW decoupled weight decay on matrices (default 0.1, as the layers Trainer). */
  weightDecay?: number;
  /** Global gradient-norm clip (default 1). */
  gradClip?: number;
  /** Micro-batches per step (default 1). */
  accumulation?: number;
  evalEvery?: number;
  /** Runs with the student in eval mode under noGrad; metrics are kept in the summary. */
  evaluate?: (step: number) => Record<string, number> | void;
  checkpointDir?: string;
  checkpointEvery?: number;
  onStep?: (info: StepInfo) => void;
}

function distillationKind(opts: UptrainLossOptions): DistillationKind {
  const loss = opts.loss ?? 'kd';
  if (loss === 'ce') return 'ce';
  if (loss === 'mix') return 'mix';
  if (loss === 'kd') return (opts.kdDirection ?? 'forward') === 'forward' ? 'forward_kl' : 'reverse_kl';
  throw new RrtError(`uptrain: loss must be 'kd', 'ce' or 'mix', got ${JSON.stringify(loss)}`);
}

/**
 * The uptraining loss of one batch ({ ids, targets: B*T, shape [B, T] }) -> scalar, with autograd
 * recorded for the student only; the teacher's logits ([B, T, V]) are computed under noGrad.
 * For use with the layers Trainer directly; uptrain wraps it.
 */
export function uptrainLoss(student: CausalLM, teacher: CausalLM | null, opts: UptrainLossOptions = {}): (batch: Batch) => Tensor {
  const kind = distillationKind(opts);
  if (kind !== 'ce' && !teacher) throw new RrtError(`uptrain: loss '${opts.loss ?? 'kd'}' needs a teacher model`);
  if (teacher) {
    if (teacher === student) throw new RrtError('uptrain: the teacher and the student are the same model');
    const studentParams = new Set(student.parameters());
    const shared = [...teacher.namedParameters()].find(([, t]) => studentParams.has(t));
    if (shared) throw new RrtError(`uptrain: the teacher shares parameter "${shared[0]}" with the student; training would change the teacher. Convert with toRecursive (it copies weights)`);
    if (teacher.cfg.vocabSize !== student.cfg.vocabSize) throw new RrtError(`uptrain: teacher vocabulary (${teacher.cfg.vocabSize}) differs from the student's (${student.cfg.vocabSize})`);
  }
  const common = { temperature: opts.temperature, alpha: opts.alpha, mixDirection: opts.kdDirection };
  return (batch) => {
    const teacherLogits = kind === 'ce' ? null : noGrad(() => teacher!.forward(batch.ids, batch.shape).logits);
    const { logits } = student.forward(batch.ids, batch.shape);
    return distillationLoss(logits, teacherLogits, batch.targets, { kind, ...common });
  };
}

/** Wraps an iterable of batches as an endless source (re-iterating it when it ends). */
function asSource(data: DataSource<Batch> | Iterable<Batch>): DataSource<Batch> {
  if (typeof (data as DataSource<Batch>).next === 'function' && !(Symbol.iterator in (data as object))) return data as DataSource<Batch>;
  const iterable = data as Iterable<Batch>;
  let it = iterable[Symbol.iterator]();
  let served = 0;
  return {
    next() {
      let r = it.next();
      if (r.done) {
        it = iterable[Symbol.iterator]();
        r = it.next();
        if (r.done) throw new RrtError(`uptrain: the batches ran out after ${served}; pass an array, a re-iterable, or an endless source such as BatchLoader`);
      }
      served++;
      return r.value;
    },
  };
}

/**
 * Uptrains `student` (a RecursiveLM, or any CausalLM) for opts.steps AdamW steps on batches
 * ({ ids, targets: Int32Array B*T, shape [B, T] }, e.g. a BatchLoader), distilling from
 * `teacher` (the original model; frozen, eval mode). teacher may be null for loss 'ce'.
 * Resolves to the layers Trainer's summary.
 */
export async function uptrain(
  student: CausalLM,
  teacher: CausalLM | null,
  batches: DataSource<Batch> | Iterable<Batch>,
  opts: UptrainOptions,
): Promise<TrainSummary> {
  const loss = uptrainLoss(student, teacher, opts);
  const wasTraining = teacher?.training;
  teacher?.eval();
  try {
    const trainer = new Trainer<Batch>({
      model: student,
      loss,
      data: asSource(batches),
      steps: opts.steps,
      lr: opts.lr,
      schedule: opts.schedule,
      weightDecay: opts.weightDecay,
      gradClip: opts.gradClip,
      accumulation: opts.accumulation,
      evalEvery: opts.evalEvery,
      evaluate: opts.evaluate,
      checkpointDir: opts.checkpointDir,
      checkpointEvery: opts.checkpointEvery,
      onStep: opts.onStep,
    });
    return await trainer.run();
  } finally {
    if (teacher && wasTraining !== undefined) teacher.train(wasTraining);
  }
}
