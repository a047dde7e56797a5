// The command tree: each subcommand lives in commands/<name>.ts and registers itself here.

import type { Command } from 'commander';
import { createRoot, finishTree, type RunState } from './program.js';
import { cliVersion } from './version.js';
import * as bench from './commands/bench.js';
import * as convert from './commands/convert.js';
import * as demo from './commands/demo.js';
import * as evaluate from './commands/eval.js';
import * as exitTrain from './commands/exit-train.js';
import * as generate from './commands/generate.js';
import * as info from './commands/info.js';
import * as params from './commands/params.js';
import * as relax from './commands/relax.js';
import * as report from './commands/report.js';
import * as serveBench from './commands/serve-bench.js';
import * as simulate from './commands/simulate.js';
import * as train from './commands/train.js';
import * as uptrain from './commands/uptrain.js';

/** Builds a fresh `rrt` program bound to one run's state (commander keeps parse state, so one per run). */
export function buildProgram(state: RunState): Command {
  const program = createRoot(state, cliVersion());
  train.register(program, state);
  convert.register(program, state);
  relax.register(program, state);
  uptrain.register(program, state);
  exitTrain.register(program, state);
  generate.register(program, state);
  evaluate.register(program, state);
  params.register(program, state);
  serveBench.register(program, state);
  simulate.register(program, state);
  bench.register(program, state);
  info.register(program, state);
  demo.register(program, state);
  report.register(program, state);
  finishTree(program);
  program.addHelpText(
    'after',
    `
Exit codes: 0 ok, 1 failure, 2 bad usage, 130 stopped by Ctrl-C (after saving a checkpoint).
Set RRT_DEBUG=1 to print stack traces.
Run 'rrt <command> --help' for a command's options and examples.
`,
  );
  return program;
}
