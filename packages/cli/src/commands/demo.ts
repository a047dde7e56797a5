// `rrt demo`: the paper's pipeline at small scale on the shipped teacher and corpus (convert,
// uptrain with KD, relax, early-exit post-training, evaluate, serve), written up as
// <out>/index.html. `rrt demo --quick` is the older, smaller demo: train a 2-layer model for 50
// steps, printing the loss.

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { INITS } from '@rrt/recursive';
import { EXIT_INTERRUPTED, UsageError } from '../errors.js';
import { parseList, parseNonNegativeInt, parseNumber } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { addTrainOptions, runTraining } from './train.js';
import { corpusPath, modelDir } from './model-files.js';

export const DEMO_DEFAULTS = { layers: 2, hidden: 64, heads: 4, seqLen: 64, batchSize: 8, steps: 50, lr: 3e-3, evalEvery: 0, checkpointEvery: 0 };

/** Settings of the default pipeline, sized for about 15 minutes on a loaded 2-core machine. */
// exitThreshold: the shipped teacher is small and rarely confident (a max probability of 0.8 is
// almost never reached), so the demo uses the setting packages/batching/README.md measures as
// keeping quality (max-prob 0.2).
export const PIPELINE_DEFAULTS = { steps: 30, seqLen: 64, batchSize: 8, evalBatches: 8, rank: 16, lr: 1e-3, requests: 16, maxBatch: 8, exitThreshold: 0.2 };

// Architecture flags only make sense for the quick demo's from-scratch model, so they select it.
const QUICK_ONLY = ['layers', 'hidden', 'heads', 'kvHeads', 'ffn', 'family', 'modelConfig', 'tokenizer', 'vocabSize'];

function parseRanks(value: string): number[] {
  const ranks = value.split(',').map((v) => Number(v.trim()));
  if (ranks.length === 0 || ranks.some((r) => !Number.isInteger(r) || r < 1)) throw new UsageError(`--ranks: expected positive integers separated by commas, e.g. 4,16,64; got "${value}"`);
  return ranks;
}

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('demo')
    .description("the paper's pipeline at small scale on the shipped model: convert, uptrain, relax, early exit, evaluate, serve; writes an HTML report")
    .option('--out <dir>', 'report folder (default: report); with --quick, the model folder (default: a new temporary folder)')
    .option('--quick', 'instead: train a 2-layer model from scratch for 50 steps, printing the loss')
    .option('--full', 'the full small-scale replication: also every init, several ranks, zero vs SVD init, and same-size vanilla baselines (CE and KD) trained from scratch with the same budget')
    .option('--inits <list>', `with --full: init methods of the recursive model (default: ${Object.keys(INITS).join(',')})`, parseList(Object.keys(INITS)))
    .option('--ranks <list>', 'with --full: LoRA ranks with SVD init (default: 4,16,64)', parseRanks)
    .option('--teacher <dir>', 'pretrained model folder to start from (default: the shipped kjv-llama)')
    .option('--rank <r>', `LoRA rank of the relaxed model (default ${PIPELINE_DEFAULTS.rank})`, parseNonNegativeInt)
    .option('--config <file>', 'JSON file of option values (flags override it), e.g. {"full": true, "ranks": [4, 16]}')
    .option('--exit-threshold <p>', 'max-probability early-exit threshold of the serving benchmark', parseNumber({ min: 0, max: 1, exclusiveMin: true }), PIPELINE_DEFAULTS.exitThreshold);
  addTrainOptions(cmd, DEMO_DEFAULTS);
  // --steps scales the pipeline; the shared training options' help describes the quick demo.
  const stepsOpt = cmd.options.find((o) => o.long === '--steps');
  if (stepsOpt) {
    stepsOpt.description = 'uptraining steps of the recursive and relaxed models (early-exit post-training runs half); with --quick, training steps';
    stepsOpt.defaultValueDescription = `${PIPELINE_DEFAULTS.steps}; --quick: ${DEMO_DEFAULTS.steps}`;
  }
  withExamples(cmd, [
    ['rrt demo', 'the whole pipeline, report in report/index.html (about 15 minutes on 2 cores)'],
    ['rrt demo --steps 10 --out /tmp/rrt-report', 'shorter training'],
    ['rrt demo --quick', 'train a 2-layer model for 50 steps, about a minute'],
    ['rrt demo --full --out report-full', 'the full replication: all inits, ranks 4/16/64, zero vs SVD init, from-scratch baselines'],
    ['rrt demo --full --inits stepwise,average --ranks 8 --steps 10', 'a reduced full study'],
  ]);
  defineAction(cmd, state, {
    config: 'options',
    run: async (ctx, opts, command) => {
      const given = (name: string) => command.getOptionValueSource(name) === 'cli' || command.getOptionValueSource(name) === 'config';
      const fullOnly = ['inits', 'ranks'].filter(given);
      if (opts.full !== true && fullOnly.length > 0) throw new UsageError(`--${fullOnly[0]} needs --full`);
      if (opts.full === true && (opts.quick === true || QUICK_ONLY.some(given))) throw new UsageError('--full runs the pipeline on the teacher; it does not combine with --quick or the architecture flags of --quick');
      if (opts.quick === true || QUICK_ONLY.some(given)) {
        opts.out ??= mkdtempSync(join(tmpdir(), 'rrt-demo-'));
        opts.logEvery ??= 10;
        const code = await runTraining(ctx, opts, command, { progressBar: false });
        if (code === 0) ctx.note(`sample from it: rrt generate --model ${opts.out as string} "In the beginning"`);
        return code;
      }
      const pick = <T>(name: string, fallback: T): T => (given(name) ? (opts[name] as T) : fallback);
      const steps = pick('steps', PIPELINE_DEFAULTS.steps);
      const seed = (opts.seed as number | undefined) ?? 0;
      const { loadDefaultModel, loadPretrained, loadTokenizer } = await import('@rrt/layers');
      const { runPipeline } = await import('../demo/pipeline.js');
      const { FULL_DEFAULTS } = await import('../demo/full.js');
      const { summaryLines, writeReport } = await import('../demo/report.js');
      const teacherDir = opts.teacher !== undefined ? modelDir(ctx, opts.teacher as string) : undefined;
      const { model: teacher, tokenizer } = teacherDir
        ? { model: loadPretrained(teacherDir), tokenizer: await loadTokenizer(join(teacherDir, 'tokenizer.json')) }
        : await loadDefaultModel();
      // The command line that reproduces the report, rebuilt from the options that were set.
      const flags = command.options
        .filter((o) => o.attributeName() !== 'out' && given(o.attributeName()))
        .map((o) => (o.negate || o.isBoolean() ? o.long! : `${o.long!} ${String(opts[o.attributeName()])}`));
      const command_ = ['rrt demo', ...flags, ...(opts.seed !== undefined ? [`--seed ${seed}`] : [])].join(' ');
      // Ctrl-C: the running stage stops after its current step and the report covers the finished
      // stages (a second Ctrl-C quits at once).
      let stop = false;
      const stopListening = ctx.io.onInterrupt(() => {
        if (stop) return;
        stop = true;
        ctx.note('interrupt: stopping this stage and writing a report of the finished ones (Ctrl-C again quits at once)');
      });
      const result = await runPipeline({
        stopRequested: () => stop,
        teacher,
        tokenizer,
        corpus: corpusPath(ctx, opts.data as string | undefined),
        steps,
        seed,
        seqLen: Math.min(pick('seqLen', PIPELINE_DEFAULTS.seqLen), teacher.cfg.maxPositions),
        batchSize: pick('batchSize', PIPELINE_DEFAULTS.batchSize),
        evalBatches: pick('evalBatches', PIPELINE_DEFAULTS.evalBatches),
        rank: (opts.rank as number | undefined) ?? PIPELINE_DEFAULTS.rank,
        lr: pick('lr', PIPELINE_DEFAULTS.lr),
        exitThreshold: opts.exitThreshold as number,
        ...(opts.full === true
          ? { full: { inits: (opts.inits as string[] | undefined) ?? FULL_DEFAULTS.inits, ranks: (opts.ranks as number[] | undefined) ?? FULL_DEFAULTS.ranks } }
          : {}),
        bench: { requests: PIPELINE_DEFAULTS.requests, maxBatch: PIPELINE_DEFAULTS.maxBatch, newTokens: { min: 8, max: 24 } },
        cacheDir: opts.cache === false ? null : ctx.resolvePath('.rrt-cache'),
        log: (line) => ctx.note(line),
        progress: (label, total) => {
          const bar = ctx.progress({ total, label, unit: 'step' });
          return {
            update: (done, stats) => bar.update(done, stats),
            finish: () => {
              bar.finish();
              ctx.releaseProgress(bar);
            },
          };
        },
      }).finally(stopListening);
      teacher.dispose();
      const provenance = { command: command_, seed, backend: ctx.backendInfo().name, date: new Date().toISOString() };
      const out = ctx.resolvePath((opts.out as string | undefined) ?? 'report');
      const index = writeReport(result, provenance, out);
      ctx.output(
        () => [...summaryLines(result, provenance), '', `report: ${index}`],
        () => ({ provenance, report: index, ...result, scheduleSvg: undefined }),
      );
      return result.interrupted ? EXIT_INTERRUPTED : 0;
    },
  });
}
