// `rrt serve-bench`: @rrt/batching's serveBench (PAPER.md section 4) on a real model: one seeded
// workload served with static, sequence-wise and continuous depth-wise batching (without and
// with early exit, one run per exit policy), plus static and sequence-wise batching of the
// full-size baseline. Without --model it builds the embedded relaxed model from the shipped
// teacher (2 loops, CYCLE, stepwise init, SVD-init LoRA), which takes seconds.

import { Option, type Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { loadDefaultModel, loadPretrained, loadTextData, writeFileAtomic, type CausalLM, type TextData, type Tokenizer } from '@rrt/layers';
import type { ExitPolicy, ExitRouter, IntRange, KvFill, KvFillMode, ServeBenchReport, StatePredictor } from '@rrt/batching';
import type { CommandContext } from '../context.js';
import { UsageError } from '../errors.js';
import { parseNonNegativeInt, parseNumber, parsePositiveInt } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { corpusPath, disposeModel, loadModel, modelDir, modelTokenizer, type LoadedModel } from './model-files.js';

/** Defaults of `rrt serve-bench`: a workload that takes about a minute on 2 cores with the embedded model. */
export const SERVE_BENCH_DEFAULTS = { requests: 64, maxBatch: 16, rank: 16, policies: 'max-prob:0.8', kvFill: ['propagate'], lora: 'merged', warmup: 32, repeats: 1, sliceMs: 0 };

/** "8-24" or "16" -> { min, max }. */
export function parseRange(value: string): IntRange {
  const m = /^(\d+)(?:-(\d+))?$/.exec(value.trim());
  const min = m ? Number(m[1]) : NaN;
  const max = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || min < 1 || max < min) throw new UsageError(`expected a token count like 16 or a range like 8-24 (min >= 1, min <= max), got "${value}"`);
  return { min, max };
}

const KV_FILLS = ['propagate', 'reuse', 'reuse-loop', 'predict'];

/** "predict,reuse-loop" -> the fills, each one of KV_FILLS, none twice. */
export function parseKvFills(list: string): string[] {
  const fills = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (fills.length === 0) throw new UsageError(`--kv-fill: expected one or more of ${KV_FILLS.join(', ')}, comma-separated`);
  for (const f of fills) if (!KV_FILLS.includes(f)) throw new UsageError(`--kv-fill: unknown fill '${f}'; expected ${KV_FILLS.join(', ')}`);
  if (new Set(fills).size !== fills.length) throw new UsageError(`--kv-fill: a fill is listed twice in '${list}'`);
  return fills;
}

/** The --policies specs, each checked now except router:<p> (built once the router exists). */
async function policySpecs(list: string): Promise<string[]> {
  const specs = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (specs.length === 0) throw new UsageError('--policies: expected at least one exit policy, e.g. max-prob:0.8,entropy:1.5,margin:2,fixed:1');
  for (const s of specs) if (!s.startsWith('router:')) await toPolicies([s]);
  return specs;
}

async function toPolicies(specs: string[], router?: ExitRouter): Promise<ExitPolicy[]> {
  const { parseExitPolicy } = await import('@rrt/batching');
  return specs.map((s) => {
    try {
      return parseExitPolicy(s, router);
    } catch (e) {
      throw new UsageError(`--policies: ${(e as Error).message}`);
    }
  });
}

/** Something fitted on served text (an exit router, a state predictor) and the flag that keeps it in a file. */
interface Fitted<T> {
  flag: string;
  file: string | undefined;
  /** What it is, for notes: 'an exit router'. */
  what: string;
  load: (json: never) => T;
  fit: (sequences: number[][]) => T;
}

/**
 * What the file holds, when it exists; else what `fit` makes from the model's continuations of
 * training prompts (`text`), saved to the file when one is given.
 */
async function loadOrFit<T extends { toJSON(): unknown }>(ctx: CommandContext, f: Fitted<T>, text: () => Promise<number[][]>): Promise<T> {
  const path = f.file === undefined ? undefined : ctx.resolvePath(f.file);
  if (path && existsSync(path)) {
    try {
      return f.load(JSON.parse(readFileSync(path, 'utf8')) as never);
    } catch (e) {
      throw new UsageError(`${f.flag} ${f.file}: ${(e as Error).message}`);
    }
  }
  const sequences = await text();
  ctx.note(`fitting ${f.what} on ${sequences.length} sequences${path ? '' : ` (pass ${f.flag} <file> to keep it)`}`);
  const made = f.fit(sequences);
  if (path) {
    writeFileAtomic(path, new TextEncoder().encode(JSON.stringify(made.toJSON())));
    ctx.note(`${f.what} saved to ${path}`);
  }
  return made;
}

/**
 * What the exit router and the state predictor learn from: prompts cut from the training split,
 * continued greedily by the model at full depth (the text it meets when serving). Made once.
 */
function servedText(ctx: CommandContext, model: CausalLM, data: TextData): () => Promise<number[][]> {
  let made: number[][] | undefined;
  return async () => {
    if (!made) {
      const { ROUTER_TRAINING_SEQUENCES, servedContinuations } = await import('@rrt/batching');
      ctx.note(`continuing ${ROUTER_TRAINING_SEQUENCES} training prompts at full depth to fit on`);
      made = servedContinuations(model, data.train.tokens, { count: ROUTER_TRAINING_SEQUENCES, seed: 1 });
    }
    return made;
  };
}

interface BenchModels {
  model: CausalLM;
  baseline: CausalLM | null;
  tokenizer: Tokenizer;
  /** What the report says the model is. */
  description: string;
  /** The model's depth-wise LoRA, when relaxed. */
  lora: { mergeDepths(): void } | null;
  dispose(): void;
}

/** The embedded relaxed model built from the shipped teacher, which is also the baseline. */
async function embeddedModels(ctx: CommandContext, rank: number, seed: number, withBaseline: boolean): Promise<BenchModels> {
  const { CYCLE, stepwise, toRecursive } = await import('@rrt/recursive');
  const { relax, residualsFrom } = await import('@rrt/lora');
  let teacher: CausalLM;
  let tokenizer: Tokenizer;
  try {
    ({ model: teacher, tokenizer } = await loadDefaultModel());
  } catch (e) {
    throw new UsageError(`no --model given and the shipped model cannot be loaded (${(e as Error).message}); pass --model <folder>`);
  }
  const { model } = toRecursive(teacher, { loops: 2, scheme: CYCLE, init: stepwise, seed });
  const handle = relax(model, { rank, init: 'svd', residuals: residualsFrom(teacher, model), seed });
  const description = `the shipped model converted to ${model.blocks.length} blocks x 2 loops (CYCLE, stepwise) and relaxed with rank-${rank} SVD-init LoRA (exits not post-trained)`;
  ctx.note(`model: ${description}`);
  return {
    model,
    baseline: withBaseline ? teacher : null,
    tokenizer,
    description,
    lora: handle,
    dispose: () => {
      handle.remove();
      model.dispose();
      teacher.dispose();
    },
  };
}

async function folderModels(ctx: CommandContext, given: string, baselineDir: string | undefined): Promise<BenchModels> {
  const dir = modelDir(ctx, given);
  const tokenizer = await modelTokenizer(ctx, dir, undefined);
  const loaded: LoadedModel = await loadModel(dir);
  const baseline = baselineDir === undefined ? null : loadPretrained(modelDir(ctx, baselineDir, '--baseline'));
  return {
    model: loaded.model,
    baseline,
    tokenizer,
    description: `${dir} (${loaded.kind})`,
    lora: loaded.adapters,
    dispose: () => {
      disposeModel(loaded);
      baseline?.dispose();
    },
  };
}

export function register(parent: Command, state: RunState): void {
  const d = SERVE_BENCH_DEFAULTS;
  const cmd = parent
    .command('serve-bench')
    .description('serving benchmark: static, sequence-wise and continuous depth-wise batching (with early exit) on one seeded workload')
    .option('--model <dir>', 'recursive or relaxed model folder (default: the embedded relaxed model built from the shipped teacher)')
    .option('--baseline <dir>', 'full-size model served with static and sequence-wise batching too (default with no --model: the shipped teacher)')
    .option('--no-baseline', 'do not serve the full-size baseline')
    .option('--rank <r>', `LoRA rank of the embedded relaxed model (default ${d.rank})`, parsePositiveInt)
    .option('--requests <n>', 'requests in the workload', parsePositiveInt, d.requests)
    .option('--max-batch <n>', 'most resident requests per call', parsePositiveInt, d.maxBatch)
    .option('--policies <list>', 'early-exit policies, one run each: max-prob:<p>, entropy:<nats>, margin:<logit gap>, router:<p>, fixed:<loops>, oracle, never', d.policies)
    .option('--router <file>', 'exit router (JSON) for router:<p> policies; trained on the model\'s continuations of training prompts from --data and saved here when the file does not exist')
    .addOption(new Option('--kv-fill <list>', `how the KV cache of exited tokens is filled: ${KV_FILLS.join(', ')} (predict: from a fitted state predictor); several, comma-separated: one early-exit run per policy and fill`).argParser(parseKvFills).default(d.kvFill, d.kvFill.join(',')))
    .option('--no-kv-fold', 'fill exited tokens\' K/V in calls of their own right after the exit, not inside the next call of each block')
    .option('--no-mix-prefill', 'give prompts calls of their own instead of letting them join the decode calls of the same block')
    .option('--no-pack-weights', 'let every call pack the weights for the matmul kernel again instead of keeping them packed while an engine serves')
    .addOption(new Option('--lora <form>', 'how a relaxed model applies its LoRA when serving: merged (one merged weight per depth position: rows at different depths still share a call, each row costs a plain product; the memory of the unrolled model) or hooks (the shared weight plus each row\'s rank-r product)').choices(['merged', 'hooks']).default(d.lora))
    .option('--state-predictor <file>', 'state predictor (JSON) for --kv-fill predict; fitted like the router and saved here when the file does not exist')
    .option('--prompt-tokens <range>', 'prompt lengths, e.g. 8-24 (default: serveBench\'s, cut to the context)', parseRange)
    .option('--new-tokens <range>', 'new tokens per request, e.g. 32-96 (default: serveBench\'s, cut to the context)', parseRange)
    .option('--temperature <t>', 'sampling temperature (0: greedy, so runs compare token by token)', parseNumber({ min: 0 }), 0)
    .option('--repeats <n>', 'serve everything n times round-robin and keep each run\'s fastest', parsePositiveInt, d.repeats)
    .option('--warmup <n>', 'requests each run serves untimed before the timed repeats', parseNonNegativeInt, d.warmup)
    .option('--slice-ms <ms>', 'the runs of a repeat serve together, each engine running calls for about this long in turn, so that a slow spell of the machine slows them all alike (0: one run after another)', parseNonNegativeInt, d.sliceMs)
    .option('--data <file>', 'text to cut prompts from, held-out split (default: the shipped King James Bible)')
    .option('--no-cache', 'do not cache token ids in .rrt-cache/')
    .option('--config <file>', 'JSON file of option values (flags override it)');
  withExamples(cmd, [
    ['rrt serve-bench', `the embedded relaxed model, ${d.requests} requests, max batch ${d.maxBatch}, shipped teacher as baseline`],
    ['rrt serve-bench --requests 256 --max-batch 32 --policies max-prob:0.2,fixed:1 --json', 'the paper-style comparison as JSON'],
    ['rrt serve-bench --model runs/kjv-rec2-exit --baseline runs/kjv --seed 1', 'your own exit-trained model'],
    ['rrt serve-bench --requests 8 --new-tokens 4-8 --no-baseline', 'a quick look'],
    ['rrt serve-bench --policies router:0.5,max-prob:0.2 --router runs/router.json', 'a learned exit router (trained once, then reused)'],
    ['rrt serve-bench --policies router:0.9 --router runs/router.json --kv-fill predict --state-predictor runs/predictor.json', 'exited tokens\' K/V from a fitted state predictor'],
  ]);
  defineAction(cmd, state, {
    config: 'options',
    run: async (ctx, opts) => {
      const seed = (opts.seed as number | undefined) ?? 0;
      const specs = await policySpecs(opts.policies as string);
      const baselineGiven = typeof opts.baseline === 'string' ? (opts.baseline as string) : undefined;
      if (opts.model === undefined && baselineGiven !== undefined) throw new UsageError('--baseline needs --model; without --model the shipped teacher is the baseline (or --no-baseline)');
      if (opts.model !== undefined && opts.rank !== undefined) throw new UsageError('--rank only sizes the embedded relaxed model; it does not apply with --model (relax a folder with rrt relax)');
      const models = opts.model === undefined
        ? await embeddedModels(ctx, (opts.rank as number | undefined) ?? d.rank, seed, opts.baseline !== false)
        : await folderModels(ctx, opts.model as string, baselineGiven);
      let report: ServeBenchReport;
      try {
        const { serveBench, formatServeBench } = await import('@rrt/batching');
        const seqLen = Math.min(128, models.model.cfg.maxPositions);
        const data = loadTextData(corpusPath(ctx, opts.data as string | undefined), models.tokenizer, { seqLen, cacheDir: opts.cache === false ? null : ctx.resolvePath('.rrt-cache') });
        models.model.eval();
        const { ExitRouter: Router, StatePredictor: Predictor, fitStatePredictor, trainExitRouter } = await import('@rrt/batching');
        const text = servedText(ctx, models.model, data);
        const backend = models.model.embed.weight.backend;
        const router = specs.some((s) => s.startsWith('router:'))
          ? await loadOrFit<ExitRouter>(ctx, {
            flag: '--router', file: opts.router as string | undefined, what: 'an exit router', load: (json) => Router.fromJSON(json, backend),
            fit: (sequences) => {
              const trained = trainExitRouter(models.model, sequences);
              ctx.note(`exit router trained: the first exit keeps the last exit's top-1 for ${(100 * trained.agreement[0]).toFixed(1)}% of training tokens`);
              return trained.router;
            },
          }, text)
          : undefined;
        const fillNames = Array.isArray(opts.kvFill) ? (opts.kvFill as string[]) : parseKvFills(String(opts.kvFill));
        const predictor = fillNames.includes('predict')
          ? await loadOrFit<StatePredictor>(ctx, {
            flag: '--state-predictor', file: opts.statePredictor as string | undefined, what: 'a state predictor', load: (json) => Predictor.fromJSON(json, backend),
            fit: (sequences) => fitStatePredictor(models.model, sequences),
          }, text)
          : null;
        const kvFill: KvFill[] = fillNames.map((f) => (f === 'predict' ? predictor! : (f as KvFillMode)));
        // Merged after fitting: the router and predictor see the same model either way (to rounding).
        const lora = models.lora && opts.lora === 'merged' ? 'merged' : models.lora ? 'hooks' : null;
        if (lora === 'merged') models.lora!.mergeDepths();
        const policies = await toPolicies(specs, router);
        ctx.note(`serving ${opts.requests as number} requests (seed ${seed}), max batch ${opts.maxBatch as number}, policies ${policies.map((p) => p.name).join(', ')}${lora ? `, LoRA ${lora === 'merged' ? 'merged per depth' : 'as hooks'}` : ''}`);
        models.baseline?.eval();
        report = serveBench(models.model, {
          requests: opts.requests as number,
          seed,
          maxBatch: opts.maxBatch as number,
          exitPolicy: policies,
          kvFill,
          foldKvFill: opts.kvFold as boolean,
          mixPrefill: opts.mixPrefill as boolean,
          packWeights: opts.packWeights as boolean,
          temperature: opts.temperature as number,
          repeats: opts.repeats as number,
          warmup: opts.warmup as number,
          sliceMs: opts.sliceMs as number,
          corpus: data.validation.tokens,
          ...(opts.promptTokens ? { promptTokens: opts.promptTokens as IntRange } : {}),
          ...(opts.newTokens ? { newTokens: opts.newTokens as IntRange } : {}),
          ...(models.baseline ? { baseline: models.baseline } : {}),
          onRun: (r) => ctx.note(`${r.name}${r.model === 'baseline' ? ' (baseline)' : ''}: ${r.tokensPerSecond.toFixed(1)} tokens/s, ${r.seconds.toFixed(1)} s`),
        });
        ctx.output(
          () => [...formatServeBench(report).split('\n')],
          () => ({ model: models.description, lora, seed, report }),
        );
      } finally {
        models.dispose();
      }
      return 0;
    },
  });
}
