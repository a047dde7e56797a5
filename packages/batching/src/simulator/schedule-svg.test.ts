import { describe, expect, it } from 'vitest';
import { RrtError } from '@rrt/tensor';
import { constantCost, geometricExit, makeRequests, scheduleToSvg, simulate } from './index.js';

/** Minimal well-formedness check: balanced tags, quoted attributes, no stray '<' or '&'. */
function checkXml(svg: string): void {
  const stack: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (const m of svg.matchAll(tag)) {
    const text = svg.slice(last, m.index);
    expect(text).not.toMatch(/[<>]/);
    expect(text).not.toMatch(/&(?!(amp|lt|gt|quot|apos);)/);
    last = m.index! + m[0].length;
    const [, close, name, , selfClose] = m;
    if (close) expect(stack.pop()).toBe(name);
    else if (!selfClose) stack.push(name);
  }
  expect(svg.slice(last).trim()).toBe('');
  expect(stack).toEqual([]);
  expect(svg.startsWith('<svg')).toBe(true);
}

/** The cell runs drawn in the depth paths: "M x y h w v h h -w z" each. */
function cellRuns(svg: string): { x: number; y: number; w: number; h: number }[] {
  const out: { x: number; y: number; w: number; h: number }[] = [];
  for (const p of svg.matchAll(/<path data-depth="[^"]+" fill="[^"]+" d="([^"]*)"/g)) {
    for (const m of p[1].matchAll(/M([\d.]+) ([\d.]+)h([\d.]+)v([\d.]+)h-[\d.]+z/g)) {
      out.push({ x: Number(m[1]), y: Number(m[2]), w: Number(m[3]), h: Number(m[4]) });
    }
  }
  return out;
}

describe('scheduleToSvg', () => {
  const requests = makeRequests({ count: 12, prefixLength: 4, decodeLength: { min: 2, max: 9 }, seed: 5 });
  const run = simulate({ scheduler: 'depthwise', loops: 3, maxBatch: 4, cost: constantCost(1), requests, exitDistribution: geometricExit(3, 0.4), seed: 5 });

  it('renders a well-formed SVG with a legend per depth and axis labels', () => {
    const svg = scheduleToSvg(run.trace);
    checkXml(svg);
    for (const label of ['loop 1', 'loop 2', 'loop 3', 'prefill', 'idle slot', 'step (one batched call)', 'batch slot']) expect(svg).toContain(label);
    expect(svg).toContain('continuous depth-wise batching');
    const depths = [...svg.matchAll(/<path data-depth="([^"]+)" fill="[^"]+" d="/g)].map((c) => c[1]);
    expect(depths).toEqual(['0', '1', '2', 'prefill']);
  });

  it('draws the prompt items of a mixed call (token -1) as prefill, its decode items by depth', () => {
    const trace = {
      scheduler: 'depthwise', loops: 2, maxBatch: 2, totalSteps: 1, truncated: false,
      steps: [{ step: 0, time: 0, duration: 1, kind: 'mixed' as const, items: [{ request: 0, token: 3, depth: 1, slot: 0 }, { request: 1, token: -1, depth: 0, slot: 1 }] }],
    };
    const depths = [...scheduleToSvg(trace).matchAll(/<path data-depth="([^"]+)" fill="[^"]+" d="/g)].map((c) => c[1]);
    expect(depths).toEqual(['1', 'prefill']);
  });

  it('covers exactly the traced items (merged runs add up to the item count)', () => {
    const svg = scheduleToSvg(run.trace, { cellWidth: 10, cellHeight: 10 });
    const runs = cellRuns(svg);
    const items = run.trace.steps.reduce((a, s) => a + s.items.length, 0);
    expect(runs.every((r) => r.h === 10)).toBe(true);
    expect(runs.reduce((a, r) => a + r.w, 0) / 10).toBe(items);
  });

  it('draws at most maxSteps calls and says which', () => {
    const svg = scheduleToSvg(run.trace, { maxSteps: 5, firstStep: 3, cellWidth: 10 });
    checkXml(svg);
    expect(svg).toContain(`calls 3-7 of ${run.trace.totalSteps}`);
    const plot = /class="plot-area" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"/.exec(svg)!;
    const [x0, w] = [Number(plot[1]), Number(plot[2])];
    expect(w).toBe(50);
    const runs = cellRuns(svg);
    expect(runs.length).toBeGreaterThan(0);
    const area = /class="plot-area" x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"/.exec(svg)!;
    const [y0, h] = [Number(area[1]), Number(area[2])];
    for (const r of runs) {
      expect(r.x).toBeGreaterThanOrEqual(x0);
      expect(r.x + r.w).toBeLessThanOrEqual(x0 + w + 1e-9);
      expect(r.y).toBeGreaterThanOrEqual(y0);
      expect(r.y + r.h).toBeLessThanOrEqual(y0 + h + 1e-9);
    }
    // The default cap keeps a long run's file small.
    const long = simulate({ scheduler: 'sequence', loops: 2, maxBatch: 8, cost: constantCost(1), requests: makeRequests({ count: 40, prefixLength: 0, decodeLength: 50 }) });
    expect(long.trace.totalSteps).toBeGreaterThan(200);
    const capped = scheduleToSvg(long.trace);
    expect(capped).toContain(`calls 0-199 of ${long.trace.totalSteps}`);
    expect(capped.length).toBeLessThan(100_000);
  });

  it('escapes the title and rejects bad options', () => {
    const svg = scheduleToSvg(run.trace, { title: 'a < b & "c"' });
    checkXml(svg);
    expect(svg).toContain('a &lt; b &amp; &quot;c&quot;');
    expect(() => scheduleToSvg(run.trace, { maxSteps: 0 })).toThrow(RrtError);
  });

  it('handles a one-loop model and an empty trace', () => {
    const vanilla = simulate({ scheduler: 'static', loops: 1, maxBatch: 3, cost: constantCost(1), requests });
    const svg = scheduleToSvg(vanilla.trace);
    checkXml(svg);
    expect(svg).toContain('model call');
    const empty = simulate({ scheduler: 'static', loops: 1, maxBatch: 3, cost: constantCost(1), requests: [] });
    checkXml(scheduleToSvg(empty.trace));
  });
});
