// `rrt relax`: give a recursive model depth-wise LoRA (PAPER.md section 2), initialised from a
// truncated SVD of W_original - W_shared at each depth position (or zero), and save it as a
// model folder: the recursive checkpoint plus a PEFT adapter.

import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { loadPretrained } from '@rrt/layers';
import { UsageError } from '../errors.js';
import { parseList, parseNonNegativeInt, parseNumber } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatInt } from '../ui/format.js';
import { ADAPTER_CONFIG, modelDir } from './model-files.js';

const TARGETS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('relax')
    .description('add depth-wise LoRA to a recursive model (SVD init from the original model, or zero init)')
    .requiredOption('--model <dir>', 'recursive model folder (from rrt convert)')
    .option('--original <dir>', 'the pretrained model it was converted from (needed by --init svd)')
    .requiredOption('--out <dir>', 'where to write the relaxed model (recursive checkpoint + PEFT adapter)')
    .requiredOption('--rank <r>', 'LoRA rank per depth position', parseNonNegativeInt)
    .addOption(new Option('--init <how>', 'svd: start as close to the original as rank r allows; zero: B = 0').choices(['svd', 'zero']).default('svd'))
    .option('--attn-rank <r>', 'rank of q, k, v, o (default: --rank)', parseNonNegativeInt)
    .option('--mlp-rank <r>', 'rank of gate, up, down (default: --rank)', parseNonNegativeInt)
    .option('--targets <list>', `projections that get LoRA, comma-separated (default: all of ${TARGETS.join(',')})`, parseList(TARGETS))
    .option('--alpha <a>', 'LoRA scaling alpha / r (default: alpha = r)', parseNumber({ min: 0, exclusiveMin: true }))
    .option('--config <file>', 'JSON file of option values (flags override it)');
  withExamples(cmd, [
    ['rrt relax --model runs/kjv-rec2 --original runs/kjv --out runs/kjv-rr64 --rank 64', 'SVD-initialised LoRA, r = 64'],
    ['rrt relax --model runs/kjv-rec2 --out runs/kjv-zero --rank 8 --init zero', 'zero init: starts as the recursive model'],
  ]);
  defineAction(cmd, state, {
    config: 'options',
    run: async (ctx, opts) => {
      const { RecursiveLM, loadRecursive, saveRecursive, RECURSIVE_JSON } = await import('@rrt/recursive');
      const { relax, residualsFrom, saveAdapters } = await import('@rrt/lora');
      const dir = modelDir(ctx, opts.model as string);
      if (!existsSync(join(dir, RECURSIVE_JSON))) throw new UsageError(`--model ${opts.model as string} is not a recursive model (no ${RECURSIVE_JSON}); run rrt convert first`);
      if (existsSync(join(dir, ADAPTER_CONFIG))) throw new UsageError(`--model ${opts.model as string} is already relaxed (it has ${ADAPTER_CONFIG}); relax its recursive base instead`);
      const init = opts.init as 'svd' | 'zero';
      if (init === 'svd' && opts.original === undefined) throw new UsageError('--init svd needs --original <dir>, the model the recursive one was converted from');
      const model = loadRecursive(dir);
      const original = opts.original !== undefined ? loadPretrained(modelDir(ctx, opts.original as string, '--original')) : null;
      if (original && original.depth !== model.depth) {
        throw new UsageError(`--original has ${original.depth} layers but the recursive model runs ${model.depth} depth positions; pass the model it was converted from`);
      }
      const attnRank = opts.attnRank as number | undefined;
      const mlpRank = opts.mlpRank as number | undefined;
      const handle = relax(model, {
        rank: opts.rank as number,
        init,
        ...(opts.targets ? { targets: opts.targets as (typeof TARGETS)[number][] } : {}),
        ...(attnRank !== undefined || mlpRank !== undefined ? { rankPattern: { attention: attnRank, mlp: mlpRank } } : {}),
        ...(opts.alpha !== undefined ? { alpha: opts.alpha as number } : {}),
        ...(original ? { residuals: residualsFrom(original, model) } : {}),
        seed: (opts.seed as number | undefined) ?? 0,
      });
      if (handle.modules.length === 0) throw new UsageError('rank 0 everywhere: there is no LoRA to add');
      const out = ctx.resolvePath(opts.out as string);
      if (!(model instanceof RecursiveLM)) throw new Error('relax: expected a recursive model');
      saveRecursive(model, out);
      saveAdapters(handle, out, { baseModel: out });
      const tokenizer = [dir, ...(opts.original ? [ctx.resolvePath(opts.original as string)] : [])].map((d) => join(d, 'tokenizer.json')).find((p) => existsSync(p));
      if (tokenizer && tokenizer !== join(out, 'tokenizer.json')) copyFileSync(tokenizer, join(out, 'tokenizer.json'));
      const counts = handle.counts;
      const unique = model.numParameters();
      const report = {
        model: dir,
        out,
        init,
        rank: opts.rank,
        targets: [...handle.info.targets],
        modules: counts.modules,
        loraParameters: counts.lora,
        recursiveParameters: unique,
        totalParameters: unique + counts.lora,
        ...(original ? { originalParameters: original.numParameters() } : {}),
      };
      handle.remove();
      model.dispose();
      original?.dispose();
      ctx.output(
        () => [
          `relaxed ${dir}: ${report.modules} LoRA modules (rank ${String(report.rank)}, ${init} init) on ${report.targets.join(', ')}`,
          `parameters: recursive ${formatInt(unique)} + LoRA ${formatInt(counts.lora)} = ${formatInt(report.totalParameters)}${report.originalParameters ? ` (original ${formatInt(report.originalParameters)})` : ''}`,
          `saved: ${out} (recursive checkpoint + ${ADAPTER_CONFIG})`,
        ],
        () => report,
      );
    },
  });
}
