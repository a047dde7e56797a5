// `rrt params`: parameter counts of a model, its Recursive Transformer and its relaxed (LoRA)
// version, from a config.json alone (no weights), as in the paper's parameter table.

import { dirname, isAbsolute, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { parseHfConfig } from '@rrt/layers';
import { isPlainObject, readJsonFile } from '../config.js';
import { UsageError } from '../errors.js';
import { parseList, parseNonNegativeInt, parsePositiveInt } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import type { ModelSource } from './params-report.js';

/** Command-line names of the library's schemes (CYCLE -> cycle); checked against @rrt/recursive when the command runs. */
export const SCHEME_NAMES = ['cycle', 'sequence', 'middle-cycle', 'middle-sequence'] as const;
const TARGETS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;

/**
 * A params --config file is either a model's config.json, or an object with "model" (a
 * config.json object, or a path relative to the file) and option values ("loops", "rank", ...).
 */
function splitParamsConfig(json: unknown, source: string, path: string): { options: Record<string, unknown>; data: ModelSource } {
  if (!isPlainObject(json)) throw new UsageError(`${source}: expected a JSON object (a model's config.json, or {"model": ..., "loops": ...})`);
  if (!('model' in json)) return { options: {}, data: { config: parseHfConfig(json, source), source } };
  const { model, ...options } = json;
  if (typeof model === 'string') {
    const modelPath = isAbsolute(model) ? model : resolve(dirname(path), model);
    return { options, data: { config: parseHfConfig(readJsonFile(modelPath, model), model), source: model } };
  }
  return { options, data: { config: parseHfConfig(model, `${source} "model"`), source } };
}

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('params')
    .description("count parameters of a model, its recursive version and its relaxed (LoRA) version from a config.json (the paper's table)")
    .requiredOption('--config <file>', 'a model config.json, or {"model": <config or path>, "loops": ..., "rank": ...}')
    .option('--loops <B>', 'loops of the recursive model (1 = the full model)', parsePositiveInt, 1)
    .option('--rank <r>', 'LoRA rank per depth position (0 = plain recursive)', parseNonNegativeInt, 0)
    .addOption(new Option('--scheme <name>', 'sharing scheme').choices(SCHEME_NAMES).default('cycle'))
    .option('--attn-rank <r>', 'LoRA rank of q, k, v, o (default: --rank)', parseNonNegativeInt)
    .option('--mlp-rank <r>', 'LoRA rank of gate, up, down (default: --rank)', parseNonNegativeInt)
    .option('--targets <list>', `projections that get LoRA, comma-separated (default: all of ${TARGETS.join(',')})`, parseList(TARGETS));
  // Paths as seen from the repository root (`pnpm rrt ...` runs there); the configs ship in examples/configs.
  withExamples(cmd, [
    ['rrt params --config examples/configs/gemma-2b.config.json', 'the full Gemma 2B: 1.98 B non-embedding'],
    ['rrt params --config examples/configs/gemma-2b.config.json --loops 2', 'recursive Gemma 1B: 0.99 B non-embedding'],
    ['rrt params --config examples/configs/gemma-2b.config.json --loops 2 --rank 64', 'relaxed, LoRA r=64: 1.07 B'],
    ['rrt params --config examples/configs/tinyllama-1.1b.config.json --loops 2 --rank 512 --json', 'exact counts as JSON'],
    ['rrt params --config examples/configs/pythia-1b.config.json --loops 2', 'recursive Pythia 1B'],
    ['rrt params --config packages/layers/models/kjv-llama/config.json --loops 2', 'the shipped 6-layer model (counts in M)'],
  ]);
  defineAction<ModelSource>(cmd, state, {
    config: splitParamsConfig,
    run: async (ctx, opts, _cmd, model) => {
      if (!model) throw new UsageError('--config: a model config.json is required');
      const { paramsReport, paramsLines } = await import('./params-report.js');
      const report = paramsReport(model, {
        loops: opts.loops as number,
        scheme: opts.scheme as string,
        rank: opts.rank as number,
        attnRank: opts.attnRank as number | undefined,
        mlpRank: opts.mlpRank as number | undefined,
        targets: opts.targets as (typeof TARGETS)[number][] | undefined,
      });
      ctx.output(
        () => paramsLines(report),
        () => ({ ...report }),
      );
    },
  });
}
