// Fuzzing the PEFT adapter reader: whatever adapter_config.json and adapter_model.safetensors
// hold, loadAdapters attaches a valid adapter or throws an RrtError (FormatError / ShapeError)
// naming the file; it never crashes, never hangs on a regex from the file, and never allocates
// more than the file's own bytes.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FormatError, RrtError } from '@rrt/tensor';
import { toRecursive } from '@rrt/recursive';
import { loadAdapters, saveAdapters } from './peft.js';
import { relax } from './relax.js';
import { loadFixture } from './testing.test-util.js';

const RUNS = 150;
const original = loadFixture('llama');
const model = toRecursive(original, { loops: 2 }).model;
const good = mkdtempSync(join(tmpdir(), 'rrt-peft-fuzz-'));
{
  const lora = relax(toRecursive(original, { loops: 2 }).model, { rank: 2, init: 'zero', targets: ['q', 'o'] });
  saveAdapters(lora, good);
}
const goodConfigText = readFileSync(join(good, 'adapter_config.json'), 'utf8');
const goodConfig = JSON.parse(goodConfigText) as Record<string, unknown>;
const goodWeights = new Uint8Array(readFileSync(join(good, 'adapter_model.safetensors')));

/** Writes a folder and loads it onto the shared model; an accepted adapter is removed again. */
function loadsOrRrtError(config: string, weights: Uint8Array): 'loaded' | 'refused' {
  const dir = mkdtempSync(join(tmpdir(), 'rrt-peft-case-'));
  writeFileSync(join(dir, 'adapter_config.json'), config);
  writeFileSync(join(dir, 'adapter_model.safetensors'), weights);
  try {
    const handle = loadAdapters(dir, model);
    for (const m of handle.modules) expect(m.pair.rank).toBeGreaterThan(0);
    handle.remove();
    return 'loaded';
  } catch (e) {
    if (!(e instanceof RrtError)) throw e;
    expect(e.message).toContain(dir);
    return 'refused';
  }
}

const oddValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(Infinity, -Infinity, NaN, -1, 0, 0.5, 2 ** 53, 1e300, '8', '', null, true, [], {}, ['q_proj'], '(a+)+$', '.*', '(q|qq)*_proj'),
);

describe('PEFT adapter reader fuzz', () => {
  it('the untouched folder loads', () => {
    expect(loadsOrRrtError(goodConfigText, goodWeights)).toBe('loaded');
  });

  it('adapter_config.json with a key replaced (NaN, Infinity, strings, regexes) loads or raises RrtError', () => {
    const keys = [...Object.keys(goodConfig), '__proto__', 'constructor'];
    fc.assert(
      fc.property(fc.nat(), oddValue, (pick, value) => {
        const key = keys[pick % keys.length]!;
        // Built as text so "__proto__" stays an own key and Infinity/NaN reach the reader as 1e999 / strings would.
        const rest = Object.fromEntries(Object.entries(goodConfig).filter(([k]) => k !== key));
        const literal = typeof value === 'number' && !Number.isFinite(value) ? (Number.isNaN(value) ? '"NaN"' : value > 0 ? '1e999' : '-1e999') : JSON.stringify(value);
        const text = JSON.stringify(rest).replace(/^\{/, `{${JSON.stringify(key)}: ${literal}, `);
        loadsOrRrtError(text, goodWeights);
        expect(({} as Record<string, unknown>).r).toBeUndefined();
      }),
      { numRuns: RUNS },
    );
  });

  it('random bytes and truncations of either file raise RrtError', () => {
    fc.assert(
      fc.property(fc.boolean(), fc.nat(), fc.uint8Array({ maxLength: 64 }), fc.boolean(), (configFile, cut, junk, truncate) => {
        const base = configFile ? new TextEncoder().encode(goodConfigText) : goodWeights;
        const k = cut % base.length;
        const bytes = truncate ? base.subarray(0, k) : junk;
        const text = Buffer.from(bytes).toString('utf8');
        const result = configFile ? loadsOrRrtError(text, goodWeights) : loadsOrRrtError(goodConfigText, bytes);
        // Cutting only the config's trailing newline leaves the same JSON, which must load.
        const intact = configFile && truncate && text.trimEnd() === goodConfigText.trimEnd();
        expect(result).toBe(intact ? 'loaded' : 'refused');
      }),
      { numRuns: RUNS },
    );
  });

  it('corrupted safetensors headers (absurd shapes, bad offsets, unknown dtypes) raise RrtError', () => {
    const n = new DataView(goodWeights.buffer, goodWeights.byteOffset).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(goodWeights.subarray(8, 8 + n))) as Record<string, Record<string, unknown>>;
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    const field = fc.constantFrom('dtype', 'shape', 'data_offsets');
    const value = fc.oneof(
      fc.constantFrom('F64', 'I8', 'X', 'F32', [1e6, 1e6], [1_000_000, 1_000_000], [0, 0], [-1, 1], [2, 32], [32, 2], [0, 1e15], [1e15, 1e15 + 4]),
      fc.array(fc.integer({ min: -1, max: 40 }), { maxLength: 3 }),
    );
    fc.assert(
      fc.property(fc.nat(), field, value, (pick, f, v) => {
        const h = structuredClone(header);
        h[names[pick % names.length]!]![f] = v;
        const json = new TextEncoder().encode(JSON.stringify(h));
        const data = goodWeights.subarray(8 + n);
        const out = new Uint8Array(8 + json.length + data.length);
        new DataView(out.buffer).setUint32(0, json.length, true);
        out.set(json, 8);
        out.set(data, 8 + json.length);
        const before = process.memoryUsage().arrayBuffers;
        loadsOrRrtError(goodConfigText, out);
        expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 << 20);
      }),
      { numRuns: RUNS },
    );
  });

  it('dangerous regexes in target_modules or pattern keys are refused before they run', () => {
    for (const [key, value] of [
      ['target_modules', '(a+)+$'],
      ['target_modules', '(.*a){12}'],
      ['rank_pattern', { '(q|qq)*_proj': 2 }],
      ['alpha_pattern', { '(.+)+x': 4 }],
    ] as const) {
      const dir = mkdtempSync(join(tmpdir(), 'rrt-peft-re-'));
      writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...goodConfig, [key]: value }));
      writeFileSync(join(dir, 'adapter_model.safetensors'), goodWeights);
      const start = performance.now();
      expect(() => loadAdapters(dir, model), key).toThrow(FormatError);
      expect(() => loadAdapters(dir, model), key).toThrow(new RegExp(`"${key}"`));
      expect(performance.now() - start).toBeLessThan(5000);
    }
  });
});
