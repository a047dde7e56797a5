import { describe, expect, it } from 'vitest';
import { formatBillions, formatCompact, formatDuration, formatParamCount, formatTable } from './ui/format.js';
import { StringStream } from './ui/io.js';
import { ProgressBar } from './ui/progress.js';

function clock() {
  let t = 0;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('ProgressBar', () => {
  it('shows done/total, tokens/s, the running loss and the ETA', () => {
    const c = clock();
    const stream = new StringStream(true, 120);
    const bar = new ProgressBar({ total: 100, unit: 'step', label: 'train', stream, enabled: true, now: c.now, minIntervalMs: 0 });
    c.advance(10_000);
    bar.update(25, { tokens: 50_000, loss: 2 });
    const text = bar.render(120, c.now());
    expect(text).toContain(' 25% [');
    expect(text).toContain('25/100 steps');
    expect(text).toContain('5000 tok/s');
    expect(text).toContain('loss 2.0000');
    expect(text).toContain('ETA 30s');
    expect(stream.text.startsWith('\r\x1b[2K')).toBe(true);
    expect(text.length).toBeLessThan(120);
  });

  it('smooths the loss and measures rates from where a resumed run started', () => {
    const c = clock();
    const bar = new ProgressBar({ total: 200, start: 100, stream: new StringStream(), enabled: false, now: c.now, lossSmoothing: 0.5 });
    c.advance(2_000);
    bar.update(110, { loss: 4 });
    bar.update(120, { loss: 2 });
    expect(bar.loss).toBe(3);
    // 20 steps in 2 s: 80 left take 8 s.
    expect(bar.render(100, c.now())).toContain('ETA 8s');
  });

  it('writes nothing when disabled (no TTY, --quiet)', () => {
    const stream = new StringStream();
    const bar = new ProgressBar({ total: 3, stream, enabled: false });
    bar.update(1, { loss: 1 });
    bar.update(3);
    bar.finish();
    expect(stream.text).toBe('');
  });

  it('fits narrow terminals', () => {
    const bar = new ProgressBar({ total: 1000, stream: new StringStream(), enabled: false, now: () => 0 });
    expect(bar.render(40, 1000).length).toBeLessThanOrEqual(39);
  });
});

describe('format', () => {
  it('billions with 2 decimals, compact rates, durations', () => {
    expect(formatBillions(1_066_016_768)).toBe('1.07 B');
    expect(formatCompact(12_345)).toBe('12.3k');
    expect(formatCompact(2_500_000)).toBe('2.50M');
    expect(formatDuration(42)).toBe('42s');
    expect(formatDuration(185)).toBe('3m05s');
    expect(formatDuration(3720)).toBe('1h02m');
    expect(formatDuration(Number.NaN)).toBe('--');
  });

  it('tables align numbers right and text left', () => {
    expect(formatTable(['name', 'n'], [['a', '1'], ['bbb', '100']])).toEqual(['name    n', '----  ---', 'a       1', 'bbb   100']);
  });
});

describe('formatParamCount', () => {
  it('picks K, M or B by size', () => {
    expect(formatParamCount(1_066_016_768)).toBe('1.07 B');
    expect(formatParamCount(4_459_776)).toBe('4.46 M');
    expect(formatParamCount(2_048)).toBe('2.05 K');
    expect(formatParamCount(512)).toBe('512');
    expect(formatParamCount(0)).toBe('0');
    // A unit asked for (a table's), unless the count would read as zero in it.
    expect(formatParamCount(990_940_000, 'B')).toBe('0.99 B');
    expect(formatParamCount(419_328, 'B')).toBe('419.33 K');
  });
});
