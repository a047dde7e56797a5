// Fuzzing config.json parsing: whatever a file holds, parseHfConfig returns a config whose sizes
// are all usable numbers, or throws a FormatError that names the file; it never crashes, never
// reads through a prototype and never pollutes one.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FormatError, RrtError, backendByName } from '@rrt/tensor';
import { type ModelConfig, parseHfConfig } from './config.js';
import { loadPretrained } from './checkpoint.js';

const RUNS = 300;
const fixtures = join(import.meta.dirname, '..', 'test', 'fixtures');
const FAMILIES = ['llama', 'gemma', 'gpt_neox', 'gpt2'] as const;
const texts = FAMILIES.map((f) => readFileSync(join(fixtures, f, 'config.json'), 'utf8'));
const docs = texts.map((t) => JSON.parse(t) as Record<string, unknown>);

const INT_FIELDS = ['vocabSize', 'hiddenSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'intermediateSize', 'maxPositions'] as const;

/** A parsed config must be usable: every size a positive safe integer, every float finite. */
function checkUsable(cfg: ModelConfig): void {
  for (const f of INT_FIELDS) expect(Number.isSafeInteger(cfg[f]) && cfg[f] > 0, `${f} = ${cfg[f]}`).toBe(true);
  for (const f of ['normEps', 'ropeTheta', 'rotaryPct', 'embeddingScale'] as const) expect(Number.isFinite(cfg[f]), `${f} = ${cfg[f]}`).toBe(true);
  expect(cfg.numHeads % cfg.numKvHeads).toBe(0);
}

/** Parses; the only acceptable failure is a FormatError that names the source. */
function parsesOrFormatError(json: unknown): ModelConfig | null {
  try {
    const cfg = parseHfConfig(json, 'fuzz/config.json');
    checkUsable(cfg);
    return cfg;
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    expect(e.message).toMatch(/^fuzz\/config\.json: /);
    return null;
  }
}

// Values that have broken parsers: JSON text 1e999 parses to Infinity; 2^53 is past exact integers.
const oddValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(
    Infinity, -Infinity, NaN, -0, -1, 0, 0.5, 1.5, 2 ** 53, 2 ** 31, 1e300, 1e-300, '32', '', 'NaN', 'Infinity', null, true, [], {}, [32],
    { __proto__: null, valueOf: 32 }, '__proto__', 'constructor',
  ),
);

describe('parseHfConfig fuzz', () => {
  it('the fixture configs parse', () => {
    for (const d of docs) expect(parsesOrFormatError(d)).not.toBeNull();
  });

  it('random JSON values only ever raise FormatError', () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 3 }), (v) => void parsesOrFormatError(v)), { numRuns: RUNS });
  });

  it('a key of a valid config replaced by an odd value (NaN, Infinity, strings, huge) parses to a usable config or raises FormatError', () => {
    fc.assert(
      fc.property(fc.nat(docs.length - 1), fc.nat(), oddValue, (which, pick, value) => {
        const doc = structuredClone(docs[which]!);
        const keys = Object.keys(doc);
        doc[keys[pick % keys.length]!] = value;
        parsesOrFormatError(doc);
      }),
      { numRuns: RUNS },
    );
  });

  it('numbers written as 1e999, -1e999 or 1e-999 in config.json text are refused, not used', () => {
    for (const [i, text] of texts.entries()) {
      for (const key of ['hidden_size', 'n_embd', 'num_hidden_layers', 'n_layer', 'vocab_size']) {
        if (!(key in docs[i]!)) continue;
        for (const literal of ['1e999', '-1e999', '1e-999']) {
          const edited = text.replace(new RegExp(`"${key}"\\s*:\\s*[0-9]+`), `"${key}": ${literal}`);
          expect(edited).not.toBe(text);
          expect(() => parseHfConfig(JSON.parse(edited), 'fuzz/config.json'), `${key}: ${literal}`).toThrow(FormatError);
        }
      }
    }
  });

  it('"__proto__" keys stay data: no prototype pollution, nothing inherited through them', () => {
    fc.assert(
      fc.property(fc.nat(docs.length - 1), fc.constantFrom('hidden_size', 'model_type', 'num_attention_heads', 'vocab_size'), (which, moved) => {
        const doc = docs[which]!;
        if (!(moved in doc)) return;
        // Move a required key under "__proto__", as JSON text (JSON.parse keeps it an own key).
        const rest = Object.fromEntries(Object.entries(doc).filter(([k]) => k !== moved));
        const text = JSON.stringify(rest).replace(/^\{/, `{"__proto__": {${JSON.stringify(moved)}: ${JSON.stringify(doc[moved])}}, `);
        const cfg = parsesOrFormatError(JSON.parse(text));
        // Only keys with a transformers default may be absent; the moved value is never read.
        if (cfg) expect(cfg.raw).not.toHaveProperty(moved);
        expect(({} as Record<string, unknown>)[moved]).toBeUndefined();
      }),
      { numRuns: 40 },
    );
  });

  it('truncated or byte-flipped config.json files fail to load with a FormatError naming the file', () => {
    const backend = backendByName('ref');
    const base = mkdtempSync(join(tmpdir(), 'rrt-cfg-fuzz-'));
    cpSync(join(fixtures, 'llama'), base, { recursive: true });
    const text = texts[0]!;
    fc.assert(
      fc.property(fc.nat(text.length - 1), fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }), (at, byte) => {
        const bytes = Buffer.from(text, 'utf8');
        const edited = byte === undefined ? bytes.subarray(0, at) : Buffer.from(bytes.map((b, i) => (i === at ? byte : b)));
        writeFileSync(join(base, 'config.json'), edited);
        try {
          loadPretrained(base, { backend }).dispose();
        } catch (e) {
          // A flip can leave valid JSON with a different size: then the weights no longer match.
          expect(e).toBeInstanceOf(RrtError);
          expect((e as Error).message).toContain(base);
        }
      }),
      { numRuns: 60 },
    );
  });
});
