// `--config file.json`: option values from a JSON file, overridden by flags given on the command
// line. Keys are option names in camelCase or kebab-case ("lr", "maxSteps" or "max-steps").

import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command, type Option } from 'commander';
import { UsageError } from './errors.js';

/** A JSON file's parsed contents; a missing file is bad usage, a malformed one a failure. */
export function readJsonFile(path: string, shownAs = path): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UsageError(`${shownAs}: no such file`);
    if (code === 'EISDIR') throw new UsageError(`${shownAs}: is a directory, expected a JSON file`);
    throw new Error(`${shownAs}: cannot read: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new Error(`${shownAs}: not valid JSON: ${(err as Error).message}`);
  }
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const camel = (key: string) => key.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** The command and its ancestors, nearest first: a file may set global options too. */
function lineage(cmd: Command): Command[] {
  const out: Command[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) out.push(c);
  return out;
}

function findOption(cmd: Command, key: string): { owner: Command; option: Option } | undefined {
  const attr = camel(key);
  for (const owner of lineage(cmd)) {
    const option = owner.options.find((o) => o.attributeName() === attr || o.long === `--${key}`);
    if (option) return { owner, option };
  }
  return undefined;
}

/**
 * Sets option values from `values` wherever the command line did not give that option.
 * Values pass through the option's own parser and choices, so a file is checked like a flag.
 * Throws UsageError naming the file and key on an unknown key or a bad value.
 */
export function applyConfigValues(cmd: Command, values: Record<string, unknown>, source: string, skip: readonly string[] = ['config']): void {
  for (const [key, value] of Object.entries(values)) {
    if (skip.includes(key)) continue;
    const found = findOption(cmd, key);
    if (!found || found.option.hidden) {
      const known = lineage(cmd)
        .flatMap((c) => c.options.filter((o) => !o.hidden && o.long && !skip.includes(o.attributeName())).map((o) => o.attributeName()))
        .filter((k) => k !== 'help' && k !== 'version');
      throw new UsageError(`${source}: unknown key "${key}"; known keys: ${known.join(', ')}`);
    }
    const { owner, option } = found;
    const attr = option.attributeName();
    const from = owner.getOptionValueSource(attr);
    if (from === 'cli' || from === 'env') continue;
    owner.setOptionValueWithSource(attr, parseConfigValue(option, key, value, source), 'config');
  }
}

function parseConfigValue(option: Option, key: string, value: unknown, source: string): unknown {
  const takesValue = option.required || option.optional;
  if (!takesValue) {
    if (typeof value !== 'boolean') throw new UsageError(`${source}: "${key}" must be true or false, got ${JSON.stringify(value)}`);
    return value;
  }
  let text: string;
  if (typeof value === 'string') text = value;
  else if (typeof value === 'number' || typeof value === 'boolean') text = String(value);
  else if (Array.isArray(value) && value.every((v) => typeof v === 'string' || typeof v === 'number')) text = value.join(',');
  else throw new UsageError(`${source}: "${key}" must be a string, number or list, got ${JSON.stringify(value)}`);
  if (option.argChoices && !option.argChoices.includes(text)) {
    throw new UsageError(`${source}: "${key}" must be one of ${option.argChoices.join(', ')}, got ${JSON.stringify(value)}`);
  }
  if (!option.parseArg) return text;
  try {
    return option.parseArg(text, undefined);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new UsageError(`${source}: "${key}": ${err.message}`);
    throw err;
  }
}
