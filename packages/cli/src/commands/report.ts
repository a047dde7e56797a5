// `rrt report`: re-renders a demo report (index.html and its SVG plots) from the result.json that
// `rrt demo` saved next to it, e.g. after the report's layout changed or to write it elsewhere.
// Every number comes from the JSON; the depth-wise schedule is simulated again from its saved inputs.

import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { isPlainObject, readJsonFile } from '../config.js';
import { UsageError } from '../errors.js';
import { defineAction, withExamples, type RunState } from '../program.js';

/** Fields a demo result.json must have to be rendered. */
// serving is empty and exitDistribution missing from a run interrupted before them.
const REQUIRED = ['provenance', 'teacher', 'conversion', 'models', 'curves', 'exitTraining', 'samples', 'serving', 'stageSeconds'] as const;

export function register(parent: Command, state: RunState): void {
  const cmd = parent
    .command('report')
    .description('re-render report/index.html and its SVG plots from the result.json of rrt demo')
    .argument('[result]', 'a result.json written by rrt demo, or its folder (default: report/result.json)')
    .option('--out <dir>', 'folder to write index.html and the plots to (default: the folder of the result.json)');
  withExamples(cmd, [
    ['rrt report', 'redraw report/index.html from report/result.json'],
    ['rrt report runs/full/result.json --out /tmp/full-report', 'write a saved run\'s report elsewhere'],
    ['rrt report report --json', 'the paths written, as JSON'],
  ]);
  defineAction(cmd, state, {
    run: async (ctx, opts, command) => {
      const given = (command.args[0] as string | undefined) ?? 'report';
      let path = ctx.resolvePath(given);
      if (existsSync(path) && statSync(path).isDirectory()) path = join(path, 'result.json');
      if (!existsSync(path)) throw new UsageError(`${given}: no result.json there; run rrt demo first (it writes report/result.json), or pass the path of one`);
      const json = readJsonFile(path, given);
      const missing = isPlainObject(json) ? REQUIRED.filter((k) => !(k in json)) : [...REQUIRED];
      if (missing.length > 0) throw new UsageError(`${given}: not a result.json of rrt demo (missing ${missing.join(', ')}); expected the file rrt demo writes next to index.html`);
      const { renderSchedule } = await import('../demo/pipeline.js');
      const { reportCharts, summaryLines, writeReport } = await import('../demo/report.js');
      type Saved = Parameters<typeof writeReport>[0] & { provenance: Parameters<typeof writeReport>[1] };
      const saved = json as unknown as Omit<Saved, 'scheduleSvg' | 'schedule'> & { schedule?: Saved['schedule'] };
      // Reports from before the schedule's inputs were saved: the benchmark's workload is the same one.
      // An interrupted run (no benchmark) has no schedule.
      const w = saved.serving?.[0]?.bench.workload;
      const schedule = saved.schedule ?? (w && saved.exitDistribution
        ? { loops: saved.conversion.loops, maxBatch: w.maxBatch, requests: w.requests, newTokens: w.newTokens, seed: w.seed, exitDistribution: saved.exitDistribution, steps: 120 }
        : undefined);
      const { provenance, ...rest } = saved;
      const drawn = schedule ? renderSchedule(schedule) : undefined;
      const result = { ...rest, ...(schedule && drawn ? { schedule, scheduleSvg: drawn.svg, scheduleShown: { calls: drawn.calls, total: drawn.total } } : {}) } as Saved;
      const out = opts.out !== undefined ? ctx.resolvePath(opts.out as string) : dirname(path);
      const index = writeReport(result, provenance, out);
      const files = Object.keys(reportCharts(result)).map((f) => join(out, f));
      ctx.output(
        () => [...summaryLines(result, provenance), '', `report: ${index}`],
        () => ({ result: path, report: index, files, provenance }),
      );
      return 0;
    },
  });
}
