// The demo's report: report/index.html (tables and inline SVG charts) and the summary table the
// command prints. Every number comes from a PipelineResult; each section names the command and
// seed that produced it.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { barChart, escapeXml, lineChart, scatterChart } from '../plot/svg.js';
import { formatTable } from '../ui/format.js';
import type { PipelineResult } from './pipeline.js';

export interface Provenance {
  /** The command line that produced the numbers, e.g. "rrt demo --steps 40". */
  command: string;
  seed: number;
  backend: string;
  date: string;
}

/** The SVG charts of the report, by file name. */
export function reportCharts(r: PipelineResult): Record<string, string> {
  const pts = (c: { step: number; loss: number }[]) => c.map((p) => [p.step, p.loss] as const);
  return {
    'loss-curves.svg': lineChart({
      title: 'Training loss',
      xLabel: 'step',
      yLabel: 'loss (nats/token)',
      series: [
        { name: 'recursive uptraining (KD)', points: pts(r.curves.recursive) },
        { name: `relaxed r=${r.rank} uptraining (KD)`, points: pts(r.curves.relaxed) },
        { name: 'early-exit post-training', points: pts(r.curves.exits) },
      ],
    }),
    ...(r.models.length > 0
      ? {
        'perplexity-vs-parameters.svg': scatterChart({
          title: 'Held-out perplexity vs parameters',
          xLabel: 'parameters',
          yLabel: 'perplexity',
          series: r.models.map((m) => ({ name: m.name, points: [{ x: m.parameters, y: m.perplexity }] })),
        }),
      }
      : {}),
    ...(r.bench
      ? {
        'throughput.svg': barChart({
          title: 'Serving throughput per scheduler',
          yLabel: 'tokens/s',
          bars: r.bench.rows.map((row) => ({ label: `${row.name}${row.model === 'baseline' ? ' (teacher)' : ''}`, value: Number(row.tokensPerSecond.toFixed(1)) })),
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

function exitTable(acc: NonNullable<PipelineResult['exitAccuracy']>): [string[], string[][]] {
  return [
    ['exit', 'accuracy before post-training', 'accuracy after'],
    acc.before.map((a, i) => [`after loop ${i + 1}`, pct(a), pct(acc.after[i] ?? NaN)]),
  ];
}

function benchTable(bench: NonNullable<PipelineResult['bench']>): [string[], string[][]] {
  return [
    ['run', 'model', 'tokens/s', 'mean loops/token', 'occupancy', 'vs static', 'vs sequence'],
    bench.rows.map((row) => [
      row.name, row.model === 'baseline' ? 'teacher' : 'recursive', f(row.tokensPerSecond, 1), f(row.meanLoopsPerToken, 2), pct(row.meanOccupancy),
      `${f(row.speedupVsStatic, 2)}x`, `${f(row.speedupVsSequence, 2)}x`,
    ]),
  ];
}

/** The plain-text summary the command prints. */
export function summaryLines(r: PipelineResult, p: Provenance): string[] {
  return [
    `summary of \`${p.command}\` (seed ${p.seed}, backend ${p.backend}), ${f(r.seconds, 0)} s:`,
    ...(r.interrupted ? [interruptedNote(r.interrupted.stage)] : []),
    ...(r.models.length > 0 ? ['', ...formatTable(...modelTable(r), ['l', 'r', 'r', 'r', 'r'])] : []),
    ...(r.exitAccuracy ? ['', ...formatTable(...exitTable(r.exitAccuracy), ['l', 'r', 'r'])] : []),
    ...(r.bench ? ['', ...formatTable(...benchTable(r.bench), ['l', 'l', 'r', 'r', 'r', 'r', 'r'])] : []),
    ...(r.full ? ['', ...formatTable(...fullTable(r), ['l', 'r', 'r', 'r'])] : []),
  ];
}

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
  const by = `<p class="by">Produced by <code>${escapeXml(p.command)}</code>, seed ${p.seed}, backend ${escapeXml(p.backend)}, ${escapeXml(p.date)}.</p>`;
  const fig = (name: string, caption: string) => `<figure>${charts[name]}<figcaption>${escapeXml(caption)} (<a href="${name}">${name}</a>)</figcaption></figure>`;
  const w = r.bench?.workload;
  const stages = Object.entries(r.stageSeconds).map(([k, v]) => [k, f(v, 1)]);
  const html = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>rrt demo report</title>
<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}.by{color:#555;font-size:90%}figure{margin:1em 0}</style>
</head>
<body>
<h1>Relaxed Recursive Transformers: the pipeline at small scale</h1>
${by}
${r.interrupted ? `<p class="interrupted"><strong>${escapeXml(interruptedNote(r.interrupted.stage))}.</strong></p>\n` : ''}<p>Teacher: ${r.teacher.layers} layers, hidden ${r.teacher.hidden}, vocabulary ${r.teacher.vocab}, ${r.teacher.parameters} parameters.
Converted with ${escapeXml(r.conversion.scheme)} sharing and ${escapeXml(r.conversion.init)} init into ${r.conversion.sharedLayers} shared layers looped ${r.conversion.loops} times (depth map ${r.conversion.depthMap.join(' ')}).
Relaxed with rank ${r.rank} SVD-init LoRA (${r.loraParameters} LoRA parameters).</p>

${r.models.length > 0 ? `<h2 id="perplexity">Held-out perplexity</h2>
${by}
${htmlTable(...modelTable(r))}
${fig('perplexity-vs-parameters.svg', 'Held-out perplexity against parameter count')}
` : ''}
<h2 id="loss-curves">Loss curves</h2>
${by}
${fig('loss-curves.svg', 'Training loss of each stage per optimizer step')}

${r.exitAccuracy ? `<h2 id="early-exit">Per-exit accuracy</h2>
${by}
<p>Next-token accuracy of each loop's exit over ${r.exitAccuracy.tokens} held-out tokens.</p>
${htmlTable(...exitTable(r.exitAccuracy))}
` : ''}
${r.bench && w ? `<h2 id="throughput">Depth-wise batching benchmark</h2>
${by}
<p>Workload: ${w.requests} requests (seed ${w.seed}), max batch ${w.maxBatch}, prompts ${w.promptTokens.min}-${w.promptTokens.max} tokens, ${w.newTokens.min}-${w.newTokens.max} new tokens, temperature ${w.temperature}; early exit at max probability ${r.exitThreshold}. Tokens without early exit agree across schedulers: ${r.bench.tokensAgree ? 'yes' : 'no'}; early-exit tokens equal to full depth: ${pct(r.bench.exitAgreement)}.</p>
${htmlTable(...benchTable(r.bench))}
${fig('throughput.svg', 'Tokens per second per scheduler')}
` : ''}
${r.scheduleSvg && r.exitDistribution ? `<h2 id="schedule">Depth-wise schedule</h2>
${by}
<p>Continuous depth-wise batching of the same workload, simulated at unit cost per call with the exit distribution the benchmark measured (per loop: ${r.exitDistribution.map(pct).join(', ')}); first 120 calls.</p>
${fig('depthwise-schedule.svg', 'Slots (rows) per call (columns), coloured by loop depth')}
` : ''}
${r.full ? `<h2 id="full-study">Full study: inits, ranks, LoRA init, same-size baselines</h2>
${by}
<p>Each model below is converted (or relaxed, or randomly initialised) from the same teacher and trained for the same ${r.full.steps} optimizer steps on the same batches as the models above (KD from the teacher; the first vanilla baseline uses next-token cross-entropy). The stepwise and rank-${r.rank} SVD rows are the pipeline's own models.</p>
${htmlTable(...fullTable(r))}
${fig('full-study.svg', 'Held-out perplexity after the same budget against parameter count')}
` : ''}
<h2 id="timing">Time per stage</h2>
${by}
${htmlTable(['stage', 'seconds'], stages)}
</body>
</html>
`;
  const path = join(dir, 'index.html');
  writeFileSync(path, html);
  return path;
}
