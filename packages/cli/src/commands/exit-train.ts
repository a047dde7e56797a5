// `rrt exit-train`: early-exit post-training of a recursive or relaxed model (PAPER.md section
// 3): every loop's exit is trained with cross-entropy, weighted by a schedule ('aggressive' by
// default: 0.1 on the earlier exits, 1 on the last), optionally mixed with KD from the original
// model (the paper's best recipe). Nothing is frozen; LoRA adapters train too. Held-out loss of
// each exit is measured before and after.

import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { BatchLoader, Trainer, batches, loadTextData, TokenSequences, type Batch, type CausalLM, type TextData } from '@rrt/layers';
import { noGrad, tidy } from '@rrt/tensor';
import { EXIT_INTERRUPTED, UsageError } from '../errors.js';
import { parseNumber } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatCompact, formatDuration } from '../ui/format.js';
import { corpusPath, disposeModel, loadModel, loadTeacher, modelDir, modelTokenizer, saveLoadedModel, trainableOf, writeJsonFile } from './model-files.js';
import { TrainingMonitor, runReport } from './train-loop.js';
import { type TrainOptions, addRunOptions, restoreRun, runTrainerOptions, savedOptions } from './train.js';

export const EXIT_TRAIN_OPTIONS_FILE = 'rrt-exit-train.json';

/** The exit-loss schedules `--exit-schedule` accepts (see @rrt/batching's exitLossWeights). */
export const EXIT_SCHEDULES = ['aggressive', 'weighted', 'final'] as const;

/**
 * Mean held-out loss of every exit (cross-entropy, no KD) over the first `maxBatches` batches of
 * `batchSize` sequences: one number per loop, exit 1 first.
 */
export async function heldOutExitLosses(model: CausalLM, data: TextData, batchSize: number, maxBatches: number): Promise<number[]> {
  const { exitLosses } = await import('@rrt/batching');
  const val = data.validation;
  const n = Math.min(val.count, batchSize * maxBatches);
  const seqs = n === val.count ? val : new TokenSequences(val.tokens.subarray(0, n * val.seqLen + 1), val.seqLen, val.what);
  const was = model.training;
  model.train(false);
  let sums: number[] = [];
  let weight = 0;
  noGrad(() => {
    for (const b of batches(seqs, { batchSize, shuffle: false, dropLast: false })) {
      const scored = Array.from(b.targets).filter((t) => t >= 0).length;
      const losses = tidy(() => exitLosses(model, b, { schedule: 'final' }).perExit.map((t) => t.item()));
      if (sums.length === 0) sums = new Array<number>(losses.length).fill(0);
      losses.forEach((l, i) => (sums[i]! += l * scored));
      weight += scored;
    }
  });
  model.train(was);
  return sums.map((s) => s / Math.max(1, weight));
}

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('exit-train')
    .description('early-exit post-training: train every loop\'s exit (weighted CE across loops, optional KD from the original model)')
    .option('--model <dir>', 'recursive or relaxed model folder (rrt convert / relax / uptrain); required unless --resume')
    .option('--teacher <dir>', 'the original model: adds KD to every exit (the paper\'s best recipe with --exit-schedule aggressive)')
    .requiredOption('--out <dir>', 'where to write the post-trained model and checkpoints')
    .addOption(new Option('--exit-schedule <kind>', 'weights of the exits: aggressive = 0.1 on earlier exits and 1 on the last; weighted = (b+1)/loops; final = last exit only').choices([...EXIT_SCHEDULES]).default('aggressive'))
    .option('--kd-weight <w>', 'with --teacher: each exit\'s loss is (1 - w) CE + w KD', parseNumber({ min: 0, max: 1 }), 0.5)
    .option('--temperature <t>', 'softmax temperature of the KD term', parseNumber({ min: 0, exclusiveMin: true }), 1)
    .option('--resume', 'continue the run in --out from its latest checkpoint (its saved options apply; flags override)')
    .option('--config <file>', 'JSON file of option values (flags override it)');
  addRunOptions(cmd, { seqLen: 128, batchSize: 8, steps: 200, lr: 1e-3, evalEvery: 0, checkpointEvery: 100 });
  withExamples(cmd, [
    ['rrt exit-train --model runs/kjv-rec2-up --teacher runs/kjv --out runs/kjv-rec2-exit --steps 200', 'aggressive CE + KD, the paper\'s best recipe'],
    ['rrt exit-train --model runs/kjv-rr64 --out runs/kjv-rr64-exit --exit-schedule weighted', 'weighted CE only, no teacher'],
    ['rrt exit-train --out runs/kjv-rec2-exit --resume', 'continue after Ctrl-C'],
    ['rrt exit-train --config exit.json --out runs/e --json', 'options from a file, summary as JSON'],
  ]);
  defineAction(cmd, state, {
    config: 'options',
    run: async (ctx, opts, command) => {
      const out = ctx.resolvePath(opts.out as string);
      const ckptDir = join(out, 'checkpoints');
      const optionsPath = join(out, EXIT_TRAIN_OPTIONS_FILE);
      const restoredSeed = restoreRun(command, opts, optionsPath, ckptDir, 'exit-train');
      const seed = restoredSeed ?? (opts.seed as number | undefined) ?? 0;
      if (opts.model === undefined) throw new UsageError('--model <dir> is required (the recursive or relaxed model whose exits to train)');
      const dir = modelDir(ctx, opts.model as string);
      const { exitTrainingLoss, loopLayout } = await import('@rrt/batching');
      const tokenizer = await modelTokenizer(ctx, dir, undefined);
      const loaded = await loadModel(dir);
      const { model } = loaded;
      const loops = loopLayout(model).loops;
      if (loops < 2) {
        disposeModel(loaded);
        throw new UsageError(`--model ${opts.model as string} has one loop, so it has no early exit to train; convert it first (rrt convert --loops 2)`);
      }
      const teacher = opts.teacher === undefined ? null : loadTeacher(ctx, opts.teacher as string, model);
      const seqLen = opts.seqLen as number;
      if (seqLen > model.cfg.maxPositions) throw new UsageError(`--seq-len ${seqLen} is longer than the model's context (${model.cfg.maxPositions})`);
      const dataPath = corpusPath(ctx, opts.data as string | undefined);
      const data = loadTextData(dataPath, tokenizer, { seqLen, heldOutFraction: opts.heldOut as number, vocabSize: model.cfg.vocabSize, cacheDir: opts.cache === false ? null : ctx.resolvePath('.rrt-cache') });
      const schedule = opts.exitSchedule as (typeof EXIT_SCHEDULES)[number];
      const kdWeight = opts.kdWeight as number;
      ctx.note(`model: ${dir} (${loaded.kind}, ${loops} loops); teacher: ${teacher ? modelDir(ctx, opts.teacher as string, '--teacher') : 'none (CE only)'}; exit schedule ${schedule}`);
      if (restoredSeed === undefined) {
        writeJsonFile(optionsPath, {
          format: 'rrt-exit-train-options',
          version: 1,
          seed,
          options: savedOptions(opts, {
            data: dataPath,
            model: dir,
            ...(opts.teacher !== undefined ? { teacher: modelDir(ctx, opts.teacher as string, '--teacher') } : {}),
          }),
        });
      }

      const batchSize = opts.batchSize as number;
      const evalBatches = opts.evalBatches as number;
      const steps = opts.steps as number;
      const before = await heldOutExitLosses(model, data, batchSize, evalBatches);
      ctx.note(`held-out loss per exit before: ${before.map((l) => l.toFixed(4)).join(' / ')}`);
      const trainable = trainableOf(loaded);
      const monitor = new TrainingMonitor(ctx, {
        steps,
        tokensPerStep: batchSize * seqLen * (opts.accumulation as number),
        label: 'exit-train',
        logEvery: opts.logEvery as number | undefined,
      });
      const lossOpts = { schedule, kdWeight, temperature: opts.temperature as number, ...(teacher ? { teacher } : {}) };
      const trainer = new Trainer<Batch>({
        ...runTrainerOptions(opts as unknown as TrainOptions, ckptDir),
        model: trainable,
        loss: (b) => exitTrainingLoss(model, b, lossOpts),
        data: new BatchLoader(data.train, { batchSize, seed }),
        onStep: monitor.onStep,
      });
      const run = await monitor.run(trainer, ckptDir, restoredSeed !== undefined);
      const { startStep, interrupted, checkpoint } = run;
      const after = await heldOutExitLosses(model, data, batchSize, evalBatches);

      const adaptersSaved = await saveLoadedModel(loaded, dir, out);
      const report = {
        model: dir,
        out,
        kind: loaded.kind,
        loops,
        exitSchedule: schedule,
        kd: teacher !== null,
        kdWeight: teacher ? kdWeight : 0,
        seed,
        ...runReport(run, steps),
        /** Held-out CE of each exit (exit 1 first), before and after this run. */
        heldOutExitLoss: { before, after, batches: evalBatches, batchSize },
        adapters: adaptersSaved,
      };
      teacher?.dispose();
      disposeModel(loaded);
      ctx.output(
        () => [
          interrupted
            ? `interrupted at step ${report.steps} of ${steps}; continue with: rrt exit-train --out ${opts.out as string} --resume`
            : `post-trained exits, steps ${startStep + 1}-${report.steps} in ${formatDuration(report.elapsedMs / 1000)} (${formatCompact(report.tokensPerSec)} tok/s); last loss ${report.lastLoss?.toFixed(4) ?? 'n/a'}`,
          `held-out loss per exit: ${before.map((l, i) => `exit ${i + 1} ${l.toFixed(4)} -> ${after[i]!.toFixed(4)}`).join(', ')}`,
          `saved: ${out}${checkpoint ? `; checkpoint ${checkpoint}` : ''}`,
        ],
        () => report,
      );
      return interrupted ? EXIT_INTERRUPTED : 0;
    },
  });
}
