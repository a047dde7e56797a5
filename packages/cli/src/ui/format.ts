// Number, duration and table formatting for human-readable output.

/** 1_066_016_768 -> "1.07 B": the paper reports parameter counts in billions with 2 decimals. */
export function formatBillions(n: number): string {
  return `${(n / 1e9).toFixed(2)} B`;
}

/**
 * A parameter count in the unit its size calls for, 2 decimals: 1_066_016_768 -> "1.07 B",
 * 4_459_776 -> "4.46 M", 2_048 -> "2.05 K", 512 -> "512".
 */
export function formatParamCount(n: number, unit: ParamUnit = paramUnit(n)): string {
  const scale = { B: 1e9, M: 1e6, K: 1e3, '': 1 }[unit];
  const shown = unit === '' ? String(Math.round(n)) : `${(n / scale).toFixed(2)} ${unit}`;
  // A count too small for the unit asked for gets its own rather than reading as zero.
  return n !== 0 && /^-?0\.00 /.test(shown) ? formatParamCount(n) : shown;
}

export type ParamUnit = 'B' | 'M' | 'K' | '';

/** The unit formatParamCount picks for n: B from 1e9, M from 1e6, K from 1e3. */
export function paramUnit(n: number): ParamUnit {
  const abs = Math.abs(n);
  return abs >= 1e9 ? 'B' : abs >= 1e6 ? 'M' : abs >= 1e3 ? 'K' : '';
}

/** 1066016768 -> "1,066,016,768". */
export function formatInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** 12345 -> "12.3k", 1.5e6 -> "1.50M": for rates. */
export function formatCompact(n: number): string {
  if (!Number.isFinite(n)) return '-';
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  if (a >= 100) return n.toFixed(0);
  return n.toFixed(1);
}

/** Seconds -> "42s", "3m05s", "1h02m"; "--" when unknown. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  return `${h}h${String(m % 60).padStart(2, '0')}m`;
}

/** Bytes -> "1.5 GiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/**
 * Aligned plain-text table. `align` gives 'l' or 'r' per column (default: right for cells that
 * look numeric, left otherwise).
 */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[], align?: readonly ('l' | 'r')[]): string[] {
  const cols = header.length;
  const widths = Array.from({ length: cols }, (_, c) => Math.max(header[c]!.length, ...rows.map((r) => (r[c] ?? '').length)));
  const numeric = (s: string) => /^[-+]?[\d.,]+(e[-+]?\d+)?\s*[%a-zA-Z/]*$/.test(s.trim());
  const alignOf = (c: number) => align?.[c] ?? (rows.length > 0 && rows.every((r) => (r[c] ?? '') === '' || numeric(r[c]!)) ? 'r' : 'l');
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, c) => (alignOf(c) === 'r' ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map((r) => line(Array.from({ length: cols }, (_, c) => r[c] ?? '')))];
}
