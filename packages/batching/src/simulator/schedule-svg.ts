import { RrtError } from '@rrt/tensor';
import type { ScheduleTrace } from '../scheduler.js';

export interface ScheduleSvgOptions {
  /** Most calls drawn (default 200), so files stay small. */
  maxSteps?: number;
  /** First call drawn (default 0). */
  firstStep?: number;
  /** Cell size in px (defaults fit the plot into about 800 x 400). */
  cellWidth?: number;
  cellHeight?: number;
  /** Default: scheduler, loops and max batch. */
  title?: string;
  /** One fill per loop depth; cycled if there are more loops. */
  depthColors?: readonly string[];
  prefillColor?: string;
  idleColor?: string;
}

const DEFAULT_DEPTH_COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
const SCHEDULER_NAMES: Record<string, string> = { static: 'static batching', sequence: 'continuous sequence-wise batching', depthwise: 'continuous depth-wise batching' };

/**
 * Renders a schedule as a standalone SVG: x = call (step), y = batch slot, each cell filled by
 * the loop depth it computes (prefill calls in their own colour, empty slots in the idle colour).
 * Adjacent cells of one request at one depth merge into one run to keep the file small.
 */
export function scheduleToSvg(trace: ScheduleTrace, opts: ScheduleSvgOptions = {}): string {
  const maxSteps = opts.maxSteps ?? 200;
  const firstStep = opts.firstStep ?? 0;
  if (!Number.isInteger(maxSteps) || maxSteps < 1) throw new RrtError(`scheduleToSvg: maxSteps must be an integer >= 1, got ${maxSteps}`);
  if (!Number.isInteger(firstStep) || firstStep < 0) throw new RrtError(`scheduleToSvg: firstStep must be an integer >= 0, got ${firstStep}`);
  const colors = opts.depthColors && opts.depthColors.length > 0 ? opts.depthColors : DEFAULT_DEPTH_COLORS;
  const prefillColor = opts.prefillColor ?? '#7f7f7f';
  const idleColor = opts.idleColor ?? '#f0f0f0';

  const steps = trace.steps.filter((s) => s.step >= firstStep && s.step < firstStep + maxSteps);
  const lastStep = steps.length > 0 ? steps[steps.length - 1].step : firstStep;
  const columns = Math.max(1, lastStep - firstStep + 1);
  const slots = trace.maxBatch;
  const cw = opts.cellWidth ?? clamp(800 / columns, 1, 16);
  const ch = opts.cellHeight ?? clamp(400 / slots, 1, 16);
  const plotW = columns * cw;
  const plotH = slots * ch;
  const left = 64;
  const top = 44;
  const legendW = 120;
  const width = Math.ceil(left + plotW + 20 + legendW);
  const height = Math.ceil(top + Math.max(plotH, 20 * (trace.loops + 3)) + 56);

  const shown = steps.length === 0 ? 'no calls' : `calls ${firstStep}-${lastStep} of ${trace.totalSteps}`;
  const title = opts.title ?? `${SCHEDULER_NAMES[trace.scheduler] ?? trace.scheduler}: ${trace.loops} loop${trace.loops === 1 ? '' : 's'}, max batch ${trace.maxBatch}`;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<title>${esc(title)}</title>`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${left}" y="18" font-size="14" font-weight="bold">${esc(title)}</text>`);
  out.push(`<text x="${left}" y="34" fill="#555555">${esc(shown)}</text>`);
  out.push(`<rect class="plot-area" x="${left}" y="${top}" width="${fmt(plotW)}" height="${fmt(plotH)}" fill="${esc(idleColor)}"/>`);

  // Per slot, merge runs of consecutive calls with the same request, kind and depth; then draw
  // all runs of one depth as a single path (a few bytes per run instead of a rect element).
  type Run = { start: number; end: number; request: number; key: string };
  const open = new Map<number, Run>();
  const paths = new Map<string, string[]>();
  const flush = (slot: number): void => {
    const r = open.get(slot);
    if (!r) return;
    open.delete(slot);
    const x = left + (r.start - firstStep) * cw;
    const y = top + slot * ch;
    const w = (r.end - r.start + 1) * cw;
    let list = paths.get(r.key);
    if (!list) paths.set(r.key, (list = []));
    list.push(`M${fmt(x)} ${fmt(y)}h${fmt(w)}v${fmt(ch)}h${fmt(-w)}z`);
  };
  for (const s of steps) {
    const seen = new Set<number>();
    for (const it of s.items) {
      if (it.slot < 0 || it.slot >= slots) throw new RrtError(`scheduleToSvg: call ${s.step} has slot ${it.slot}, outside 0..${slots - 1}`);
      seen.add(it.slot);
      const key = s.kind === 'prefill' || it.token < 0 ? 'prefill' : String(it.depth);
      const r = open.get(it.slot);
      if (r && r.end === s.step - 1 && r.request === it.request && r.key === key) {
        r.end = s.step;
      } else {
        flush(it.slot);
        open.set(it.slot, { start: s.step, end: s.step, request: it.request, key });
      }
    }
    for (const slot of [...open.keys()]) if (!seen.has(slot)) flush(slot);
  }
  for (const slot of [...open.keys()]) flush(slot);
  const keys = [...paths.keys()].sort();
  out.push(`<g class="cells">`);
  for (const key of keys) {
    const fill = key === 'prefill' ? prefillColor : colors[Number(key) % colors.length];
    out.push(`<path data-depth="${key}" fill="${esc(fill)}" d="${paths.get(key)!.join('')}"/>`);
  }
  out.push(`</g>`);

  // Axes: x ticks at nice call numbers, y ticks at nice slot numbers.
  out.push(`<g class="axes" stroke="#333333">`);
  out.push(`<line x1="${left}" y1="${fmt(top + plotH)}" x2="${fmt(left + plotW)}" y2="${fmt(top + plotH)}"/>`);
  out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${fmt(top + plotH)}"/>`);
  out.push(`</g>`);
  const labels: string[] = [];
  for (const t of integerTicks(firstStep, firstStep + columns - 1, 8)) {
    const x = left + (t - firstStep + 0.5) * cw;
    labels.push(`<line x1="${fmt(x)}" y1="${fmt(top + plotH)}" x2="${fmt(x)}" y2="${fmt(top + plotH + 4)}" stroke="#333333"/>`);
    labels.push(`<text x="${fmt(x)}" y="${fmt(top + plotH + 16)}" text-anchor="middle">${t}</text>`);
  }
  for (const t of integerTicks(0, slots - 1, 6)) {
    const y = top + (t + 0.5) * ch;
    labels.push(`<line x1="${left - 4}" y1="${fmt(y)}" x2="${left}" y2="${fmt(y)}" stroke="#333333"/>`);
    labels.push(`<text x="${left - 6}" y="${fmt(y + 4)}" text-anchor="end">${t}</text>`);
  }
  labels.push(`<text x="${fmt(left + plotW / 2)}" y="${fmt(top + plotH + 36)}" text-anchor="middle">step (one batched call)</text>`);
  labels.push(`<text transform="translate(16 ${fmt(top + plotH / 2)}) rotate(-90)" text-anchor="middle">batch slot</text>`);
  out.push(`<g class="labels">${labels.join('')}</g>`);

  // Legend: one swatch per loop depth, then prefill and idle.
  const legend: string[] = [];
  const entries: [string, string][] = [];
  for (let d = 0; d < trace.loops; d++) entries.push([trace.loops === 1 ? 'model call' : `loop ${d + 1}`, colors[d % colors.length]]);
  entries.push(['prefill', prefillColor], ['idle slot', idleColor]);
  const lx = left + plotW + 20;
  entries.forEach(([name, fill], i) => {
    const y = top + i * 20;
    legend.push(`<rect x="${fmt(lx)}" y="${y}" width="12" height="12" fill="${esc(fill)}" stroke="#999999"/>`);
    legend.push(`<text x="${fmt(lx + 18)}" y="${y + 10}">${esc(name)}</text>`);
  });
  out.push(`<g class="legend">${legend.join('')}</g>`);
  out.push(`</svg>`);
  return out.join('\n');
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}

/** Short numbers keep the file small; two decimals are below a pixel's worth. */
function fmt(x: number): string {
  return String(Math.round(x * 100) / 100);
}

function integerTicks(lo: number, hi: number, target: number): number[] {
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag);
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) ticks.push(t);
  return ticks;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}
