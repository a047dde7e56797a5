// `rrt uptrain`: continued training of a converted (recursive or relaxed) model with knowledge
// distillation from the original model (PAPER.md section 1). LoRA adapters, when the folder has
// them, train together with the shared weights, as in the paper.

import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { BatchLoader, Trainer, loadTextData, type Batch } from '@rrt/layers';
import { EXIT_INTERRUPTED, UsageError } from '../errors.js';
import { parseNumber } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatCompact, formatDuration } from '../ui/format.js';
import { corpusPath, disposeModel, loadModel, loadTeacher, modelDir, modelTokenizer, saveLoadedModel, trainableOf, writeJsonFile } from './model-files.js';
import { TrainingMonitor, runReport } from './train-loop.js';
import { type TrainOptions, addRunOptions, heldOutMetrics, metricsLine, restoreRun, runTrainerOptions, savedOptions } from './train.js';

export const UPTRAIN_OPTIONS_FILE = 'rrt-uptrain.json';

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('uptrain')
    .description('uptrain a converted model with knowledge distillation from the original (LoRA adapters train too)')
    .option('--model <dir>', 'recursive or relaxed model folder (rrt convert / rrt relax); required unless --resume')
    .option('--teacher <dir>', 'the original model to distil from (not needed with --loss ce)')
    .requiredOption('--out <dir>', 'where to write the uptrained model and checkpoints')
    .addOption(new Option('--loss <kind>', 'kd: KL to the teacher; ce: next-token loss only; mix: (1 - alpha) CE + alpha KD').choices(['kd', 'ce', 'mix']).default('kd'))
    .addOption(new Option('--kd-direction <dir>', 'forward = KL(teacher || student), reverse = KL(student || teacher)').choices(['forward', 'reverse']).default('forward'))
    .option('--temperature <t>', 'softmax temperature of the KD term', parseNumber({ min: 0, exclusiveMin: true }), 1)
    .option('--alpha <a>', 'weight of KD in --loss mix', parseNumber({ min: 0, max: 1 }), 0.5)
    .option('--resume', 'continue the run in --out from its latest checkpoint (its saved options apply; flags override)')
    .option('--config <file>', 'JSON file of option values (flags override it)');
  addRunOptions(cmd, { seqLen: 128, batchSize: 16, steps: 500, lr: 3e-4, evalEvery: 100, checkpointEvery: 100 });
  withExamples(cmd, [
    ['rrt uptrain --model runs/kjv-rec2 --teacher runs/kjv --out runs/kjv-rec2-up --steps 500', 'KD from the full model'],
    ['rrt uptrain --model runs/kjv-rr64 --teacher runs/kjv --out runs/kjv-rr64-up --loss mix --alpha 0.3', 'relaxed model, CE + KD'],
    ['rrt uptrain --out runs/kjv-rec2-up --resume', 'continue after Ctrl-C'],
  ]);
  defineAction(cmd, state, {
    config: 'options',
    run: async (ctx, opts, command) => {
      const out = ctx.resolvePath(opts.out as string);
      const ckptDir = join(out, 'checkpoints');
      const optionsPath = join(out, UPTRAIN_OPTIONS_FILE);
      const restoredSeed = restoreRun(command, opts, optionsPath, ckptDir, 'uptrain');
      const seed = restoredSeed ?? (opts.seed as number | undefined) ?? 0;
      const { uptrainLoss } = await import('@rrt/recursive');
      if (opts.model === undefined) throw new UsageError('--model <dir> is required (the recursive or relaxed model to uptrain)');
      const dir = modelDir(ctx, opts.model as string);
      const loss = opts.loss as 'kd' | 'ce' | 'mix';
      if (loss !== 'ce' && opts.teacher === undefined) throw new UsageError(`--loss ${loss} needs --teacher <dir>, the original model`);
      const tokenizer = await modelTokenizer(ctx, dir, undefined);
      const loaded = await loadModel(dir);
      const { model } = loaded;
      const teacher = loss === 'ce' ? null : loadTeacher(ctx, opts.teacher as string, model);
      const seqLen = opts.seqLen as number;
      if (seqLen > model.cfg.maxPositions) throw new UsageError(`--seq-len ${seqLen} is longer than the model's context (${model.cfg.maxPositions})`);
      const dataPath = corpusPath(ctx, opts.data as string | undefined);
      const data = loadTextData(dataPath, tokenizer, { seqLen, heldOutFraction: opts.heldOut as number, vocabSize: model.cfg.vocabSize, cacheDir: opts.cache === false ? null : ctx.resolvePath('.rrt-cache') });
      ctx.note(`student: ${dir} (${loaded.kind}); teacher: ${teacher ? modelDir(ctx, opts.teacher as string, '--teacher') : 'none (--loss ce)'}; loss ${loss}`);
      if (restoredSeed === undefined) {
        writeJsonFile(optionsPath, {
          format: 'rrt-uptrain-options',
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
      const steps = opts.steps as number;
      const trainable = trainableOf(loaded);
      const monitor = new TrainingMonitor(ctx, {
        steps,
        tokensPerStep: batchSize * seqLen * (opts.accumulation as number),
        label: 'uptrain',
        logEvery: opts.logEvery as number | undefined,
      });
      const trainer = new Trainer<Batch>({
        ...runTrainerOptions(opts as unknown as TrainOptions, ckptDir),
        model: trainable,
        loss: uptrainLoss(model, teacher, { loss, kdDirection: opts.kdDirection as 'forward' | 'reverse', temperature: opts.temperature as number, alpha: opts.alpha as number }),
        data: new BatchLoader(data.train, { batchSize, seed }),
        evaluate: (step) => {
          const m = heldOutMetrics(model, data, tokenizer, batchSize, opts.evalBatches as number);
          ctx.note(metricsLine(step, m));
          return m;
        },
        onStep: monitor.onStep,
      });
      const run = await monitor.run(trainer, ckptDir, restoredSeed !== undefined);
      const { startStep, interrupted, checkpoint } = run;

      const adaptersSaved = await saveLoadedModel(loaded, dir, out);
      const report = {
        model: dir,
        out,
        kind: loaded.kind,
        loss,
        seed,
        ...runReport(run, steps),
        adapters: adaptersSaved,
      };
      teacher?.dispose();
      disposeModel(loaded);
      const lastEval = report.evals[report.evals.length - 1];
      ctx.output(
        () => [
          interrupted
            ? `interrupted at step ${report.steps} of ${steps}; continue with: rrt uptrain --out ${opts.out as string} --resume`
            : `uptrained steps ${startStep + 1}-${report.steps} in ${formatDuration(report.elapsedMs / 1000)} (${formatCompact(report.tokensPerSec)} tok/s); last loss ${report.lastLoss?.toFixed(4) ?? 'n/a'}`,
          ...(lastEval ? [`held-out ${metricsLine(lastEval.step, lastEval.metrics).replace(/^eval /, '')}`] : []),
          `saved: ${out}${checkpoint ? `; checkpoint ${checkpoint}` : ''}`,
        ],
        () => report,
      );
      return interrupted ? EXIT_INTERRUPTED : 0;
    },
  });
}
