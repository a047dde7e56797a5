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
import { parseChoice, parseList, parseNonNegativeInt, parsePositiveInt } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { addTrainOptions, runTraining } from './train.js';
import { corpusPath, modelDir } from './model-files.js';

export const DEMO_DEFAULTS = { layers: 2, hidden: 64, heads: 4, seqLen: 64, batchSize: 8, steps: 50, lr: 3e-3, evalEvery: 0, checkpointEvery: 0 };

/** Settings of the default pipeline, sized for about 10 minutes on a quiet 2-core machine. */
// exitPolicy: a learned router (fitted in the demo on 480 of the model's own continuations) that
// exits when its probability that the exit's top-1 token is the full depth's reaches 0.6 (runPipeline's
// own default too); README.md measures its quality.
export const PIPELINE_DEFAULTS = {
  steps: 200, seqLen: 64, batchSize: 8, evalBatches: 8, rank: 32, lr: 1e-3, exitSchedule: 'aggressive', exitPolicy: 'router:0.6',
  requests: 256, maxBatch: 32, repeats: 1,
};

// Architecture flags only make sense for the quick demo's from-scratch model, so they select it.
const QUICK_ONLY = ['layers', 'hidden', 'heads', 'kvHeads', 'ffn', 'family', 'modelConfig', 'tokenizer', 'vocabSize'];

function parseRanks(value: string): number[] {
  const ranks = value.split(',').map((v) => Number(v.trim()));
  if (ranks.length === 0 || ranks.some((r) => !Number.isInteger(r) || r < 1)) throw new UsageError(`--ranks: expected positive integers separated by commas, e.g. 4,16,64; got "${value}"`);
  return ranks;
}

/** Refuses a bad --exit-policy before hours of training; router:<p> is built once the demo has fitted its router. */
async function checkExitPolicy(spec: string): Promise<void> {
  const { parseExitPolicy } = await import('@rrt/batching');
  try {
    if (spec.startsWith('router:')) {
      const p = Number(spec.slice('router:'.length));
      if (!(p > 0 && p < 1)) throw new Error(`router:<p> needs p in (0, 1), got '${spec.slice('router:'.length)}'`);
    } else {
      parseExitPolicy(spec);
    }
  } catch (e) {
    throw new UsageError(`--exit-policy: ${(e as Error).message}`);
  }
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
    .option('--exit-schedule <kind>', 'exit-loss coefficients of the recursive model\'s early-exit post-training: aggressive (0.1 on loop 1) or weighted (0.5)', parseChoice(['aggressive', 'weighted']), PIPELINE_DEFAULTS.exitSchedule)
    .option('--exit-policy <spec>', 'early-exit policy of the serving benchmark: router:<p> (fitted in the demo), max-prob:<p>, margin:<gap>, entropy:<nats>, fixed:<loops>', PIPELINE_DEFAULTS.exitPolicy)
    .option('--requests <n>', 'requests in the serving benchmark', parsePositiveInt, PIPELINE_DEFAULTS.requests)
    .option('--repeats <n>', 'repeats of the serving benchmark (ratios are medians over repeats)', parsePositiveInt, PIPELINE_DEFAULTS.repeats);
  addTrainOptions(cmd, DEMO_DEFAULTS);
  // --steps scales the pipeline; the shared training options' help describes the quick demo.
  const stepsOpt = cmd.options.find((o) => o.long === '--steps');
  if (stepsOpt) {
    stepsOpt.description = 'uptraining steps of the recursive and relaxed models (early-exit post-training runs half); with --quick, training steps';
    stepsOpt.defaultValueDescription = `${PIPELINE_DEFAULTS.steps}; --quick: ${DEMO_DEFAULTS.steps}`;
  }
  withExamples(cmd, [
    ['rrt demo', 'the whole pipeline, report in report/index.html (about 10 minutes on 2 cores)'],
    ['rrt demo --steps 20 --requests 32 --out /tmp/rrt-report', 'a quick look: shorter training, a smaller benchmark'],
    ['rrt demo --repeats 3 --exit-policy max-prob:0.3', 'medians over three benchmark repeats, exits by confidence instead of the router'],
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
      await checkExitPolicy(opts.exitPolicy as string);
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
        exitSchedule: opts.exitSchedule as 'aggressive' | 'weighted',
        exitPolicy: opts.exitPolicy as string,
        ...(opts.full === true
          ? { full: { inits: (opts.inits as string[] | undefined) ?? FULL_DEFAULTS.inits, ranks: (opts.ranks as number[] | undefined) ?? FULL_DEFAULTS.ranks } }
          : {}),
        bench: { requests: opts.requests as number, maxBatch: PIPELINE_DEFAULTS.maxBatch, repeats: opts.repeats as number },
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
