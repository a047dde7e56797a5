// `rrt convert`: turn a pretrained model folder into a Recursive Transformer (PAPER.md section
// 1): K = L / B shared blocks looped B times, initialised from the source layers, saved as a
// compact recursive checkpoint (or unrolled as a plain Hugging Face one).

import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { loadPretrained } from '@rrt/layers';
import { UsageError } from '../errors.js';
import { parsePositiveInt } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatInt } from '../ui/format.js';
import { SCHEME_NAMES } from './params.js';
import { modelDir } from './model-files.js';

const INIT_NAMES = ['stepwise', 'stepwise-fixed-start', 'average', 'lower', 'upper', 'random'] as const;

/** "all", "evenly-spaced" or ascending layer indices "0,2,4". */
function parseSourceLayers(value: string): 'all' | 'evenly-spaced' | number[] {
  if (value === 'all' || value === 'evenly-spaced') return value;
  const parts = value.split(',').map((s) => Number(s.trim()));
  if (parts.length === 0 || parts.some((n) => !Number.isSafeInteger(n) || n < 0)) {
    throw new UsageError(`--source-layers: expected "all", "evenly-spaced" or layer indices like 0,2,4, got '${value}'`);
  }
  return parts;
}

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('convert')
    .description('convert a pretrained model folder into a Recursive Transformer (shared layers looped B times)')
    .requiredOption('--model <dir>', 'pretrained model folder (config.json, model.safetensors)')
    .requiredOption('--out <dir>', 'where to write the recursive model')
    .requiredOption('--loops <B>', 'loops: K = L / B shared layers', parsePositiveInt)
    .addOption(new Option('--scheme <name>', 'sharing scheme').choices(SCHEME_NAMES).default('cycle'))
    .addOption(new Option('--init <method>', 'how shared layers are initialised from the source layers').choices(INIT_NAMES).default('stepwise'))
    .addOption(new Option('--norms <how>', 'norm weights of tied layers').choices(['follow', 'average', 'reset']).default('follow'))
    .option('--source-layers <which>', '"all", "evenly-spaced" (when L is not divisible by B) or indices like 0,2,4', 'all')
    .option('--unrolled', 'write a plain Hugging Face checkpoint (every depth position under its own layer index) instead of the compact one')
    .option('--config <file>', 'JSON file of option values (flags override it)');
  withExamples(cmd, [
    ['rrt convert --model runs/kjv --out runs/kjv-rec2 --loops 2', 'CYCLE, stepwise init: half the block parameters'],
    ['rrt convert --model gemma-2b --out gemma-rec --loops 2 --init average', 'average init, the base for LoRA relaxation'],
    ['rrt convert --model tinyllama --out tl-rec3 --loops 3 --source-layers evenly-spaced', '22 layers in 3 loops: keeps 21'],
  ]);
  defineAction(cmd, state, {
    config: 'options',
    run: async (ctx, opts) => {
      const { INITS, SCHEMES, exportUnrolled, saveRecursive, toRecursive } = await import('@rrt/recursive');
      const src = modelDir(ctx, opts.model as string, '--model', 'pretrained');
      const schemeName = (opts.scheme as string).toUpperCase().replace(/-/g, '_');
      const scheme = SCHEMES[schemeName];
      const init = INITS[opts.init as string];
      if (!scheme || !init) throw new UsageError(`unknown --scheme or --init; schemes: ${Object.keys(SCHEMES).join(', ')}; inits: ${Object.keys(INITS).join(', ')}`);
      const loops = opts.loops as number;
      const sourceLayers = parseSourceLayers(opts.sourceLayers as string);
      const pretrained = loadPretrained(src);
      const before = pretrained.numParameters();
      let conversion;
      try {
        conversion = toRecursive(pretrained, {
          loops,
          scheme,
          init,
          norms: opts.norms as 'follow' | 'average' | 'reset',
          sourceLayers,
          seed: (opts.seed as number | undefined) ?? 0,
        });
      } catch (err) {
        pretrained.dispose();
        // A loop count the model cannot be split into is a usage problem, and the message says what fits.
        if (err instanceof Error && /loops|divisible|cannot be split/.test(err.message)) throw new UsageError(`--loops ${loops}: ${err.message}`);
        throw err;
      }
      const model = conversion.model;
      const out = ctx.resolvePath(opts.out as string);
      if (opts.unrolled) exportUnrolled(model, out);
      else saveRecursive(model, out);
      if (existsSync(join(src, 'tokenizer.json'))) copyFileSync(join(src, 'tokenizer.json'), join(out, 'tokenizer.json'));
      const counts = model.parameterCounts();
      const report = {
        source: src,
        out,
        format: opts.unrolled ? 'unrolled' : 'recursive',
        scheme: scheme.name,
        init: init.name,
        norms: opts.norms,
        loops,
        depthMap: [...model.depthMap],
        sourceLayers: [...model.recursion.sourceLayers],
        sharedLayers: model.sharedLayers,
        depthPositions: model.depth,
        parameters: { source: before, unique: counts.unique, unrolled: counts.total },
      };
      pretrained.dispose();
      model.dispose();
      ctx.output(
        () => [
          `converted ${src}: ${report.depthPositions} depth positions run ${report.sharedLayers} shared layers (${report.scheme}, ${report.loops} loops, ${report.init} init)`,
          `depth map: ${report.depthMap.join(' ')}`,
          `parameters: ${formatInt(before)} -> ${formatInt(counts.unique)} (${((100 * counts.unique) / before).toFixed(1)}%)`,
          `saved: ${out} (${report.format})`,
        ],
        () => report,
      );
    },
  });
}
