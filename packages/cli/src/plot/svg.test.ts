import { describe, expect, it } from 'vitest';
import { barChart, escapeXml, lineChart, logTicks, niceTicks, scatterChart } from './svg.js';

/** Minimal well-formedness check: balanced tags, quoted attributes, no stray '<', '>' or '&'. */
function checkXml(svg: string): void {
  const stack: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (const m of svg.matchAll(tag)) {
    const text = svg.slice(last, m.index);
    expect(text).not.toMatch(/[<>]/);
    expect(text).not.toMatch(/&(?!(amp|lt|gt|quot|apos);)/);
    for (const attr of m[3].matchAll(/="([^"]*)"/g)) expect(attr[1]).not.toMatch(/&(?!(amp|lt|gt|quot|apos);)|>/);
    last = m.index! + m[0].length;
    const [, close, name, , selfClose] = m;
    if (close) expect(stack.pop()).toBe(name);
    else if (!selfClose) stack.push(name);
  }
  expect(svg.slice(last).trim()).toBe('');
  expect(stack).toEqual([]);
  expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
}

function plotArea(svg: string): { x: number; y: number; w: number; h: number } {
  const m = /class="plot-area" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"/.exec(svg)!;
  return { x: Number(m[1]), y: Number(m[2]), w: Number(m[3]), h: Number(m[4]) };
}

function points(svg: string): { cx: number; cy: number; series: number }[] {
  return [...svg.matchAll(/class="point" data-series="(\d+)" cx="([-\d.]+)" cy="([-\d.]+)"/g)].map((m) => ({
    series: Number(m[1]),
    cx: Number(m[2]),
    cy: Number(m[3]),
  }));
}

function expectInside(svg: string): void {
  const a = plotArea(svg);
  for (const p of points(svg)) {
    expect(p.cx).toBeGreaterThanOrEqual(a.x - 1e-6);
    expect(p.cx).toBeLessThanOrEqual(a.x + a.w + 1e-6);
    expect(p.cy).toBeGreaterThanOrEqual(a.y - 1e-6);
    expect(p.cy).toBeLessThanOrEqual(a.y + a.h + 1e-6);
  }
}

describe('ticks', () => {
  it('nice ticks cover the range with round steps', () => {
    expect(niceTicks(0, 10)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(0.1, 0.95)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(3, 3).length).toBeGreaterThan(1);
    const t = niceTicks(-7.3, 123.4);
    expect(t[0]).toBeLessThanOrEqual(-7.3);
    expect(t[t.length - 1]).toBeGreaterThanOrEqual(123.4);
  });
  it('log ticks are decades, with 2 and 5 on short ranges', () => {
    expect(logTicks(2e8, 9e8)).toEqual([2e8, 5e8, 1e9]);
    expect(logTicks(0.97e9, 1.99e9)).toEqual([5e8, 1e9, 2e9]);
    expect(logTicks(3, 3)).toEqual([2, 5]);
    expect(logTicks(1, 1e6)).toEqual([1, 10, 100, 1000, 1e4, 1e5, 1e6]);
  });
});

describe('lineChart', () => {
  const svg = lineChart({
    title: 'Loss vs step',
    xLabel: 'step',
    yLabel: 'loss',
    series: [
      { name: 'train', points: [[0, 4.2], [100, 3.1], [200, 2.7], [300, 2.5]] },
      { name: 'eval', points: [[0, 4.3], [150, 3.3], [300, 2.9], [400, NaN]] },
    ],
  });

  it('is well-formed with title, labels, ticks and a legend', () => {
    checkXml(svg);
    expect(svg).toContain('Loss vs step');
    expect(svg).toContain('class="x-label"');
    expect(svg).toContain('class="y-label"');
    expect(svg).toMatch(/<g class="legend">.*train.*eval/);
    expect([...svg.matchAll(/class="tick"/g)].length).toBeGreaterThan(6);
    expect([...svg.matchAll(/<polyline/g)]).toHaveLength(2);
  });

  it('maps points into the plot area, ordered like the data', () => {
    const ps = points(svg);
    expect(ps).toHaveLength(7); // the NaN point is dropped
    expectInside(svg);
    const train = ps.filter((p) => p.series === 0);
    for (let i = 1; i < train.length; i++) {
      expect(train[i].cx).toBeGreaterThan(train[i - 1].cx);
      expect(train[i].cy).toBeGreaterThan(train[i - 1].cy); // lower loss is lower on screen (larger y)
    }
  });

  it('puts x on a log scale when asked, dropping x <= 0', () => {
    const log = lineChart({ title: 't', xLabel: 'tokens', yLabel: 'y', logX: true, series: [{ name: 's', points: [[0, 1], [10, 1], [100, 2], [1000, 3]] }] });
    checkXml(log);
    const ps = points(log);
    expect(ps).toHaveLength(3);
    expect(ps[1].cx - ps[0].cx).toBeCloseTo(ps[2].cx - ps[1].cx, 1);
    expect(log).toContain('(log scale)');
    expectInside(log);
  });

  it('handles no data and a single point', () => {
    checkXml(lineChart({ title: 'empty', xLabel: 'x', yLabel: 'y', series: [] }));
    expect(lineChart({ title: 'empty', xLabel: 'x', yLabel: 'y', series: [] })).toContain('no data');
    const one = lineChart({ title: 'one', xLabel: 'x', yLabel: 'y', series: [{ name: 'a', points: [[5, 5]] }] });
    checkXml(one);
    expectInside(one);
  });
});

describe('legends', () => {
  it('a chart widens for long series names: the plot keeps its width and every name fits', () => {
    const chart = (name: string): string => lineChart({ title: 'Loss', xLabel: 'step', yLabel: 'loss', series: [{ name, points: [[0, 2], [1, 1.5]] }, { name: 'b', points: [[0, 1.8], [1, 1.2]] }] });
    const short = chart('twenty-eight characters long'.slice(0, 28));
    const long = chart('recursive, aggressive CE + KD, nothing frozen');
    const widthOf = (svg: string): number => Number(/<svg [^>]*width="([\d.]+)"/.exec(svg)![1]);
    expect(widthOf(short)).toBe(640);
    expect(widthOf(long)).toBeGreaterThan(640);
    // However long the names, the plot keeps the width it has with the longest that fit.
    const longer = chart(`${'recursive, aggressive CE + KD, nothing frozen'} (and more)`);
    expect(widthOf(longer)).toBeGreaterThan(widthOf(long));
    expect(plotArea(longer).w).toBeCloseTo(plotArea(long).w, 6);
    expect(plotArea(long).w).toBeGreaterThan(plotArea(short).w - 30);
    // The legend's text starts at x and runs about 6.5 px per character.
    const [, x, text] = /<text x="([\d.]+)" y="[\d.]+">(recursive[^<]*)</.exec(long)!;
    expect(Number(x) + 6.5 * text.length).toBeLessThanOrEqual(widthOf(long));
  });
});

describe('barChart', () => {
  it('draws bars from zero, heights proportional to values', () => {
    const svg = barChart({ title: 'Throughput', yLabel: 'tokens/s', bars: [{ label: 'vanilla', value: 1080 }, { label: 'CDB', value: 2877 }, { label: 'r=64', value: 2157 }] });
    checkXml(svg);
    const bars = [...svg.matchAll(/class="bar" data-value="([-\d.]+)" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"/g)].map((m) => ({
      value: Number(m[1]),
      y: Number(m[3]),
      h: Number(m[5]),
    }));
    expect(bars).toHaveLength(3);
    expect(bars[1].h / bars[0].h).toBeCloseTo(2877 / 1080, 1);
    const a = plotArea(svg);
    for (const b of bars) expect(b.y + b.h).toBeCloseTo(a.y + a.h, 1); // all sit on the zero line
    expect(svg).toContain('>2877<');
    expect(svg).toContain('class="bar-label"');
  });

  it('grows taller for labels too long for the margin: nothing is cut off and the plot keeps its height', () => {
    const chart = (label: string): string => barChart({ title: 'Perplexity', yLabel: 'ppl', bars: [{ label: 'teacher', value: 16.6 }, { label, value: 21.3 }] });
    const short = chart('a label of exactly thirty chars'.slice(0, 30));
    const long = chart('recursive, after early-exit post-training (aggressive)');
    const heightOf = (svg: string): number => Number(/<svg [^>]*height="([\d.]+)"/.exec(svg)![1]);
    expect(heightOf(short)).toBe(400);
    expect(heightOf(long)).toBeGreaterThan(400);
    expect(plotArea(long).h).toBeCloseTo(plotArea(short).h, 6);
    // The rotated label's far end (about 3.5 px down per character at -35 degrees) stays inside.
    const [, ly, text] = /translate\([\d.]+ ([\d.]+)\) rotate\(-35\)" text-anchor="end">(recursive[^<]*)</.exec(long)!;
    expect(Number(ly) + text.length * 6 * Math.sin((35 * Math.PI) / 180)).toBeLessThanOrEqual(heightOf(long));
  });

  it('handles negative values and many long labels', () => {
    const svg = barChart({
      title: 'Delta',
      yLabel: 'points',
      bars: Array.from({ length: 9 }, (_, i) => ({ label: `a rather long label ${i}`, value: i - 4 })),
    });
    checkXml(svg);
    expect(svg).toContain('rotate(-35)');
    const a = plotArea(svg);
    for (const m of svg.matchAll(/class="bar" data-value="[-\d.]+" x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"/g)) {
      expect(Number(m[1])).toBeGreaterThanOrEqual(a.y - 1e-6);
      expect(Number(m[1]) + Number(m[2])).toBeLessThanOrEqual(a.y + a.h + 1e-6);
    }
  });
});

describe('scatterChart', () => {
  const svg = scatterChart({
    title: 'Perplexity vs parameters',
    xLabel: 'non-embedding parameters',
    yLabel: 'perplexity',
    logX: true,
    series: [
      { name: 'recursive', points: [{ x: 0.99e9, y: 12.1, label: 'Recursive 1B' }, { x: 1.07e9, y: 11.5, label: 'r=64' }] },
      { name: 'full <baseline>', points: [{ x: 1.99e9, y: 10.2, label: 'Gemma "2B" & co' }] },
    ],
  });

  it('labels points, escapes text and keeps points inside', () => {
    checkXml(svg);
    expect(svg).toContain('Recursive 1B');
    expect(svg).toContain('Gemma &quot;2B&quot; &amp; co');
    expect(svg).toContain('full &lt;baseline&gt;');
    expect(points(svg)).toHaveLength(3);
    expectInside(svg);
    // Fewer parameters sit further left.
    const [a, b, c] = points(svg);
    expect(a.cx).toBeLessThan(b.cx);
    expect(b.cx).toBeLessThan(c.cx);
  });

  it('escapes the title and axis labels', () => {
    const s = scatterChart({ title: '<script>&', xLabel: 'x > 0', yLabel: "y's", series: [{ name: 'a', points: [{ x: 1, y: 1 }] }] });
    checkXml(s);
    expect(s).not.toContain('<script>');
    expect(s).toContain('&lt;script&gt;&amp;');
    expect(escapeXml(`<&>"'`)).toBe('&lt;&amp;&gt;&quot;&apos;');
  });
});
