// @rrt/cli: the `rrt` command, and run(argv) to call it from code or tests.

import { CommanderError } from 'commander';
import { buildProgram } from './cli.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError } from './errors.js';
import { commandPath, failedCommand, type RunState } from './program.js';
import { resolveIO, type CliIO } from './ui/io.js';

export { buildProgram } from './cli.js';
export { EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError } from './errors.js';
export { CommandContext, type GlobalOptions } from './context.js';
export { ProgressBar, type ProgressOptions, type ProgressStats } from './ui/progress.js';
export { StringStream, resolveIO, type CliIO, type OutStream } from './ui/io.js';
export { formatBillions, formatBytes, formatCompact, formatDuration, formatInt, formatParamCount, formatTable } from './ui/format.js';

/** True when --json appears before a "--" separator: errors then also go to stdout as JSON. */
function wantsJson(argv: readonly string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (a === '--json') return true;
  }
  return false;
}

/** One line: newlines and runs of spaces collapsed. */
function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/**
 * Runs the `rrt` command with `argv` (the arguments after "rrt", e.g. ['params', '--json'])
 * and resolves to its exit code: 0 ok, 1 failure, 2 bad usage, 130 interrupted. `io` replaces
 * the process streams, environment and working directory (tests capture output this way).
 */
export async function run(argv: readonly string[], io: Partial<CliIO> = {}): Promise<number> {
  const state: RunState = { io: resolveIO(io), exitCode: EXIT_OK };
  const program = buildProgram(state);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return state.exitCode;
  } catch (err) {
    return report(err, state, program.name(), wantsJson(argv));
  }
}

function report(err: unknown, state: RunState, rootName: string, json: boolean): number {
  const { io } = state;
  let where = state.commandPath ?? rootName;
  let code: number;
  let line: string;
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT_OK;
    const cmd = failedCommand.get(err);
    if (cmd) where = commandPath(cmd);
    // Commander already printed help (e.g. `rrt` or `rrt bench` with no subcommand).
    if (err.code === 'commander.help' || err.code === 'commander.executeSubCommandAsync') return EXIT_USAGE;
    const message = oneLine(err.message.replace(/^error:\s*/, '')).replace(/\(Did you mean (.*)\?\)/, '(did you mean $1?)');
    code = EXIT_USAGE;
    line = `${where}: ${message}; see '${where} --help'`;
  } else if (err instanceof UsageError) {
    code = EXIT_USAGE;
    line = `${where}: ${oneLine(err.message)}; see '${where} --help'`;
  } else {
    code = EXIT_FAILURE;
    line = `${where}: error: ${oneLine(err instanceof Error ? err.message : String(err))}`;
  }
  io.stderr.write(`${line}\n`);
  if (io.env.RRT_DEBUG === '1' && err instanceof Error && err.stack) io.stderr.write(`${err.stack}\n`);
  if (json && !state.ctx?.hasEmitted) {
    const doc = { command: where.replace(/^rrt ?/, ''), error: { message: line, exitCode: code, kind: code === EXIT_USAGE ? 'usage' : 'failure' } };
    io.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
  }
  return code;
}
