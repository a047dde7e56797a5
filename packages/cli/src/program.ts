// The `rrt` command tree (commander), its global options, and the one wrapper every subcommand's
// handler runs in: --config, --seed, backend selection, the backend line, and the exit code.

import { isAbsolute, resolve } from 'node:path';
import { Command, CommanderError } from 'commander';
import { manualSeed } from '@rrt/tensor';
import { selectBackend } from './backend.js';
import { applyConfigValues, isPlainObject, readJsonFile } from './config.js';
import { CommandContext, type GlobalOptions } from './context.js';
import { UsageError } from './errors.js';
import { parseNonNegativeInt } from './parse.js';
import type { CliIO } from './ui/io.js';

/** State of one run(): the streams, and what the handler decided. */
export interface RunState {
  readonly io: CliIO;
  exitCode: number;
  /** "rrt params" once the command's action started (errors name it). */
  commandPath?: string;
  /** The context of the command that ran, once its backend is chosen. */
  ctx?: CommandContext;
}

export type Handler<Data = unknown> = (
  ctx: CommandContext,
  opts: Record<string, unknown>,
  cmd: Command,
  data: Data | undefined,
) => Promise<number | void> | number | void;

export interface ActionSpec<Data = unknown> {
  /**
   * How the command's --config file is read. 'options' (the default): a JSON object of option
   * values. A function splits the parsed file into option values and data for the handler.
   */
  config?: 'options' | ((json: unknown, source: string, path: string) => { options: Record<string, unknown>; data?: Data });
  run: Handler<Data>;
}

/** "rrt bench matmul" for the matmul subcommand. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Appends an "Examples:" section to a command's --help. */
export function withExamples(cmd: Command, examples: readonly (readonly [command: string, what: string])[]): Command {
  const width = Math.max(...examples.map(([c]) => c.length));
  const lines = examples.map(([c, what]) => `  $ ${c.padEnd(width)}  # ${what}`);
  return cmd.addHelpText('after', `\nExamples:\n${lines.join('\n')}\n`);
}

/** Wires `spec` as the action of `cmd`. */
export function defineAction<Data>(cmd: Command, state: RunState, spec: ActionSpec<Data>): Command {
  return cmd.action(async (...actionArgs: unknown[]) => {
    const command = actionArgs[actionArgs.length - 1] as Command;
    state.commandPath = commandPath(command);
    let data: Data | undefined;
    const configPath = command.opts().config;
    if (typeof configPath === 'string' && spec.config !== undefined) {
      const path = resolvePath(state.io, configPath);
      const json = readJsonFile(path, configPath);
      if (spec.config === 'options') {
        if (!isPlainObject(json)) throw new UsageError(`${configPath}: expected a JSON object of option values`);
        applyConfigValues(command, json, configPath);
      } else {
        const split = spec.config(json, configPath, path);
        applyConfigValues(command, split.options, configPath);
        data = split.data;
      }
    }
    const all = command.optsWithGlobals() as Record<string, unknown> & GlobalOptions;
    if (all.seed !== undefined) manualSeed(all.seed);
    const choice = selectBackend(all.backend, state.io.env);
    const ctx = new CommandContext(state.io, all, commandPath(command), choice);
    state.ctx = ctx;
    // A note, not output: `rrt generate > out.txt` gets the text alone, and -q drops it.
    ctx.note(ctx.backendLine());
    const code = await spec.run(ctx, all, command, data);
    state.exitCode = typeof code === 'number' ? code : 0;
  });
}

function resolvePath(io: CliIO, path: string): string {
  return isAbsolute(path) ? path : resolve(io.cwd, path);
}

/** The root command with global options and output routed to `state.io`. */
export function createRoot(state: RunState, version: string): Command {
  const { io } = state;
  const program = new Command('rrt');
  program
    .description('Relaxed Recursive Transformers: build, convert, relax, train and benchmark looped LMs (arXiv 2410.20672)')
    .version(version, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .option('--backend <name>', 'tensor backend: ref | cpu | gpu (default: $RRT_BACKEND, else cpu)')
    .option('--seed <n>', 'seed of the random generator, for reproducible runs', parseNonNegativeInt)
    .option('--json', 'print one JSON document on stdout (human text goes to stderr)')
    .option('-q, --quiet', 'no progress bar or notes')
    .showSuggestionAfterError(true)
    .configureHelp({ showGlobalOptions: true })
    .configureOutput({
      writeOut: (s) => void io.stdout.write(s),
      writeErr: (s) => void io.stderr.write(s),
      // Parse errors are reported by run() as one line with a hint, not by commander.
      outputError: () => {},
      getOutHelpWidth: () => Math.min(io.stdout.columns ?? 100, 120),
      getErrHelpWidth: () => Math.min(io.stderr.columns ?? 100, 120),
      getOutHasColors: () => false,
      getErrHasColors: () => false,
    });
  program.helpCommand('help [command]', 'show help for a command');
  return program;
}

/** Commander errors that are not failures: --help and --version. */
const BENIGN = new Set(['commander.helpDisplayed', 'commander.version']);

/** Marks every command's parse errors with that command, so the message can name its --help. */
export function finishTree(root: Command): void {
  const visit = (cmd: Command) => {
    cmd.exitOverride((err) => {
      if (!BENIGN.has(err.code)) failedCommand.set(err, cmd);
      throw err;
    });
    cmd.commands.forEach(visit);
  };
  visit(root);
}

export const failedCommand = new WeakMap<CommanderError, Command>();
