// A one-line progress bar on stderr: done/total, rate, tokens/s, running loss and ETA. It only
// draws on a terminal; elsewhere (logs, CI, pipes) it stays silent so output remains parseable.

import { formatCompact, formatDuration } from './format.js';
import type { OutStream } from './io.js';

export interface ProgressOptions {
  /** Units of work in the whole job (steps, batches, requests). */
  total: number;
  /** Shown before the bar, e.g. "train". */
  label?: string;
  /** Name of one unit of work, e.g. "step". */
  unit?: string;
  /** Where to draw (stderr). */
  stream: OutStream;
  /** False draws nothing (not a TTY, --quiet, or a test). */
  enabled: boolean;
  /** Milliseconds; injectable so tests control time. */
  now?: () => number;
  /** Redraws at most this often (default 100 ms); the final state always draws. */
  minIntervalMs?: number;
  /** Units already done when the bar starts (a resumed run): excluded from rates and the ETA. */
  start?: number;
  /** Weight of the newest loss in the running average (default 0.1). */
  lossSmoothing?: number;
}

export interface ProgressStats {
  /** Tokens processed since the bar started (cumulative). */
  tokens?: number;
  /** Loss of the latest unit of work; the bar shows an exponential running average. */
  loss?: number;
}

export class ProgressBar {
  private readonly now: () => number;
  private readonly startTime: number;
  private readonly startDone: number;
  private done: number;
  private tokens = 0;
  private runningLoss: number | undefined;
  private lastDraw = -Infinity;
  private drawn = false;
  private finished = false;

  constructor(private readonly opts: ProgressOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.startTime = this.now();
    this.startDone = opts.start ?? 0;
    this.done = this.startDone;
  }

  get enabled(): boolean {
    return this.opts.enabled;
  }

  /** The smoothed loss shown on the bar, if any loss was reported. */
  get loss(): number | undefined {
    return this.runningLoss;
  }

  /** Records that `done` units (absolute, not an increment) are complete. */
  update(done: number, stats: ProgressStats = {}): void {
    this.done = done;
    if (stats.tokens !== undefined) this.tokens = stats.tokens;
    if (stats.loss !== undefined && Number.isFinite(stats.loss)) {
      const a = this.opts.lossSmoothing ?? 0.1;
      this.runningLoss = this.runningLoss === undefined ? stats.loss : (1 - a) * this.runningLoss + a * stats.loss;
    }
    const t = this.now();
    if (t - this.lastDraw >= (this.opts.minIntervalMs ?? 100) || done >= this.opts.total) this.draw(t);
  }

  /** Erases the bar so other text can be printed; the next update redraws it. */
  clear(): void {
    if (this.opts.enabled && this.drawn) {
      this.opts.stream.write('\r\x1b[2K');
      this.drawn = false;
    }
  }

  /** Draws the final state and moves to a new line. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (!this.opts.enabled) return;
    this.draw(this.now());
    this.opts.stream.write('\n');
  }

  /** The bar as text for a terminal `columns` wide (pure: tests call it directly). */
  render(columns = this.opts.stream.columns ?? 80, t = this.now()): string {
    const { total } = this.opts;
    const elapsed = Math.max(1e-9, (t - this.startTime) / 1000);
    const doneHere = this.done - this.startDone;
    const frac = total > 0 ? Math.min(1, this.done / total) : 1;
    const parts: string[] = [`${this.done}/${total}${this.opts.unit ? ` ${this.opts.unit}s` : ''}`];
    if (this.tokens > 0) parts.push(`${formatCompact(this.tokens / elapsed)} tok/s`);
    else if (doneHere > 0) parts.push(`${formatCompact(doneHere / elapsed)} ${this.opts.unit ?? 'it'}/s`);
    if (this.runningLoss !== undefined) parts.push(`loss ${this.runningLoss.toFixed(4)}`);
    const remaining = total - this.done;
    const eta = doneHere > 0 ? (elapsed / doneHere) * remaining : Number.NaN;
    parts.push(remaining <= 0 ? `${formatDuration(elapsed)}` : `ETA ${formatDuration(eta)}`);
    const prefix = `${this.opts.label ? `${this.opts.label} ` : ''}${String(Math.floor(frac * 100)).padStart(3)}% `;
    const suffix = ` ${parts.join(' | ')}`;
    const barWidth = Math.max(10, Math.min(40, columns - 1 - prefix.length - suffix.length - 2));
    const filled = Math.round(frac * barWidth);
    const line = `${prefix}[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]${suffix}`;
    return line.length > columns - 1 ? line.slice(0, Math.max(0, columns - 1)) : line;
  }

  private draw(t: number): void {
    this.lastDraw = t;
    if (!this.opts.enabled) return;
    this.opts.stream.write(`\r\x1b[2K${this.render(this.opts.stream.columns ?? 80, t)}`);
    this.drawn = true;
  }
}
