// The demo's report: report/index.html (tables and inline SVG charts) and the summary table the
// command prints. Every number comes from a PipelineResult; the page names once, at the top, the
// command and seed that produced all of it.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { barChart, escapeXml, lineChart, scatterChart } from '../plot/svg.js';
import { formatCompact, formatTable } from '../ui/format.js';
import type { ServeBenchRow } from '@rrt/batching';
import type { PipelineResult, ServingRun } from './pipeline.js';

export interface Provenance {
  /** The command line that produced the numbers, e.g. "rrt demo --steps 40". */
  command: string;
  seed: number;
  backend: string;
  date: string;
}

const EXIT_COLORS = ['#9ecae1', '#3182bd', '#fdae6b', '#e6550d'];

/** The SVG charts of the report, by file name. */
export function reportCharts(r: PipelineResult): Record<string, string> {
  const pts = (c: { step: number; loss: number }[]) => c.map((p) => [p.step, p.loss] as const);
  // Uptraining (a KD loss) and exit training (a sum over exits) live on different scales: one chart each.
  const exitCurves = [
    { name: `recursive, ${r.exitTraining[0]?.schedule ?? 'aggressive'} CE + KD, nothing frozen`, points: pts(r.curves.exits) },
    { name: 'relaxed, exit adapters, trunk frozen', points: pts(r.curves.exitAdapters ?? []) },
  ].filter((s) => s.points.length > 0);
  return {
    'loss-curves.svg': lineChart({
      title: 'Uptraining loss (KD from the teacher)',
      xLabel: 'step',
      yLabel: 'loss (nats/token)',
      series: [
        { name: 'recursive (stepwise init)', points: pts(r.curves.recursive) },
        { name: `relaxed r=${r.rank} (${r.relaxedInit} init, SVD LoRA)`, points: pts(r.curves.relaxed) },
      ].filter((s) => s.points.length > 0),
    }),
    ...(exitCurves.length > 0
      ? { 'exit-curves.svg': lineChart({ title: 'Early-exit training loss (weighted sum over exits)', xLabel: 'step', yLabel: 'loss', series: exitCurves }) }
      : {}),
    ...(r.models.length > 0
      ? {
        'perplexity.svg': barChart({
          title: 'Held-out perplexity per model',
          yLabel: 'perplexity',
          bars: r.models.map((m) => ({ label: m.name, value: Number(m.perplexity.toFixed(2)) })),
        }),
      }
      : {}),
    ...(r.exitTraining.length > 0
      ? {
        'exit-accuracy.svg': barChart({
          title: 'Next-token accuracy per exit, before and after exit training',
          yLabel: 'held-out accuracy (%)',
          bars: r.exitTraining.flatMap((run, k) => run.before.accuracy.flatMap((a, e) => [
            { label: `${run.name}, loop ${e + 1}, before`, value: Number((100 * a).toFixed(1)), color: EXIT_COLORS[(2 * k) % 4] },
            { label: `${run.name}, loop ${e + 1}, after`, value: Number((100 * run.after.accuracy[e]!).toFixed(1)), color: EXIT_COLORS[(2 * k + 1) % 4] },
          ])),
        }),
      }
      : {}),
    ...(r.serving.length > 0
      ? {
        'throughput.svg': barChart({
          title: 'Serving throughput per scheduler',
          yLabel: 'tokens/s',
          // The teacher's runs once (from the first benchmark), then each model's.
          bars: [
            ...r.serving[0]!.bench.rows.filter((row) => row.model === 'baseline').map((row) => ({ label: `teacher, ${row.name.replace('baseline ', '')}`, value: Number(row.tokensPerSecond.toFixed(1)), color: '#7f7f7f' })),
            ...r.serving.flatMap((run, k) => run.bench.rows.filter((row) => row.model === 'model').map((row) => ({
              label: `${run.model}, ${row.name}`, value: Number(row.tokensPerSecond.toFixed(1)), color: EXIT_COLORS[2 * k + 1],
            }))),
          ],
        }),
      }
      : {}),
    ...(r.scheduleSvg ? { 'depthwise-schedule.svg': r.scheduleSvg } : {}),
    ...(r.full ? { 'full-study.svg': fullStudyChart(r) } : {}),
  };
}

const GROUP_NAMES: Record<string, string> = { init: 'recursive, by init', rank: 'relaxed, SVD init, by rank', 'lora-init': 'relaxed, zero init', baseline: 'same-size vanilla, from scratch' };

/** --full: held-out perplexity after the same budget against parameters, one series per group. */
function fullStudyChart(r: PipelineResult): string {
  const rows = r.full!.rows;
  const groups = [...new Set(rows.map((row) => row.group))];
  return scatterChart({
    title: `Perplexity after ${r.full!.steps} steps vs parameters (demo --full)`,
    xLabel: 'parameters',
    yLabel: 'held-out perplexity',
    series: [
      { name: 'teacher (full size)', points: [{ x: r.models[0]!.parameters, y: r.models[0]!.perplexity, label: 'teacher' }] },
      ...groups.map((g) => ({ name: GROUP_NAMES[g] ?? g, points: rows.filter((row) => row.group === g).map((row) => ({ x: row.parameters, y: row.perplexityAfter, label: row.name })) })),
    ],
  });
}

function fullTable(r: PipelineResult): [string[], string[][]] {
  return [
    ['model (full study)', 'parameters', 'perplexity before', `perplexity after ${r.full!.steps} steps`],
    r.full!.rows.map((row) => [row.name, String(row.parameters), f(row.perplexityBefore, 2), f(row.perplexityAfter, 2)]),
  ];
}

const f = (n: number, d: number) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
const pct = (n: number) => `${(100 * n).toFixed(1)}%`;

function modelTable(r: PipelineResult): [string[], string[][]] {
  return [['model', 'parameters', 'loss', 'perplexity', 'bits/byte'], r.models.map((m) => [m.name, String(m.parameters), f(m.loss, 4), f(m.perplexity, 2), f(m.bitsPerByte, 3)])];
}

function exitTable(r: PipelineResult): [string[], string[][]] {
  return [
    ['model, exit', 'trained', 'accuracy before', 'after', 'loss before', 'after'],
    r.exitTraining.flatMap((run) => run.before.accuracy.map((a, e) => [
      `${run.name}, after loop ${e + 1}`, `${run.trained}, ${run.schedule}, ${run.steps} steps`,
      pct(a), pct(run.after.accuracy[e] ?? NaN), f(run.before.loss[e] ?? NaN, 4), f(run.after.loss[e] ?? NaN, 4),
    ])),
  ];
}

/** Every run of every benchmark; the x-columns compare with the same model's static and sequence-wise runs (the teacher's with its own). */
function benchTable(r: PipelineResult): [string[], string[][]] {
  return [
    ['run', 'model', 'tokens/s', 'mean loops/token', 'occupancy', 'vs static', 'vs sequence'],
    r.serving.flatMap((run, k) => run.bench.rows.filter((row) => row.model === 'model' || k === 0).map((row) => [
      row.name.replace('baseline ', ''), row.model === 'baseline' ? 'teacher' : run.model, f(row.tokensPerSecond, 1), f(row.meanLoopsPerToken, 2), pct(row.meanOccupancy),
      `${f(row.speedupVsStatic, 2)}x`, `${f(row.speedupVsSequence, 2)}x`,
    ])),
  ];
}

/** The headline of one benchmark, per K/V fill: depth-wise + exit over the teacher's static and sequence-wise batching, with the served text's quality. */
function servingLines(run: ServingRun): string[] {
  const b = run.bench;
  const exitRows = b.rows.filter((row) => row.earlyExit && row.model === 'model');
  return run.served.flatMap((s, k) => {
    const row = exitRows[k], vb = row?.vsBaseline;
    const vs = b.rows.find((r) => r.model === 'baseline' && r.scheduler === 'static');
    return [
      ...(vb
        ? [`${run.model}, depth-wise batching + early exit (${s.policy}, K/V fill ${s.kvFill}) vs the teacher: ${f(vb.static, 2)}x static, ${f(vb.sequence, 2)}x sequence-wise batching (median of ${b.repeats} repeat${b.repeats === 1 ? '' : 's'}${b.sliceMs > 0 ? `, the runs taking turns of ${b.sliceMs} ms` : ' run side by side'})`]
        : []),
      ...(row ? [`  tokens leaving after each loop: ${row.exitsPerLoop.join(' / ')} (mean ${f(row.meanLoopsPerToken, 2)} loops per token)`] : []),
      ...(row?.blockRows && vs?.blockRows ? [rowsLine(row, vs)] : []), // absent from result.json files of older versions
      `  served text: ${pct(s.agreement)} of the tokens equal to full depth; mean NLL under the teacher ${f(s.nll.exitByTeacher, 3)} (at full depth ${f(s.nll.fullByTeacher, 3)}), under the model at full depth ${f(s.nll.exitByModel, 3)} (${f(s.nll.fullByModel, 3)})`,
      `  held-out text with early exit: NLL ${f(s.heldOut.nll, 4)} (at full depth ${f(s.heldOut.fullNll, 4)}), exit top-1 equal to full depth at ${pct(s.heldOut.agreement)} of positions`,
    ];
  });
}

/**
 * What each run computed in block calls (rows x calls, prompts never exit): the work the exits
 * saved, next to the time they saved.
 */
function rowsLine(row: ServeBenchRow, vs: ServeBenchRow): string {
  const sum = (r: ServeBenchRow) => r.blockRows.prompt + r.blockRows.decode;
  const part = (r: ServeBenchRow) => `${formatCompact(r.blockRows.prompt)} prompt + ${formatCompact(r.blockRows.decode)} decode`;
  return `  rows through the blocks: ${part(row)}, against ${part(vs)} for the teacher's static batching (padding included): ${f(sum(vs) / sum(row), 2)}x fewer`;
}

/** The plain-text summary the command prints. */
export function summaryLines(r: PipelineResult, p: Provenance): string[] {
  return [
    `summary of \`${p.command}\` (seed ${p.seed}, backend ${p.backend}), ${f(r.seconds, 0)} s:`,
    ...(r.interrupted ? [interruptedNote(r.interrupted.stage)] : []),
    ...(r.models.length > 0 ? ['', ...formatTable(...modelTable(r), ['l', 'r', 'r', 'r', 'r'])] : []),
    ...(r.exitTraining.length > 0 ? ['', ...formatTable(...exitTable(r), ['l', 'l', 'r', 'r', 'r', 'r'])] : []),
    ...(r.serving.length > 0 ? ['', ...formatTable(...benchTable(r), ['l', 'l', 'r', 'r', 'r', 'r', 'r']), ...r.serving.flatMap(servingLines)] : []),
    ...(r.samples.length > 0 ? ['', `greedy continuations of "${r.samplePrompt}":`, ...r.samples.map((s) => `  ${s.model}: ${oneLine(s.text)}`)] : []),
    ...(r.full ? ['', ...formatTable(...fullTable(r), ['l', 'r', 'r', 'r'])] : []),
  ];
}

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();

function interruptedNote(stage: string): string {
  return `interrupted (Ctrl-C) during ${stage}: this covers the stages finished before it; that stage's loss curve is partial`;
}

function htmlTable(head: string[], body: string[][]): string {
  const th = head.map((h) => `<th>${escapeXml(h)}</th>`).join('');
  const rows = body.map((row) => `<tr>${row.map((c) => `<td>${escapeXml(c)}</td>`).join('')}</tr>`).join('\n');
  return `<table>\n<thead><tr>${th}</tr></thead>\n<tbody>\n${rows}\n</tbody>\n</table>`;
}

/** Writes <dir>/index.html and the SVG files next to it; returns the index path. */
export function writeReport(r: PipelineResult, p: Provenance, dir: string): string {
  mkdirSync(dir, { recursive: true });
  const charts = reportCharts(r);
  for (const [name, svg] of Object.entries(charts)) writeFileSync(join(dir, name), svg);
  writeFileSync(join(dir, 'result.json'), JSON.stringify({ provenance: p, ...r, scheduleSvg: undefined }, null, 2));
  const fig = (name: string, caption: string) => (charts[name] ? `<figure>${charts[name]}<figcaption>${escapeXml(caption)} (<a href="${name}">${name}</a>)</figcaption></figure>` : '');
  const w = r.serving[0]?.bench.workload;
  const stages = Object.entries(r.stageSeconds).map(([k, v]) => [k, f(v, 1)]);
  const shown = r.scheduleShown;
  const html = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>rrt demo report</title>
<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}.by{color:#555;font-size:90%}figure{margin:1em 0}blockquote{font-family:Georgia,serif;margin:0.5em 1em}</style>
</head>
<body>
<h1>Relaxed Recursive Transformers: the pipeline at small scale</h1>
<p class="by">Every number on this page was produced by <code>${escapeXml(p.command)}</code> (seed ${p.seed}, backend ${escapeXml(p.backend)}, ${escapeXml(p.date)}, ${f(r.seconds, 0)} s).</p>
${r.interrupted ? `<p class="interrupted"><strong>${escapeXml(interruptedNote(r.interrupted.stage))}.</strong></p>\n` : ''}<p>Teacher: ${r.teacher.layers} layers, hidden ${r.teacher.hidden}, vocabulary ${r.teacher.vocab}, ${r.teacher.parameters} parameters.
Recursive model: ${escapeXml(r.conversion.scheme)} sharing, ${escapeXml(r.conversion.init)} init, ${r.conversion.sharedLayers} shared layers looped ${r.conversion.loops} times (depth map ${r.conversion.depthMap.join(' ')}).
Relaxed model: the same sharing with ${escapeXml(r.relaxedInit)} init and rank ${r.rank} SVD-init depth-wise LoRA (${r.loraParameters} LoRA parameters).</p>

${r.models.length > 0 ? `<h2 id="perplexity">Held-out perplexity</h2>
${htmlTable(...modelTable(r))}
${fig('perplexity.svg', 'Held-out perplexity per model')}
` : ''}
<h2 id="loss-curves">Loss curves</h2>
${fig('loss-curves.svg', 'Uptraining loss per optimizer step')}
${fig('exit-curves.svg', 'Early-exit training loss per optimizer step')}

${r.exitTraining.length > 0 ? `<h2 id="early-exit">Early exits</h2>
<p>Next-token accuracy and cross-entropy of each loop's exit over ${r.exitTraining[0]!.before.tokens} held-out tokens, before and after exit training. The recursive model follows the paper's recipe (post-training after uptraining, nothing frozen, CE + KD on every exit). The relaxed model keeps its trunk frozen and trains a low-rank adapter on the head of each early exit; its last exit has none, so full depth is unchanged.</p>
${htmlTable(...exitTable(r))}
${fig('exit-accuracy.svg', 'Held-out next-token accuracy per exit')}
` : ''}
${r.samples.length > 0 ? `<h2 id="samples">Samples</h2>
<p>Greedy continuations of “${escapeXml(r.samplePrompt)}”.</p>
${r.samples.map((s) => `<p><strong>${escapeXml(s.model)}</strong></p><blockquote>${escapeXml(r.samplePrompt + s.text)}</blockquote>`).join('\n')}
${r.serving.map((run) => `<p><strong>${escapeXml(run.model)}, served with early exit</strong> (K/V fill ${escapeXml(run.served[0]!.kvFill)}; the benchmark's first request, its prompt cut from held-out text), then the same request at full depth</p><blockquote>${escapeXml(run.served[0]!.sample.prompt)}<strong>${escapeXml(run.served[0]!.sample.exit)}</strong></blockquote><blockquote>${escapeXml(run.served[0]!.sample.prompt)}<strong>${escapeXml(run.served[0]!.sample.full)}</strong></blockquote>`).join('\n')}
` : ''}
${w ? `<h2 id="throughput">Depth-wise batching benchmark</h2>
<p>Workload: ${w.requests} requests (seed ${w.seed}), max batch ${w.maxBatch}, prompts ${w.promptTokens.min}-${w.promptTokens.max} tokens, ${w.newTokens.min}-${w.newTokens.max} new tokens, temperature ${w.temperature}. Served: the recursive model after the paper's exit post-training, and the relaxed model with its frozen-trunk exit adapters and its LoRA merged per depth; early exit ${escapeXml(r.exitPolicy)}, the K/V of exited tokens filled two ways, one early-exit run each: from a state predictor's estimate of each skipped depth's input (predict: computes the missing K/V) and copied from the first loop of the same block (reuse-loop: computes nothing) (router and predictor fitted on ${r.serving[0]!.served[0]!.fitSequences} of each model's own continuations of training prompts). Each benchmark runs the teacher's static and sequence-wise batching beside it. Without early exit every scheduler produced the same tokens: ${r.serving.every((run) => run.bench.tokensAgree) ? 'yes' : 'no'}.</p>
${r.serving.flatMap(servingLines).map((l) => `<p>${escapeXml(l.trim())}.</p>`).join('\n')}
${htmlTable(...benchTable(r))}
${fig('throughput.svg', 'Tokens per second per scheduler')}
` : ''}
${r.scheduleSvg && r.exitDistribution ? `<h2 id="schedule">Depth-wise schedule</h2>
<p>Continuous depth-wise batching of the same workload, simulated at unit cost per call with the exit distribution the benchmark measured (per loop: ${r.exitDistribution.map(pct).join(', ')})${shown ? `; the first ${shown.calls} of ${shown.total} calls` : ''}.</p>
${fig('depthwise-schedule.svg', 'Slots (rows) per call (columns), coloured by loop depth')}
` : ''}
${r.full ? `<h2 id="full-study">Full study: inits, ranks, LoRA init, same-size baselines</h2>
<p>Each model below is converted (or relaxed, or randomly initialised) from the same teacher and trained for the same ${r.full.steps} optimizer steps on the same batches as the models above (KD from the teacher; the first vanilla baseline uses next-token cross-entropy). The stepwise and rank-${r.rank} SVD rows are the pipeline's own models.</p>
${htmlTable(...fullTable(r))}
${fig('full-study.svg', 'Held-out perplexity after the same budget against parameter count')}
` : ''}
<h2 id="timing">Time per stage</h2>
${htmlTable(['stage', 'seconds'], stages)}
</body>
</html>
`;
  const path = join(dir, 'index.html');
  writeFileSync(path, html);
  return path;
}
