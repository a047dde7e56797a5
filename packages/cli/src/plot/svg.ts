// Dependency-free SVG charts for the CLI: line, bar and scatter plots as standalone strings.

/** Fixed categorical palette, cycled; readable on white and in greyscale order. */
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export interface ChartSize {
  /** Pixels; default 640 x 400. */
  width?: number;
  height?: number;
}

export interface LineSeries {
  name: string;
  /** [x, y] pairs; drawn in the given order; non-finite pairs (and x <= 0 on a log axis) are skipped. */
  points: readonly (readonly [number, number])[];
}

export interface LineChartOptions extends ChartSize {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly LineSeries[];
  logX?: boolean;
  /** Draw a dot on every point (default: when a series has at most 60 points). */
  markers?: boolean;
}

export interface Bar {
  label: string;
  value: number;
  color?: string;
}

export interface BarChartOptions extends ChartSize {
  title: string;
  yLabel: string;
  bars: readonly Bar[];
  xLabel?: string;
  /** Print each bar's value above it (default true). */
  showValues?: boolean;
}

export interface ScatterPoint {
  x: number;
  y: number;
  /** Drawn beside the point, e.g. a model name. */
  label?: string;
}

export interface ScatterSeries {
  name: string;
  points: readonly ScatterPoint[];
}

export interface ScatterChartOptions extends ChartSize {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly ScatterSeries[];
  logX?: boolean;
}

/** Escapes text for SVG/XML content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Round tick values covering [min, max] with a 1/2/5 x 10^k step; the ends are widened to ticks. */
export function niceTicks(min: number, max: number, target = 5): number[] {
  [min, max] = widen(min, max);
  const step = niceStep((max - min) / Math.max(1, target));
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; lo + i * step <= hi + step * 1e-9; i++) ticks.push(clean(lo + i * step));
  return ticks;
}

/**
 * Ticks for a log axis over [min, max] (both > 0): 1-2-5 steps when the data spans at most
 * two decades, whole decades otherwise; trimmed to the ticks just enclosing the data.
 */
export function logTicks(min: number, max: number): number[] {
  let lo = Math.floor(Math.log10(min));
  let hi = Math.ceil(Math.log10(max));
  if (hi === lo) hi += 1;
  const decades = hi - lo;
  const candidates: number[] = [];
  if (decades <= 2) {
    for (let e = lo; e <= hi; e++) for (const m of [1, 2, 5]) candidates.push(clean(m * 10 ** e));
  } else {
    const stride = Math.ceil(decades / 8);
    lo = Math.floor(lo / stride) * stride;
    for (let e = lo; e < hi + stride; e += stride) candidates.push(clean(10 ** e));
  }
  let first = 0;
  while (first + 1 < candidates.length && candidates[first + 1] <= min * (1 + 1e-9)) first++;
  let last = candidates.length - 1;
  while (last - 1 > first && candidates[last - 1] >= max * (1 - 1e-9)) last--;
  return candidates.slice(first, last + 1);
}

/** x: [x, y] data -> a line chart SVG string. */
export function lineChart(opts: LineChartOptions): string {
  const series = opts.series.map((s) => ({ name: s.name, points: s.points.filter(([x, y]) => usable(x, y, opts.logX)) }));
  const all = series.flatMap((s) => s.points);
  const frame = makeFrame(opts, series.map((s) => s.name), all.map((p) => p[0]), all.map((p) => p[1]), { logX: opts.logX });
  const body: string[] = [];
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    if (s.points.length === 0) return;
    const pts = s.points.map(([x, y]) => `${fmt(frame.sx(x))},${fmt(frame.sy(y))}`).join(' ');
    body.push(`<polyline class="series" data-series="${i}" fill="none" stroke="${color}" stroke-width="2" points="${pts}"/>`);
    if (opts.markers ?? s.points.length <= 60) {
      for (const [x, y] of s.points) body.push(`<circle class="point" data-series="${i}" cx="${fmt(frame.sx(x))}" cy="${fmt(frame.sy(y))}" r="3" fill="${color}"/>`);
    }
  });
  return frame.render(body, legendEntries(series.map((s) => s.name), 'line'), all.length === 0);
}

/** Labelled bars from a zero baseline (negative values hang below it). */
export function barChart(opts: BarChartOptions): string {
  const bars = opts.bars.filter((b) => Number.isFinite(b.value));
  const values = bars.map((b) => b.value);
  const maxLabel = bars.reduce((m, b) => Math.max(m, b.label.length), 0);
  const rotate = bars.length > 6 || maxLabel > 12;
  // A label rotated -35 degrees reaches about 3.8 px lower per character. The given height's
  // margin holds labels of up to 30 characters; longer ones make the chart taller, so neither
  // is the label cut off nor the plot squashed.
  const dropPerChar = 3.8;
  const drop = rotate ? maxLabel * dropPerChar : 0;
  const height = (opts.height ?? 400) + Math.max(0, drop - 30 * dropPerChar);
  const frame = makeFrame(
    { ...opts, height, xLabel: opts.xLabel ?? '' },
    [],
    [],
    [0, ...values],
    { band: bars.length, bottomExtra: drop, zeroY: true },
  );
  const body: string[] = [];
  const band = frame.plotW / Math.max(1, bars.length);
  const barW = band * 0.7;
  const y0 = frame.sy(0);
  bars.forEach((b, i) => {
    const x = frame.left + i * band + (band - barW) / 2;
    const y = frame.sy(b.value);
    const top = Math.min(y, y0);
    const color = b.color ?? PALETTE[i % PALETTE.length];
    body.push(`<rect class="bar" data-value="${b.value}" x="${fmt(x)}" y="${fmt(top)}" width="${fmt(barW)}" height="${fmt(Math.abs(y0 - y))}" fill="${escapeXml(color)}"/>`);
    if (opts.showValues ?? true) {
      const ty = b.value >= 0 ? top - 4 : top + Math.abs(y0 - y) + 12;
      body.push(`<text x="${fmt(x + barW / 2)}" y="${fmt(ty)}" text-anchor="middle" font-size="10">${escapeXml(formatNumber(b.value))}</text>`);
    }
    const cx = frame.left + (i + 0.5) * band;
    const ly = frame.top + frame.plotH + 14;
    body.push(
      rotate
        ? `<text class="bar-label" transform="translate(${fmt(cx)} ${fmt(ly)}) rotate(-35)" text-anchor="end">${escapeXml(b.label)}</text>`
        : `<text class="bar-label" x="${fmt(cx)}" y="${fmt(ly)}" text-anchor="middle">${escapeXml(b.label)}</text>`,
    );
  });
  if (bars.length > 0 && frame.yDomain[0] < 0) {
    body.push(`<line x1="${frame.left}" y1="${fmt(y0)}" x2="${fmt(frame.left + frame.plotW)}" y2="${fmt(y0)}" stroke="#333333"/>`);
  }
  return frame.render(body, [], bars.length === 0);
}

/** Points with optional labels, e.g. perplexity against parameter count (use logX). */
export function scatterChart(opts: ScatterChartOptions): string {
  const series = opts.series.map((s) => ({ name: s.name, points: s.points.filter((p) => usable(p.x, p.y, opts.logX)) }));
  const all = series.flatMap((s) => s.points);
  const frame = makeFrame(opts, series.map((s) => s.name), all.map((p) => p.x), all.map((p) => p.y), { logX: opts.logX });
  const body: string[] = [];
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    for (const p of s.points) {
      const cx = frame.sx(p.x);
      const cy = frame.sy(p.y);
      body.push(`<circle class="point" data-series="${i}" cx="${fmt(cx)}" cy="${fmt(cy)}" r="4" fill="${color}" fill-opacity="0.85"/>`);
      if (p.label) {
        // Labels near the right edge go on the left of the point so they stay inside.
        const right = cx < frame.left + frame.plotW * 0.8;
        body.push(
          `<text class="point-label" x="${fmt(cx + (right ? 6 : -6))}" y="${fmt(cy - 6)}" font-size="10" text-anchor="${right ? 'start' : 'end'}">${escapeXml(p.label)}</text>`,
        );
      }
    }
  });
  return frame.render(body, legendEntries(series.map((s) => s.name), 'dot'), all.length === 0);
}

// ---------------------------------------------------------------------------------------------

type LegendEntry = { name: string; color: string; mark: 'line' | 'dot' };

function legendEntries(names: string[], mark: 'line' | 'dot'): LegendEntry[] {
  // A single unnamed series needs no legend.
  if (names.length === 1 && names[0] === '') return [];
  return names.map((name, i) => ({ name, color: PALETTE[i % PALETTE.length], mark }));
}

interface Frame {
  left: number;
  top: number;
  plotW: number;
  plotH: number;
  yDomain: [number, number];
  sx(x: number): number;
  sy(y: number): number;
  render(body: string[], legend: LegendEntry[], empty: boolean): string;
}

interface FrameOptions {
  logX?: boolean;
  /** Categorical x axis with this many bands (bar charts): no x ticks. */
  band?: number;
  bottomExtra?: number;
  zeroY?: boolean;
}

function makeFrame(
  opts: ChartSize & { title: string; xLabel: string; yLabel: string },
  seriesNames: string[],
  xs: number[],
  ys: number[],
  fo: FrameOptions,
): Frame {
  const hasLegend = seriesNames.length > 1 || (seriesNames.length === 1 && seriesNames[0] !== '');
  const legendW = hasLegend ? 34 + 6.5 * seriesNames.reduce((m, n) => Math.max(m, n.length), 0) : 0;
  // Names of up to 28 characters fit beside the plot at the given width; longer ones widen the
  // chart, so neither is a name cut off nor the plot squeezed.
  const width = (opts.width ?? 640) + Math.max(0, legendW - 220);
  const height = opts.height ?? 400;
  const left = 72;
  const top = 44;
  const right = 20 + legendW;
  const bottom = (opts.xLabel ? 56 : 36) + (fo.bottomExtra ?? 0);
  const plotW = Math.max(40, width - left - right);
  const plotH = Math.max(40, height - top - bottom);

  const yTicks = niceTicks(...extent(ys, fo.zeroY));
  const yDomain: [number, number] = [yTicks[0], yTicks[yTicks.length - 1]];
  let xTicks: number[] = [];
  let xDomain: [number, number] = [0, 1];
  const logX = fo.logX === true;
  if (fo.band === undefined) {
    if (logX) {
      const [lo, hi] = xs.length > 0 ? [Math.min(...xs), Math.max(...xs)] : [1, 10];
      xTicks = logTicks(lo, hi);
      xDomain = [Math.min(xTicks[0], lo), Math.max(xTicks[xTicks.length - 1], hi)];
    } else {
      xTicks = niceTicks(...extent(xs, false));
      xDomain = [xTicks[0], xTicks[xTicks.length - 1]];
    }
  }
  const tx = (x: number): number => (logX ? Math.log10(x) : x);
  const [tx0, tx1] = [tx(xDomain[0]), tx(xDomain[1])];
  const sx = (x: number): number => left + ((tx(x) - tx0) / (tx1 - tx0)) * plotW;
  const sy = (y: number): number => top + plotH - ((y - yDomain[0]) / (yDomain[1] - yDomain[0])) * plotH;

  const render = (body: string[], legend: LegendEntry[], empty: boolean): string => {
    const out: string[] = [];
    out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
    out.push(`<title>${escapeXml(opts.title)}</title>`);
    out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
    out.push(`<text class="title" x="${left}" y="24" font-size="15" font-weight="bold">${escapeXml(opts.title)}</text>`);
    out.push(`<rect class="plot-area" x="${left}" y="${top}" width="${fmt(plotW)}" height="${fmt(plotH)}" fill="none"/>`);
    const grid: string[] = [];
    const yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;
    for (const t of yTicks) {
      const y = sy(t);
      grid.push(`<line x1="${left}" y1="${fmt(y)}" x2="${fmt(left + plotW)}" y2="${fmt(y)}" stroke="#e5e5e5"/>`);
      grid.push(`<line x1="${left - 4}" y1="${fmt(y)}" x2="${left}" y2="${fmt(y)}" stroke="#333333"/>`);
      grid.push(`<text class="tick" x="${left - 7}" y="${fmt(y + 4)}" text-anchor="end">${escapeXml(formatTick(t, yStep))}</text>`);
    }
    const xStep = xTicks.length > 1 ? xTicks[1] - xTicks[0] : 1;
    for (const t of xTicks) {
      const x = sx(t);
      if (x < left - 0.5 || x > left + plotW + 0.5) continue;
      grid.push(`<line x1="${fmt(x)}" y1="${top}" x2="${fmt(x)}" y2="${fmt(top + plotH)}" stroke="#f0f0f0"/>`);
      grid.push(`<line x1="${fmt(x)}" y1="${fmt(top + plotH)}" x2="${fmt(x)}" y2="${fmt(top + plotH + 4)}" stroke="#333333"/>`);
      const label = logX ? formatNumber(t) : formatTick(t, xStep);
      grid.push(`<text class="tick" x="${fmt(x)}" y="${fmt(top + plotH + 16)}" text-anchor="middle">${escapeXml(label)}</text>`);
    }
    out.push(`<g class="grid">${grid.join('')}</g>`);
    out.push(`<g class="axes" stroke="#333333"><line x1="${left}" y1="${fmt(top + plotH)}" x2="${fmt(left + plotW)}" y2="${fmt(top + plotH)}"/><line x1="${left}" y1="${top}" x2="${left}" y2="${fmt(top + plotH)}"/></g>`);
    if (opts.xLabel) {
      out.push(`<text class="x-label" x="${fmt(left + plotW / 2)}" y="${fmt(height - 12)}" text-anchor="middle">${escapeXml(opts.xLabel + (logX ? ' (log scale)' : ''))}</text>`);
    }
    out.push(`<text class="y-label" transform="translate(16 ${fmt(top + plotH / 2)}) rotate(-90)" text-anchor="middle">${escapeXml(opts.yLabel)}</text>`);
    out.push(`<g class="data">${body.join('')}</g>`);
    if (empty) out.push(`<text x="${fmt(left + plotW / 2)}" y="${fmt(top + plotH / 2)}" text-anchor="middle" fill="#999999">no data</text>`);
    if (legend.length > 0) {
      const lx = left + plotW + 16;
      const items = legend.map((e, i) => {
        const y = top + 8 + i * 18;
        const mark =
          e.mark === 'line'
            ? `<line x1="${fmt(lx)}" y1="${y}" x2="${fmt(lx + 18)}" y2="${y}" stroke="${e.color}" stroke-width="2"/>`
            : `<circle cx="${fmt(lx + 9)}" cy="${y}" r="4" fill="${e.color}"/>`;
        return `${mark}<text x="${fmt(lx + 24)}" y="${y + 4}">${escapeXml(e.name)}</text>`;
      });
      out.push(`<g class="legend">${items.join('')}</g>`);
    }
    out.push('</svg>');
    return out.join('\n');
  };
  return { left, top, plotW, plotH, yDomain, sx, sy, render };
}

function usable(x: number, y: number, logX?: boolean): boolean {
  return Number.isFinite(x) && Number.isFinite(y) && (!logX || x > 0);
}

function extent(values: number[], includeZero?: boolean): [number, number] {
  const vs = includeZero ? [0, ...values] : values;
  if (vs.length === 0) return [0, 1];
  return [Math.min(...vs), Math.max(...vs)];
}

/** A zero-width range becomes a small one around the value, so a scale can divide by it. */
function widen(min: number, max: number): [number, number] {
  if (max > min) return [min, max];
  const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
  return [min - pad, max + pad];
}

function niceStep(raw: number): number {
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw * (1 - 1e-9)) return m * mag;
  return 10 * mag;
}

/** Drops floating noise such as 0.30000000000000004. */
function clean(x: number): number {
  return Number(x.toPrecision(12));
}

function formatTick(v: number, step: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) return formatNumber(v);
  const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9) + (step / 10 ** Math.floor(Math.log10(step)) === 2.5 ? 1 : 0)));
  return v.toFixed(decimals);
}

/** Short human form: 1234.5 -> "1234.5", 2e9 -> "2e9", 0.000123 -> "1.23e-4". */
function formatNumber(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) {
    const [m, e] = v.toExponential(2).split('e');
    return `${String(Number(m))}e${Number(e)}`;
  }
  return String(Number(v.toPrecision(4)));
}

function fmt(x: number): string {
  return String(Math.round(x * 100) / 100);
}
