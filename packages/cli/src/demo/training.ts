// What every stage of the demo shares: the training loop with its loss curve and progress bar,
// held-out evaluation, and per-exit accuracy and loss. pipeline.ts and full.ts both build on it.

import { crossEntropy, noGrad, tidy, type Tensor } from '@rrt/tensor';
import {
  BatchLoader, Trainer, batches, evaluateLM, TokenSequences, type Batch, type CausalLM, type TextData, type Tokenizer,
} from '@rrt/layers';
import { allExitLogits, argmaxRow, type ExitHeadAdapters } from '@rrt/batching';

export interface LossPoint {
  step: number;
  loss: number;
}

/** What the pipeline reports to a progress bar while a stage trains. */
export interface StageProgress {
  update(done: number, stats: { tokens?: number; loss?: number }): void;
  finish(): void;
}

/** The settings training and evaluation read (a part of PipelineOptions). */
export interface TrainSettings {
  tokenizer: Tokenizer;
  seed: number;
  seqLen: number;
  batchSize: number;
  /** Held-out batches per evaluation. */
  evalBatches: number;
  /** Peak learning rate of every stage (warmup, then cosine decay to a tenth). */
  lr: number;
  log: (line: string) => void;
  /** A progress bar per training stage (the CLI draws one on a terminal); loss lines are logged either way. */
  progress?: (label: string, total: number) => StageProgress;
  /** Polled after every training step: once it returns true, the running stage stops. */
  stopRequested?: () => boolean;
}

export interface HeldOut {
  loss: number;
  perplexity: number;
  bitsPerByte: number;
}

/** The first n sequences of `seqs` (all of them when there are fewer). */
export function firstSequences(seqs: TokenSequences, n: number): TokenSequences {
  const k = Math.min(seqs.count, n);
  return k === seqs.count ? seqs : new TokenSequences(seqs.tokens.subarray(0, k * seqs.seqLen + 1), seqs.seqLen, seqs.what);
}

/** The held-out sequences every evaluation scores: the first batchSize x evalBatches. */
function evalSequences(data: TextData, o: TrainSettings): TokenSequences {
  return firstSequences(data.validation, o.batchSize * o.evalBatches);
}

/** The evaluation sequences as id lists of T + 1 tokens each (for token-by-token evaluations). */
export function heldOutSequences(data: TextData, o: TrainSettings): number[][] {
  const seqs = evalSequences(data, o);
  return Array.from({ length: seqs.count }, (_, i) => Array.from(seqs.sequence(i)));
}

/** Held-out loss / perplexity / bits per byte over the evaluation sequences. */
export function heldOut(model: CausalLM, data: TextData, o: TrainSettings): HeldOut {
  const seqs = evalSequences(data, o);
  const bytes = Buffer.byteLength(o.tokenizer.decode(Array.from(seqs.scoredIds())), 'utf8');
  const r = evaluateLM(model, batches(seqs, { batchSize: o.batchSize, shuffle: false, dropLast: false }), { bytes });
  return { loss: r.loss, perplexity: r.perplexity, bitsPerByte: r.bitsPerByte ?? NaN };
}

/** Per exit (after loop 1, 2, ...): next-token accuracy and mean loss on the evaluation sequences. */
export interface ExitMetrics {
  accuracy: number[];
  loss: number[];
  tokens: number;
}

/** Each exit's argmax accuracy and cross-entropy on the held-out evaluation sequences. */
export function exitMetrics(model: CausalLM, data: TextData, o: TrainSettings, adapters?: ExitHeadAdapters): ExitMetrics {
  const seqs = evalSequences(data, o);
  let hits: number[] = [];
  let losses: number[] = [];
  let tokens = 0;
  const was = model.training;
  model.train(false);
  noGrad(() => {
    for (const b of batches(seqs, { batchSize: o.batchSize, shuffle: false, dropLast: false })) {
      let scored = 0;
      for (const t of b.targets) if (t >= 0) scored++;
      tidy(() => {
        const exits = allExitLogits(model, b.ids, b.shape, { adapters });
        if (hits.length === 0) {
          hits = new Array<number>(exits.length).fill(0);
          losses = new Array<number>(exits.length).fill(0);
        }
        const V = model.cfg.vocabSize;
        exits.forEach((logits, e) => {
          losses[e]! += crossEntropy(logits, b.targets, { reduction: 'mean' }).item() * scored;
          const data = logits.dataSync();
          for (let i = 0; i < b.targets.length; i++) {
            if (b.targets[i]! < 0) continue;
            if (argmaxRow(data.subarray(i * V, (i + 1) * V)) === b.targets[i]) hits[e]! += 1;
          }
        });
      });
      tokens += scored;
    }
  });
  model.train(was);
  const per = (xs: number[]) => xs.map((h) => h / Math.max(1, tokens));
  return { accuracy: per(hits), loss: per(losses), tokens };
}

/** Anything the Trainer can optimise: a model, a RelaxedLora's trainable(), exit adapters. */
export type Trainable = { parameters(): Tensor[]; namedParameters?(): Map<string, Tensor>; train?(flag?: boolean): unknown };

/** Runs a Trainer for `steps` (warmup, then cosine decay), collecting the loss of every step. */
export async function train(model: Trainable, loss: (b: Batch) => Tensor, data: TextData, o: TrainSettings, steps: number, label: string): Promise<LossPoint[]> {
  const curve: LossPoint[] = [];
  const every = Math.max(1, Math.round(steps / 5));
  const bar = o.progress?.(label, steps);
  const tokensPerStep = o.batchSize * o.seqLen;
  const trainer = new Trainer<Batch>({
    model,
    loss,
    data: new BatchLoader(data.train, { batchSize: o.batchSize, seed: o.seed }),
    steps,
    lr: o.lr,
    schedule: { kind: 'cosine', warmup: Math.min(10, Math.floor(steps / 10)), minLr: o.lr / 10 },
    onStep: (s) => {
      if (o.stopRequested?.()) trainer.stop();
      curve.push({ step: s.step, loss: s.loss });
      bar?.update(s.step, { tokens: s.step * tokensPerStep, loss: s.loss });
      if (s.step === 1 || s.step % every === 0 || s.step === steps) o.log(`${label}: step ${s.step}/${steps}  loss ${s.loss.toFixed(4)}  (${(s.elapsedMs / 1000).toFixed(0)} s)`);
    },
  });
  try {
    await trainer.run();
  } finally {
    bar?.finish();
  }
  return curve;
}
