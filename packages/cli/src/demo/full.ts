// `rrt demo --full`: the rest of the paper's small-scale comparisons, run inside the demo pipeline
// with its data, training loop and evaluation (pipeline.ts): every init method of the plain
// recursive model, several LoRA ranks with SVD init, zero vs SVD init at the demo's rank, and two
// same-size vanilla baselines trained from scratch with the same budget (cross-entropy, and KD
// from the teacher). PAPER.md section 5 lists the claims these rows test.

import { Generator, type Tensor } from '@rrt/tensor';
import { CausalLM, nextTokenLoss, type Batch } from '@rrt/layers';
import { CYCLE, INITS, average, toRecursive, uptrainLoss, withNumLayers } from '@rrt/recursive';
import { relax, residualsFrom } from '@rrt/lora';
import type { LossPoint, Trainable, TrainSettings } from './training.js';

/** What `--full` adds to the pipeline. */
export interface FullStudyOptions {
  /** Init methods of the plain recursive model (names of @rrt/recursive's INITS). */
  inits: string[];
  /** LoRA ranks of the SVD-init relaxed model. */
  ranks: number[];
}

/** One model of the full study: held-out perplexity before and after the same uptraining budget. */
export interface StudyRow {
  /** e.g. "recursive, average init", "relaxed r=4, SVD init", "vanilla 3 layers, from scratch (CE)". */
  name: string;
  group: 'init' | 'rank' | 'lora-init' | 'baseline';
  parameters: number;
  /** Held-out perplexity right after conversion / relaxation / random init. */
  perplexityBefore: number;
  /** Held-out perplexity after `steps` optimizer steps. */
  perplexityAfter: number;
  lossAfter: number;
  curve: LossPoint[];
}

export interface FullStudyResult {
  steps: number;
  rows: StudyRow[];
}

/** The --full defaults: every init method, and ranks around the demo's. */
export const FULL_DEFAULTS: FullStudyOptions = { inits: Object.keys(INITS), ranks: [4, 16, 64] };

/** The pipeline's helpers the study reuses (passed in so the study has no copy of them). */
export interface StudyTools {
  heldOut(model: CausalLM): { loss: number; perplexity: number };
  train(model: Trainable, loss: (b: Batch) => Tensor, steps: number, label: string): Promise<LossPoint[]>;
}

/**
 * Runs the full study on `teacher` (loops 2, CYCLE): rows for each init, each rank (SVD init),
 * zero vs SVD init at `mainRank`, and the two from-scratch baselines. `done` holds rows the
 * default pipeline already measured (stepwise init, SVD at the main rank), keyed by name, so they
 * are not trained twice.
 */
export async function runFullStudy(
  teacher: CausalLM,
  o: Pick<TrainSettings, 'seed' | 'log'> & { steps: number; rank: number; full: FullStudyOptions },
  tools: StudyTools,
  done: ReadonlyMap<string, StudyRow>,
): Promise<FullStudyResult> {
  const rows: StudyRow[] = [];
  const kd = { loss: 'kd' as const, kdDirection: 'forward' as const, temperature: 1 };
  const loops = 2;
  const measure = async (
    name: string,
    group: StudyRow['group'],
    model: CausalLM,
    trainable: Trainable,
    parameters: number,
    loss: (b: Batch) => Tensor,
  ) => {
    const before = tools.heldOut(model);
    const curve = await tools.train(trainable, loss, o.steps, name);
    const after = tools.heldOut(model);
    rows.push({ name, group, parameters, perplexityBefore: before.perplexity, perplexityAfter: after.perplexity, lossAfter: after.loss, curve });
    o.log(`full: ${name}: perplexity ${before.perplexity.toFixed(2)} -> ${after.perplexity.toFixed(2)}`);
  };
  const reuse = (name: string, group: StudyRow['group']): boolean => {
    const row = done.get(name);
    if (row) rows.push({ ...row, group });
    return row !== undefined;
  };

  // 1. Init methods of the plain recursive model (PAPER.md: stepwise should win).
  for (const initName of o.full.inits) {
    const init = INITS[initName];
    if (!init) throw new Error(`demo --full: unknown init "${initName}"; expected one of ${Object.keys(INITS).join(', ')}`);
    const name = `recursive, ${initName} init`;
    if (reuse(name, 'init')) continue;
    const { model } = toRecursive(teacher, { loops, scheme: CYCLE, init, seed: o.seed });
    await measure(name, 'init', model, model, model.numParameters(), uptrainLoss(model, teacher, kd));
    model.dispose();
  }

  // 2. LoRA ranks with SVD init, and 3. zero init at the main rank (SVD init should win), each on
  // the average init, as the pipeline's relaxed model.
  const relaxed = async (rank: number, init: 'svd' | 'zero', group: StudyRow['group']) => {
    const name = `relaxed r=${rank}, ${init === 'svd' ? 'SVD' : 'zero'} init`;
    if (reuse(name, group)) return;
    const { model } = toRecursive(teacher, { loops, scheme: CYCLE, init: average, seed: o.seed });
    const handle = relax(model, init === 'svd' ? { rank, init, residuals: residualsFrom(teacher, model), seed: o.seed } : { rank, init, seed: o.seed });
    await measure(name, group, model, handle.trainable(), model.numParameters() + handle.counts.lora, uptrainLoss(model, teacher, kd));
    handle.remove();
    model.dispose();
  };
  for (const rank of o.full.ranks) await relaxed(rank, 'svd', 'rank');
  await relaxed(o.rank, 'zero', 'lora-init');

  // 4. Same-size vanilla models (as many layers as the recursive model has shared blocks), from a
  // random init, trained for the same steps: plain next-token CE, and KD from the teacher.
  const sharedLayers = teacher.depth / loops;
  const cfg = withNumLayers(teacher.cfg, sharedLayers);
  for (const how of ['CE', 'KD'] as const) {
    const model = new CausalLM(cfg, { rng: new Generator(o.seed + 1) });
    const loss = how === 'CE' ? (b: Batch) => nextTokenLoss(model.forward(b.ids, b.shape).logits, b.targets) : uptrainLoss(model, teacher, kd);
    await measure(`vanilla ${sharedLayers} layers, from scratch (${how})`, 'baseline', model, model, model.numParameters(), loss);
    model.dispose();
  }
  return { steps: o.steps, rows };
}
