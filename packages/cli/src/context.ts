// What a command's handler gets: parsed global options, the chosen backend, and output helpers
// that keep the --json contract (stdout holds exactly one JSON document, human text goes to stderr).

import { isAbsolute, resolve } from 'node:path';
import { backendLine, type BackendChoice } from './backend.js';
import type { CliIO } from './ui/io.js';
import { ProgressBar, type ProgressOptions } from './ui/progress.js';

/** Options every command accepts (declared once, on the root command). */
export interface GlobalOptions {
  backend?: string;
  seed?: number;
  json?: boolean;
  quiet?: boolean;
}

export class CommandContext {
  private emitted = false;
  /** Set while a progress bar is on screen, so printed lines do not tear it. */
  private activeBar: ProgressBar | null = null;

  constructor(
    readonly io: CliIO,
    readonly global: GlobalOptions,
    /** e.g. "rrt bench matmul". */
    readonly commandPath: string,
    readonly backendChoice: BackendChoice,
  ) {}

  get json(): boolean {
    return this.global.json === true;
  }

  get quiet(): boolean {
    return this.global.quiet === true;
  }

  get hasEmitted(): boolean {
    return this.emitted;
  }

  /** { name, details } of the backend in use, for JSON documents. */
  backendInfo(): { name: string; details: Record<string, string | number | boolean>; fallback?: string } {
    const info = this.backendChoice.backend.info();
    return this.backendChoice.fallbackNote ? { ...info, fallback: this.backendChoice.fallbackNote } : info;
  }

  /** The backend line every command notes on stderr first. */
  backendLine(): string {
    return backendLine(this.backendChoice);
  }

  /**
   * A line of the command's human output: stdout normally; under --json it goes to stderr
   * (and is dropped with --quiet) so that stdout stays one JSON document.
   */
  print(line = ''): void {
    if (this.json && this.quiet) return;
    this.activeBar?.clear();
    (this.json ? this.io.stderr : this.io.stdout).write(`${line}\n`);
  }

  /** A side remark (a file written, a fallback taken) on stderr; --quiet drops it. */
  note(line: string): void {
    if (this.quiet) return;
    this.activeBar?.clear();
    this.io.stderr.write(`${line}\n`);
  }

  /** Writes the --json document: `command` and `backend` first, then `doc`. Only once per run. */
  emit(doc: Record<string, unknown>): void {
    if (this.emitted) throw new Error(`${this.commandPath}: emitted a second JSON document`);
    this.emitted = true;
    const full = { command: this.commandPath.replace(/^rrt /, ''), backend: this.backendInfo(), ...doc };
    this.io.stdout.write(`${JSON.stringify(full, null, 2)}\n`);
  }

  /** Human lines, or the JSON document under --json: the common ending of a command. */
  output(lines: () => readonly string[], doc: () => Record<string, unknown>): void {
    if (this.json) this.emit(doc());
    else for (const line of lines()) this.print(line);
  }

  /** A progress bar on stderr; it draws only when stdout and stderr are terminals and --quiet is off. */
  progress(opts: Omit<ProgressOptions, 'stream' | 'enabled' | 'now'> & { enabled?: boolean }): ProgressBar {
    const enabled = (opts.enabled ?? true) && !this.quiet && this.io.stderr.isTTY === true && this.io.stdout.isTTY === true;
    const bar = new ProgressBar({ ...opts, stream: this.io.stderr, enabled, now: () => this.io.now() });
    if (enabled) this.activeBar = bar;
    return bar;
  }

  /** Forgets the bar registered by progress() once it is finished. */
  releaseProgress(bar: ProgressBar): void {
    if (this.activeBar === bar) this.activeBar = null;
  }

  /** A path given on the command line, resolved against the working directory. */
  resolvePath(path: string): string {
    return isAbsolute(path) ? path : resolve(this.io.cwd, path);
  }
}
