// `rrt generate`: text from a model folder (a `rrt train` run, a converted recursive model, or
// a Hugging Face checkpoint with tokenizer.json), streamed to stdout as it is produced.

import type { Command } from 'commander';
import { checkVocabulary, generate } from '@rrt/layers';
import { UsageError } from '../errors.js';
import { parseNonNegativeInt, parseNumber } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatCompact } from '../ui/format.js';
import { disposeModel, loadModel, modelDir, modelTokenizer } from './model-files.js';

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('generate')
    .description('generate text from a model folder, streaming tokens as they come')
    .argument('[prompt...]', 'prompt text (or use --prompt)')
    .option('--model <dir>', 'model folder: config.json, model.safetensors, tokenizer.json (default: the shipped model)')
    .option('--tokenizer <file>', 'tokenizer.json to use instead of the folder\'s, or "byte"')
    .option('--prompt <text>', 'prompt text')
    .option('--max-new-tokens <n>', 'tokens to generate at most', parseNonNegativeInt, 64)
    .option('--temperature <t>', '0 = greedy; higher is more random', parseNumber({ min: 0 }), 0.8)
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = all)', parseNonNegativeInt, 0)
    .option('--top-p <p>', 'sample from the smallest set reaching probability p', parseNumber({ min: 0, max: 1, exclusiveMin: true }), 1)
    .option('--no-stop', 'keep going past end-of-text tokens')
    .option('--config <file>', 'JSON file of option values (flags override it)');
  withExamples(cmd, [
    ['rrt generate --model runs/kjv "In the beginning"', 'sample 64 tokens'],
    ['rrt generate --model runs/kjv --prompt "And God said" --temperature 0 --max-new-tokens 100', 'greedy'],
    ['rrt generate --model runs/kjv --seed 1 --json "Blessed are"', 'reproducible sample as JSON'],
  ]);
  defineAction(cmd, state, {
    config: 'options',
    run: async (ctx, opts, command) => {
      const words = command.processedArgs[0] as string[] | undefined;
      const prompt = (opts.prompt as string | undefined) ?? (words && words.length > 0 ? words.join(' ') : undefined);
      if (prompt === undefined || prompt.length === 0) throw new UsageError('no prompt; give it as arguments or with --prompt');
      const dir = modelDir(ctx, opts.model as string | undefined);
      const tokenizer = await modelTokenizer(ctx, dir, opts.tokenizer as string | undefined);
      const loaded = await loadModel(dir);
      const { model, kind } = loaded;
      try {
        checkVocabulary(tokenizer, model.cfg.vocabSize, dir);
      } catch (e) {
        disposeModel(loaded);
        throw e;
      }
      ctx.note(`model: ${dir} (${kind}, ${model.cfg.family}, ${model.depth} depth positions)`);
      const stopTokens = opts.stop === false ? [] : Object.values(tokenizer.specialTokens);
      // Stream only whole characters: a multi-byte character can span tokens.
      const streamed: number[] = [];
      let shown = 0;
      const stream = !ctx.json;
      if (stream) ctx.io.stdout.write(prompt);
      const start = ctx.io.now();
      const result = generate(model, tokenizer, {
        prompt,
        maxNewTokens: opts.maxNewTokens as number,
        temperature: opts.temperature as number,
        topK: opts.topK as number,
        topP: opts.topP as number,
        stopTokens,
        ...(opts.seed !== undefined ? { seed: opts.seed as number } : {}),
        onToken: (id) => {
          if (!stream || stopTokens.includes(id)) return;
          streamed.push(id);
          const text = tokenizer.decode(streamed);
          if (text.endsWith('\uFFFD')) return;
          ctx.io.stdout.write(text.slice(shown));
          shown = text.length;
        },
      });
      const seconds = (ctx.io.now() - start) / 1000;
      disposeModel(loaded);
      const text = tokenizer.decode(result.tokens.filter((t) => !stopTokens.includes(t)));
      if (stream) {
        if (text.length > shown) ctx.io.stdout.write(text.slice(shown));
        ctx.io.stdout.write('\n');
      }
      const tokensPerSec = seconds > 0 ? result.tokens.length / seconds : 0;
      ctx.note(`${result.tokens.length} tokens in ${seconds.toFixed(2)} s (${formatCompact(tokensPerSec)} tok/s), finished by ${result.finishReason}`);
      if (ctx.json) {
        ctx.emit({ model: dir, prompt, text, tokens: result.tokens, finishReason: result.finishReason, seconds, tokensPerSec });
      }
    },
  });
}
