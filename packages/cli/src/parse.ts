// Option value parsers: each throws InvalidArgumentError with what was expected, which commander
// turns into a one-line usage error (exit 2).

import { InvalidArgumentError } from 'commander';

export function parseInteger(min: number, what = 'an integer'): (value: string) => number {
  return (value) => {
    const n = Number(value.trim());
    if (value.trim() === '' || !Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`expected ${what}${min > Number.MIN_SAFE_INTEGER ? ` >= ${min}` : ''}, got '${value}'`);
    }
    return n;
  };
}

export const parsePositiveInt = parseInteger(1, 'an integer');
export const parseNonNegativeInt = parseInteger(0, 'an integer');

export function parseNumber(opts: { min?: number; max?: number; exclusiveMin?: boolean } = {}): (value: string) => number {
  return (value) => {
    const n = Number(value.trim());
    const low = opts.min === undefined ? true : opts.exclusiveMin ? n > opts.min : n >= opts.min;
    const high = opts.max === undefined || n <= opts.max;
    if (value.trim() === '' || !Number.isFinite(n) || !low || !high) {
      const range = [opts.min !== undefined ? `${opts.exclusiveMin ? '>' : '>='} ${opts.min}` : '', opts.max !== undefined ? `<= ${opts.max}` : '']
        .filter((s) => s)
        .join(' and ');
      throw new InvalidArgumentError(`expected a number${range ? ` ${range}` : ''}, got '${value}'`);
    }
    return n;
  };
}

/** "a,b,c" -> ['a', 'b', 'c'], each checked against `allowed` when given. */
export function parseList(allowed?: readonly string[]): (value: string) => string[] {
  return (value) => {
    const items = value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
    if (items.length === 0) throw new InvalidArgumentError(`expected a comma-separated list, got '${value}'`);
    if (allowed) {
      const bad = items.filter((s) => !allowed.includes(s));
      if (bad.length > 0) throw new InvalidArgumentError(`unknown ${bad.map((b) => `'${b}'`).join(', ')}; expected some of ${allowed.join(', ')}`);
    }
    return items;
  };
}

/** "256x256x256,1024x1024x1024" -> [[256, 256, 256], [1024, 1024, 1024]] (m x k x n). */
export function parseShapes(value: string): [number, number, number][] {
  const shapes = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      const dims = s.split(/x/i).map((d) => Number(d));
      if (dims.length !== 3 || !dims.every((d) => Number.isSafeInteger(d) && d >= 1)) {
        throw new InvalidArgumentError(`expected shapes like 256x512x1024 (m x k x n), comma-separated, got '${s}'`);
      }
      return dims as [number, number, number];
    });
  if (shapes.length === 0) throw new InvalidArgumentError(`expected at least one shape like 256x512x1024, got '${value}'`);
  return shapes;
}

/** One of `allowed`, e.g. parseChoice(['aggressive', 'weighted']). */
export function parseChoice<T extends string>(allowed: readonly T[]): (value: string) => T {
  return (value) => {
    const v = value.trim() as T;
    if (!allowed.includes(v)) throw new InvalidArgumentError(`expected one of ${allowed.join(', ')}, got '${value}'`);
    return v;
  };
}
