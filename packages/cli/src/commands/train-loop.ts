// What every training command does around a layers Trainer: a progress bar, periodic loss
// lines, and Ctrl-C handling (stop after the current step, keep a checkpoint).

import { join } from 'node:path';
import { latestCheckpoint, type StepInfo, type Trainer, type TrainSummary } from '@rrt/layers';
import type { CommandContext } from '../context.js';
import { UsageError } from '../errors.js';
import { formatCompact, formatDuration } from '../ui/format.js';
import type { ProgressBar } from '../ui/progress.js';

export interface MonitorOptions {
  /** Total optimizer steps of the run (a resumed run counts the earlier ones). */
  steps: number;
  /** Tokens consumed by one optimizer step, for tokens/s. */
  tokensPerStep: number;
  /** Shown before the bar, e.g. "train". */
  label: string;
  /** Loss line every n steps; default 10 lines per run when there is no bar, none with one. */
  logEvery?: number;
  /** False: never draw a bar (demo prints loss lines instead). */
  progressBar?: boolean;
}

export interface MonitoredRun {
  summary: TrainSummary;
  /** Step the run started from (0, or the resumed checkpoint's). */
  startStep: number;
  /** Ctrl-C stopped it before the last step. */
  interrupted: boolean;
  /** Sidecar of the last checkpoint written, if any. */
  checkpoint: string | null;
}

export class TrainingMonitor {
  private bar: ProgressBar | null = null;
  private logEvery = 0;
  private firstStep = 1;
  private sessionTokens = 0;

  constructor(
    private readonly ctx: CommandContext,
    private readonly opts: MonitorOptions,
  ) {}

  /** Pass as the Trainer's onStep. */
  readonly onStep = (info: StepInfo): void => {
    this.sessionTokens += this.opts.tokensPerStep;
    this.bar?.update(info.step, { tokens: this.sessionTokens, loss: info.loss });
    const every = this.logEvery;
    if (every > 0 && (info.step % every === 0 || info.step === this.opts.steps || info.step === this.firstStep)) {
      this.ctx.note(
        `step ${info.step}/${this.opts.steps}  loss ${info.loss.toFixed(4)}  lr ${info.lr.toExponential(2)}  ${formatCompact(info.tokensPerSec)} tok/s  ETA ${formatDuration(info.etaMs / 1000)}${info.skipped ? '  (skipped: not finite)' : ''}`,
      );
    }
  };

  /**
   * Runs the trainer to its last step, or until Ctrl-C; then makes sure a checkpoint of the stop
   * exists. With resume, it first continues from the latest checkpoint in checkpointDir.
   */
  async run<B>(trainer: Trainer<B>, checkpointDir: string | undefined, resume = false): Promise<MonitoredRun> {
    if (resume) {
      if (checkpointDir === undefined || !trainer.loadCheckpoint(checkpointDir)) throw new UsageError(`--resume: no checkpoint in ${checkpointDir ?? '(no checkpoint folder)'}`);
      this.ctx.note(`resumed from step ${trainer.step} (${latestCheckpoint(checkpointDir)})`);
    }
    const startStep = trainer.step;
    this.firstStep = startStep + 1;
    const bar = this.ctx.progress({ total: this.opts.steps, start: startStep, unit: 'step', label: this.opts.label, enabled: this.opts.progressBar ?? true });
    this.bar = bar;
    this.logEvery = this.opts.logEvery ?? (bar.enabled ? 0 : Math.max(1, Math.round((this.opts.steps - startStep) / 10)));
    let interrupted = false;
    const stopListening = this.ctx.io.onInterrupt(() => {
      if (interrupted) return;
      interrupted = true;
      trainer.stop();
      this.ctx.note('interrupt: stopping after this step and saving a checkpoint (Ctrl-C again quits at once)');
    });
    let summary: TrainSummary;
    try {
      summary = await trainer.run();
    } finally {
      stopListening();
      bar.finish();
      this.ctx.releaseProgress(bar);
      this.bar = null;
    }
    // A run that reached its last step is finished, whatever a late Ctrl-C said.
    if (summary.steps >= this.opts.steps) interrupted = false;
    let checkpoint = summary.checkpoint;
    if (interrupted && checkpointDir !== undefined && summary.steps > startStep && Number.isFinite(summary.lastLoss)) {
      // stop() during the trainer's yield between steps ends run() without the stop's checkpoint.
      const current = join(checkpointDir, `step-${String(summary.steps).padStart(8, '0')}.json`);
      if (checkpoint !== current) checkpoint = trainer.saveCheckpoint();
    }
    return { summary, startStep, interrupted, checkpoint };
  }
}

/** The report fields every training command prints about its run. */
export function runReport(run: MonitoredRun, targetSteps: number) {
  const { summary } = run;
  return {
    startStep: run.startStep,
    steps: summary.steps,
    targetSteps,
    interrupted: run.interrupted,
    lastLoss: Number.isFinite(summary.lastLoss) ? summary.lastLoss : null,
    skippedSteps: summary.skippedSteps,
    tokens: summary.tokens,
    elapsedMs: summary.elapsedMs,
    tokensPerSec: summary.elapsedMs > 0 ? (summary.tokens * 1000) / summary.elapsedMs : 0,
    evals: summary.evals,
    checkpoint: run.checkpoint,
  };
}
