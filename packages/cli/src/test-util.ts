// Runs the CLI in-process with captured streams (shared by the test files; not exported by the package).

import { fileURLToPath } from 'node:url';
import { run } from './index.js';
import { StringStream } from './ui/io.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  tty?: boolean;
  /** Receives the Ctrl-C handler the command registers. */
  onInterrupt?: (handler: () => void) => () => void;
}

/** `rrt ...args` with stdout/stderr captured; the environment is empty unless given. */
export async function rrt(args: readonly string[], opts: RunOptions = {}): Promise<CliResult> {
  const stdout = new StringStream(opts.tty ?? false);
  const stderr = new StringStream(opts.tty ?? false);
  const code = await run(args, {
    stdout,
    stderr,
    env: opts.env ?? {},
    cwd: opts.cwd ?? REPO_ROOT,
    ...(opts.onInterrupt ? { onInterrupt: opts.onInterrupt } : {}),
  });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/** Lines of text without the trailing empty one. */
export function lines(text: string): string[] {
  return text.split('\n').filter((l, i, all) => i < all.length - 1 || l !== '');
}

/** stderr lines other than the backend note: what a failure printed (errors are one line). */
export function errorLines(stderr: string): string[] {
  return lines(stderr).filter((l) => !l.startsWith('backend: '));
}
