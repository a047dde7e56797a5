// `rrt eval`: held-out loss, perplexity and bits per byte of a model folder on a text file.

import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { TokenSequences, batches, evaluateLM, loadTextData, scoredBytes, tokenizeCached, type Batch } from '@rrt/layers';
import { UsageError } from '../errors.js';
import { parseNumber, parsePositiveInt } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatInt } from '../ui/format.js';
import { corpusPath, disposeModel, loadModel, modelDir, modelTokenizer } from './model-files.js';

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('eval')
    .description('evaluate a model folder on a text file: loss, perplexity, bits per byte')
    .option('--model <dir>', 'model folder (default: the shipped model)')
    .option('--tokenizer <file>', 'tokenizer.json to use instead of the folder\'s, or "byte"')
    .option('--data <file>', 'UTF-8 text (default: the shipped King James Bible)')
    .addOption(new Option('--split <which>', 'held-out part (as rrt train splits it), training part, or all of the text').choices(['held-out', 'train', 'all']).default('held-out'))
    .option('--held-out <fraction>', 'fraction held out, as in training', parseNumber({ min: 0, max: 0.5, exclusiveMin: true }), 0.05)
    .option('--seq-len <T>', 'tokens per scored sequence (default: 128, at most the model context)', parsePositiveInt)
    .option('--batch-size <B>', 'sequences per batch', parsePositiveInt, 8)
    .option('--max-batches <n>', 'stop after n batches', parsePositiveInt)
    .option('--no-cache', 'do not cache token ids in .rrt-cache/')
    .option('--config <file>', 'JSON file of option values (flags override it)');
  withExamples(cmd, [
    ['rrt eval --model runs/kjv', 'held-out metrics on the shipped corpus'],
    ['rrt eval --model runs/kjv --data other.txt --split all --max-batches 50', 'the first 50 batches of another text'],
    ['rrt eval --model runs/kjv --json', 'as JSON'],
  ]);
  defineAction(cmd, state, {
    config: 'options',
    run: async (ctx, opts) => {
      const dir = modelDir(ctx, opts.model as string | undefined);
      const tokenizer = await modelTokenizer(ctx, dir, opts.tokenizer as string | undefined);
      const loaded = await loadModel(dir);
      const { model, kind } = loaded;
      const seqLen = (opts.seqLen as number | undefined) ?? Math.min(128, model.cfg.maxPositions);
      if (seqLen > model.cfg.maxPositions) throw new UsageError(`--seq-len ${seqLen} is longer than the model's context (${model.cfg.maxPositions})`);
      if (tokenizer.vocabSize > model.cfg.vocabSize) {
        throw new UsageError(`the tokenizer has ${tokenizer.vocabSize} tokens but the model only ${model.cfg.vocabSize}; pass the model's tokenizer`);
      }
      const dataPath = corpusPath(ctx, opts.data as string | undefined);
      const cacheDir = opts.cache === false ? null : ctx.resolvePath('.rrt-cache');
      let seqs: TokenSequences;
      if (opts.split === 'all') {
        seqs = new TokenSequences(tokenizeCached(readFileSync(dataPath, 'utf8'), tokenizer, { cacheDir }), seqLen, dataPath);
      } else {
        const data = loadTextData(dataPath, tokenizer, { seqLen, heldOutFraction: opts.heldOut as number, cacheDir });
        seqs = opts.split === 'train' ? data.train : data.validation;
      }
      const batchSize = opts.batchSize as number;
      const maxBatches = opts.maxBatches as number | undefined;
      const total = Math.ceil(seqs.count / batchSize);
      const used = Math.min(total, maxBatches ?? total);
      // Score exactly the sequences of the batches that run, so bits per byte match them.
      const n = Math.min(seqs.count, used * batchSize);
      const scored = n === seqs.count ? seqs : new TokenSequences(seqs.tokens.subarray(0, n * seqLen + 1), seqLen, seqs.what);
      const bytes = scoredBytes(scored, tokenizer);
      ctx.note(`model: ${dir} (${kind}); ${formatInt(scored.scoredTokens)} tokens of ${dataPath} (${opts.split as string}) in ${used} batches of ${batchSize} x ${seqLen}`);
      const bar = ctx.progress({ total: used, unit: 'batch', label: 'eval' });
      let done = 0;
      function* counted(): Generator<Batch> {
        for (const b of batches(scored, { batchSize, shuffle: false, dropLast: false })) {
          yield b;
          done++;
          bar.update(done, { tokens: done * batchSize * seqLen });
        }
      }
      const result = evaluateLM(model, counted(), { bytes });
      bar.finish();
      ctx.releaseProgress(bar);
      disposeModel(loaded);
      const report = { model: dir, data: dataPath, split: opts.split, seqLen, batches: used, ...result };
      ctx.output(
        () => [
          `loss ${result.loss.toFixed(4)} nats/token, perplexity ${result.perplexity.toFixed(3)}, ${result.bitsPerByte?.toFixed(4) ?? 'n/a'} bits/byte over ${formatInt(result.tokens)} tokens`,
        ],
        () => report,
      );
    },
  });
}
