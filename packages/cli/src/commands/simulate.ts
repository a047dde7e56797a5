// `rrt simulate --paper`: the serving simulator on the paper's section 4 setting (Gemma on one
// A100, prefix 512, 2048 decoded tokens): vanilla static / sequence-wise batching against
// continuous depth-wise batching with early exits, next to the paper's throughputs.

import { writeFileSync } from 'node:fs';
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { ArrivalModel, LengthModel, PaperSimulationReport } from '@rrt/batching';
import { barChart } from '../plot/svg.js';
import { parseNumber, parsePositiveInt } from '../parse.js';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatTable } from '../ui/format.js';

/** "2048" or "1024-4096" (uniform). */
function parseLength(value: string): LengthModel {
  const m = /^(\d+)(?:-(\d+))?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`expected a length like 2048 or a range like 1024-4096, got '${value}'`);
  const min = Number(m[1]);
  const max = m[2] === undefined ? min : Number(m[2]);
  if (min < 1 || max < min) throw new InvalidArgumentError(`expected 1 <= min <= max, got '${value}'`);
  return min === max ? min : { min, max };
}

/** "all" (every request at t = 0) or "poisson:<requests per second>". */
function parseArrival(value: string): ArrivalModel {
  if (value === 'all') return { kind: 'all-at-once' };
  const m = /^poisson:(.+)$/.exec(value);
  const rate = m ? Number(m[1]) : NaN;
  if (!(rate > 0 && Number.isFinite(rate))) throw new InvalidArgumentError(`expected "all" or "poisson:<requests per second>", got '${value}'`);
  return { kind: 'poisson', rate };
}

/** Human-readable table of a paper simulation. */
export function simulationLines(report: PaperSimulationReport): string[] {
  const paperSequence = report.rows.find((r) => r.key === 'vanilla-sequence')?.paperThroughput ?? null;
  const rows = report.rows.map((r) => [
    r.key,
    r.scheduler,
    r.earlyExit ? 'yes' : 'no',
    String(r.maxBatch),
    r.throughput.toFixed(0),
    `${r.speedupVsStatic.toFixed(2)}x`,
    `${r.speedupVsSequence.toFixed(2)}x`,
    r.paperThroughput === null ? '-' : String(r.paperThroughput),
    r.paperSpeedupVsStatic === null ? '-' : `${r.paperSpeedupVsStatic.toFixed(2)}x`,
    r.paperThroughput === null || paperSequence === null ? '-' : `${(r.paperThroughput / paperSequence).toFixed(2)}x`,
  ]);
  return [
    `setting: ${report.setting}`,
    '',
    ...formatTable(
      ['run', 'scheduler', 'exit', 'max batch', 'tokens/s', 'vs static', 'vs seq', 'paper tokens/s', 'paper vs static', 'paper vs seq'],
      rows,
      ['l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
    ...report.notes.map((n) => `note: ${n}`),
  ];
}

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('simulate')
    .description("simulate serving throughput: static, sequence-wise and continuous depth-wise batching (the paper's section 4)")
    .requiredOption('--paper', "the paper's setting: Gemma 2B and its recursive variants with the paper's per-token times")
    .option('--requests <n>', 'requests in the stream', parsePositiveInt, 1024)
    .option('--prefix <n>', 'prompt tokens per request', parsePositiveInt, 512)
    .option('--decode <n>', 'decoded tokens per request, or a uniform range min-max', parseLength, 2048)
    .option('--arrival <model>', '"all" at t = 0, or "poisson:<requests per second>"', parseArrival)
    .option('--exit-probability <p>', 'per-loop early-exit probability of the depth-wise runs', parseNumber({ min: 0, max: 1 }), 0.5)
    .addOption(new Option('--cost-model <kind>', 'how a call costs with its batch size').choices(['linear-step', 'linear-per-token']).default('linear-step'))
    .option('--no-prefill', 'do not charge prefill calls')
    .option('--mix-prefill', "prompts join the decode calls as rows (the serving engine's mixed calls) instead of prefill calls of their own")
    .option(
      '--fit',
      "the paper's table under one fitted reading of its unstated assumptions: per-token times per whole token, lengths 1160-2936, no prefill, " +
        '13.7% of the recursive model\'s tokens exiting after loop 1 and none of the relaxed one\'s (replaces --decode, --exit-probability and prefill)',
    )
    .option('--plot <file.svg>', 'also write a bar chart of simulated and paper throughput')
    .option('--config <file>', 'JSON file of option values (flags override it)');
  withExamples(cmd, [
    ['rrt simulate --paper', "the paper's comparison, 1024 requests"],
    ['rrt simulate --paper --requests 128 --exit-probability 0.7 --json', 'fewer requests, more early exits, as JSON'],
    ['rrt simulate --paper --arrival poisson:2 --decode 256-4096 --plot throughput.svg', 'spread-out arrivals and lengths, with a chart'],
    ['rrt simulate --paper --fit', "the fitted reading that reproduces the paper's 2.66x / 1.88x"],
  ]);
  defineAction(cmd, state, {
    config: 'options',
    run: async (ctx, opts) => {
      const { PAPER_FIT, simulatePaper } = await import('@rrt/batching');
      const report = simulatePaper({
        requests: opts.requests as number,
        prefixLength: opts.prefix as number,
        decodeLength: opts.decode as LengthModel,
        ...(opts.arrival ? { arrival: opts.arrival as ArrivalModel } : {}),
        exitProbability: opts.exitProbability as number,
        costModel: opts.costModel as 'linear-step' | 'linear-per-token',
        prefill: opts.prefill as boolean,
        mixPrefill: opts.mixPrefill === true,
        seed: (opts.seed as number | undefined) ?? 0,
        ...(opts.fit ? PAPER_FIT : {}),
      });
      if (typeof opts.plot === 'string') {
        const bars = report.rows.flatMap((r) => [
          { label: `${r.key}`, value: Math.round(r.throughput) },
          ...(r.paperThroughput === null ? [] : [{ label: `${r.key} (paper)`, value: r.paperThroughput, color: '#7f7f7f' }]),
        ]);
        const path = ctx.resolvePath(opts.plot);
        writeFileSync(path, barChart({ title: 'Simulated decode throughput (paper in grey)', yLabel: 'tokens/s', bars }));
        ctx.note(`wrote ${path}`);
      }
      ctx.output(
        () => simulationLines(report),
        () => ({ ...report }),
      );
    },
  });
}
