// Training objectives: next-token cross-entropy and knowledge distillation from a teacher's
// logits (forward KL, reverse KL, or a weighted mix of CE and KD).

import { RrtError, ShapeError, type Tensor, add, affine, crossEntropy, fmtShape, fromValues, klDivergence, mul, sum } from '@rrt/tensor';

/** Targets equal to this are not scored (padding); the same value as PyTorch's default. */
export const IGNORE_INDEX = -100;

/**
 * Mean next-token cross-entropy in nats. logits: [B, T, V] (or [N, V]); targets: B*T ids
 * (row-major; IGNORE_INDEX entries are skipped) -> scalar.
 */
export function nextTokenLoss(logits: Tensor, targets: ArrayLike<number>, opts: { ignoreIndex?: number } = {}): Tensor {
  return crossEntropy(logits, targets, { ignoreIndex: opts.ignoreIndex ?? IGNORE_INDEX, reduction: 'mean' });
}

export type DistillationKind = 'ce' | 'forward_kl' | 'reverse_kl' | 'mix';

export interface DistillationOptions {
  /**
   * 'ce': cross-entropy with the targets only (no teacher); 'forward_kl': KL(teacher || student);
   * 'reverse_kl': KL(student || teacher); 'mix': (1 - alpha) * CE + alpha * KL (forward by default).
   */
  kind: DistillationKind;
  /** Softmax temperature of both distributions; the KL term is scaled by T^2 (default 1). */
  temperature?: number;
  /** Weight of the KD term in 'mix', in [0, 1] (default 0.5). */
  alpha?: number;
  /** Direction of the KL term in 'mix' (default 'forward'). */
  mixDirection?: 'forward' | 'reverse';
  ignoreIndex?: number;
}

/**
 * Distillation loss of student logits against teacher logits, both [B, T, V] (or [N, V]);
 * targets: B*T ids, needed for 'ce' and 'mix' and otherwise only used to skip IGNORE_INDEX
 * positions (may be null). Returns a scalar averaged over scored positions.
 *
 * The teacher gets no gradient: it is detached here, and callers should compute it under
 * noGrad() anyway so no graph is recorded for it.
 */
export function distillationLoss(studentLogits: Tensor, teacherLogits: Tensor | null, targets: ArrayLike<number> | null, opts: DistillationOptions): Tensor {
  const { kind } = opts;
  const ignoreIndex = opts.ignoreIndex ?? IGNORE_INDEX;
  const temperature = opts.temperature ?? 1;
  const alpha = opts.alpha ?? 0.5;
  if (!(temperature > 0)) throw new RrtError(`distillationLoss: temperature must be > 0, got ${temperature}`);
  if (!(alpha >= 0 && alpha <= 1)) throw new RrtError(`distillationLoss: alpha must be in [0, 1], got ${alpha}`);
  const needsTargets = kind === 'ce' || kind === 'mix';
  if (needsTargets && !targets) throw new RrtError(`distillationLoss: kind '${kind}' needs targets`);
  if (kind === 'ce') return nextTokenLoss(studentLogits, targets!, { ignoreIndex });
  if (kind !== 'forward_kl' && kind !== 'reverse_kl' && kind !== 'mix') {
    throw new RrtError(`distillationLoss: unknown kind ${JSON.stringify(kind)}; expected 'ce', 'forward_kl', 'reverse_kl' or 'mix'`);
  }
  if (!teacherLogits) throw new RrtError(`distillationLoss: kind '${kind}' needs teacher logits`);
  if (studentLogits.shape.join() !== teacherLogits.shape.join()) {
    throw new ShapeError(`distillationLoss: student logits ${fmtShape(studentLogits.shape)} and teacher logits ${fmtShape(teacherLogits.shape)} differ`);
  }
  const direction = kind === 'reverse_kl' ? 'reverse' : kind === 'forward_kl' ? 'forward' : opts.mixDirection ?? 'forward';
  const kd = maskedKl(studentLogits, teacherLogits.detach(), targets, ignoreIndex, temperature, direction);
  if (kind !== 'mix') return kd;
  const ce = nextTokenLoss(studentLogits, targets!, { ignoreIndex });
  return add(affine(ce, 1 - alpha, 0), affine(kd, alpha, 0));
}

/** Mean KL over positions whose target is not ignoreIndex (all positions when targets is null). */
function maskedKl(
  student: Tensor, teacher: Tensor, targets: ArrayLike<number> | null, ignoreIndex: number, temperature: number, direction: 'forward' | 'reverse',
): Tensor {
  const rows = student.size / student.shape[student.rank - 1];
  if (targets && targets.length !== rows) {
    throw new ShapeError(`distillationLoss: ${targets.length} targets for logits ${fmtShape(student.shape)} (${rows} positions)`);
  }
  let ignored = 0;
  if (targets) for (let i = 0; i < targets.length; i++) if (targets[i] === ignoreIndex) ignored++;
  if (ignored === 0) return klDivergence(student, teacher, { temperature, direction, reduction: 'mean' });
  const perRow = klDivergence(student, teacher, { temperature, direction, reduction: 'none' });
  const mask = new Float32Array(rows);
  for (let i = 0; i < rows; i++) mask[i] = targets![i] === ignoreIndex ? 0 : 1;
  const total = sum(mul(perRow, fromValues(mask, perRow.shape.slice(), perRow.backend)));
  return affine(total, 1 / Math.max(rows - ignored, 1), 0);
}
