import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FormatError } from './errors.js';
import { type F32Tensor, parseSafetensorsHeader, readSafetensors, serializeSafetensors } from './safetensors.js';

// Run counts keep this file to a few seconds; the per-test timeout turns a hang into a failure.
const RUNS = 400;
const TIMEOUT = 20_000;

/** Parses and reads every tensor: the only acceptable failure is a FormatError. */
function parseOrFormatError(bytes: Uint8Array): void {
  try {
    const r = readSafetensors(bytes, 'fuzz');
    for (const name of r.names()) {
      const entry = r.header.tensors.get(name)!;
      try {
        const t = r.get(name);
        expect(t.data.length * ({ F32: 4, F16: 2, BF16: 2 } as Record<string, number>)[entry.dtype]!).toBe(
          entry.offsets[1] - entry.offsets[0],
        );
      } catch (e) {
        // Only dtypes that cannot be read as float may fail once the header is accepted.
        expect(e).toBeInstanceOf(FormatError);
        expect(['F32', 'F16', 'BF16']).not.toContain(entry.dtype);
      }
    }
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
  }
}

function withHeader(json: string, data: Uint8Array): Uint8Array {
  const header = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setUint32(0, header.length, true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

const name = fc.string({ maxLength: 6, unit: 'grapheme-ascii' });
const tensorArb: fc.Arbitrary<F32Tensor> = fc
  .array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 })
  .chain((shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return fc
      .array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: n, maxLength: n })
      .map((bits) => ({ shape, data: new Float32Array(new Uint32Array(bits).buffer) }));
  });
const fileArb = fc
  .tuple(
    fc.uniqueArray(fc.tuple(name, tensorArb), { maxLength: 5, selector: ([k]) => k }).map((ts) => ts.filter(([k]) => k !== '__metadata__')),
    fc.option(fc.dictionary(name, fc.string({ maxLength: 8 }), { maxKeys: 3 }), { nil: undefined }),
  )
  .map(([tensors, metadata]) => ({ tensors, metadata, bytes: serializeSafetensors(tensors, metadata) }));

describe('safetensors fuzz', () => {
  it('round-trips random tensors bit-exactly', () => {
    fc.assert(
      fc.property(fileArb, ({ tensors, metadata, bytes }) => {
        const r = readSafetensors(bytes);
        expect(r.header.metadata).toEqual(metadata ? Object.fromEntries(Object.entries(metadata)) : {});
        expect(new Set(r.names())).toEqual(new Set(tensors.map(([k]) => k)));
        for (const [k, t] of tensors) {
          const got = r.get(k);
          expect(got.shape).toEqual(t.shape);
          expect(new Uint32Array(got.data.buffer)).toEqual(new Uint32Array(t.data.buffer));
        }
      }),
      { numRuns: RUNS },
    );
  }, TIMEOUT);

  it('random bytes only ever raise FormatError', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), parseOrFormatError), { numRuns: RUNS });
  }, TIMEOUT);

  it('random bytes behind a plausible length prefix only ever raise FormatError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(220), (body, n) => {
        const bytes = new Uint8Array(8 + body.length);
        new DataView(bytes.buffer).setUint32(0, n, true);
        bytes.set(body, 8);
        parseOrFormatError(bytes);
      }),
      { numRuns: RUNS },
    );
  }, TIMEOUT);

  it('random JSON headers only ever raise FormatError', () => {
    fc.assert(
      fc.property(fc.json({ maxDepth: 3 }), fc.uint8Array({ maxLength: 64 }), (json, data) => parseOrFormatError(withHeader(json, data))),
      { numRuns: RUNS },
    );
  }, TIMEOUT);

  it('every truncation of a valid file raises FormatError', () => {
    fc.assert(
      fc.property(fileArb, fc.nat(), ({ bytes }, cut) => {
        const k = cut % bytes.length;
        expect(() => parseSafetensorsHeader(bytes.subarray(0, k), k, 'cut')).toThrow(FormatError);
        expect(() => readSafetensors(bytes.subarray(0, k))).toThrow(FormatError);
      }),
      { numRuns: RUNS },
    );
  }, TIMEOUT);

  const fieldValue = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.constantFrom('F32', 'F16', 'BF16', 'I32', 'F64', 'BOOL', 'U8', 'X', -1, 0, 1.5, 2 ** 53, 1e300, [], [0], [0, 0], [-1, 4], [4, 0]),
    fc.array(fc.integer({ min: -2, max: 70 }), { maxLength: 3 }),
  );

  it('structured mutations of a valid header only ever raise FormatError', () => {
    fc.assert(
      fc.property(fileArb, fc.nat(), fc.constantFrom('dtype', 'shape', 'data_offsets', '__metadata__', 'entry', 'extra'), fieldValue, ({ bytes }, pick, field, value) => {
        const n = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
        const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, Record<string, unknown>>;
        const names = Object.keys(header).filter((k) => k !== '__metadata__');
        if (field === '__metadata__') header['__metadata__'] = value as Record<string, unknown>;
        else if (field === 'extra') header[`x${pick}`] = value as Record<string, unknown>;
        else if (names.length > 0) {
          const target = names[pick % names.length]!;
          if (field === 'entry') header[target] = value as Record<string, unknown>;
          else header[target]![field] = value;
        }
        parseOrFormatError(withHeader(JSON.stringify(header), bytes.subarray(8 + n)));
      }),
      { numRuns: RUNS },
    );
  }, TIMEOUT);

  it('byte-level mutations of a valid header only ever raise FormatError', () => {
    fc.assert(
      fc.property(
        fileArb,
        fc.array(fc.tuple(fc.nat(), fc.constantFrom('set', 'delete', 'insert'), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        ({ bytes }, edits, fixLength) => {
          const n = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
          const header = Array.from(bytes.subarray(8, 8 + n));
          for (const [at, op, byte] of edits) {
            const i = at % (header.length + 1);
            if (op === 'insert') header.splice(i, 0, byte);
            else if (i < header.length) op === 'set' ? (header[i] = byte) : header.splice(i, 1);
          }
          const out = new Uint8Array(8 + header.length + bytes.length - 8 - n);
          // Keep the prefix stale half the time, so the length itself is also mutated.
          new DataView(out.buffer).setUint32(0, fixLength ? header.length : n, true);
          out.set(header, 8);
          out.set(bytes.subarray(8 + n), 8 + header.length);
          parseOrFormatError(out);
        },
      ),
      { numRuns: RUNS },
    );
  }, TIMEOUT);

  it('absurd shapes and offsets (up to 10^12 elements and past 2^53) fail without allocating', () => {
    const huge = fc.constantFrom(1_000_000, 1_000_000_000, 1_000_000_000_000, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e300);
    fc.assert(
      fc.property(fc.array(huge, { minLength: 1, maxLength: 3 }), fc.constantFrom('F32', 'F16', 'BF16', 'F64'), fc.nat(), (shape, dtype, begin) => {
        const count = shape.reduce((a, b) => a * b, 1);
        const size = ({ F32: 4, F16: 2, BF16: 2, F64: 8 } as Record<string, number>)[dtype]!;
        // Offsets that agree with the shape, so only the file size can refuse them.
        const header = `{"t":{"dtype":"${dtype}","shape":[${shape.join(',')}],"data_offsets":[${begin},${begin + count * size}]}}`;
        const before = process.memoryUsage().arrayBuffers;
        expect(() => readSafetensors(withHeader(header, new Uint8Array(16)), 'huge')).toThrow(FormatError);
        expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 << 20);
      }),
      { numRuns: RUNS },
    );
  }, TIMEOUT);

  it('out-of-range and overlapping offsets always raise FormatError', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(40), fc.nat(40)), { minLength: 1, maxLength: 4 }), fc.nat(48), (spans, dataLen) => {
        const entries = spans.map(([a, b], i) => {
          const [begin, end] = a <= b ? [a, b] : [b, a];
          return [`t${i}`, { dtype: 'U8', shape: [end - begin], data_offsets: [begin, end] }] as const;
        });
        const bytes = withHeader(JSON.stringify(Object.fromEntries(entries)), new Uint8Array(dataLen));
        const sorted = entries.map(([, e]) => e.data_offsets).filter(([b, e]) => e > b).sort((x, y) => x[0] - y[0]);
        const overlaps = sorted.some(([b], i) => i > 0 && b < sorted[i - 1]![1]);
        const outside = entries.some(([, e]) => e.data_offsets[1] > dataLen);
        if (overlaps || outside) expect(() => readSafetensors(bytes)).toThrow(FormatError);
        else expect(readSafetensors(bytes).names()).toHaveLength(entries.length);
      }),
      { numRuns: RUNS },
    );
  }, TIMEOUT);

  it('Infinity, NaN-like and string numbers in the header JSON raise FormatError', () => {
    const bad = ['1e999', '-1e999', '"4"', '"NaN"', 'null', '4.5', '-0.5', '9007199254740993'];
    fc.assert(
      fc.property(fc.constantFrom(...bad), fc.constantFrom('shape', 'begin', 'end'), (literal, where) => {
        const shape = where === 'shape' ? `[${literal}]` : '[1]';
        const begin = where === 'begin' ? literal : '0';
        const end = where === 'end' ? literal : '4';
        const header = `{"t":{"dtype":"F32","shape":${shape},"data_offsets":[${begin},${end}]}}`;
        expect(() => readSafetensors(withHeader(header, new Uint8Array(8)), 'nums'), header).toThrow(FormatError);
      }),
      { numRuns: 60 },
    );
  }, TIMEOUT);

  it('"__proto__", "constructor" and other prototype names are plain tensor and metadata names', () => {
    fc.assert(
      fc.property(fc.subarray(['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf']), fc.boolean(), (names, asMetadata) => {
        const json = asMetadata
          ? `{"__metadata__":{${names.map((n) => `"${n}":"x"`).join(',')}},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
          : `{${names.map((n, i) => `"${n}":{"dtype":"F32","shape":[1],"data_offsets":[${4 * i},${4 * i + 4}]}`).join(',')}}`;
        const r = readSafetensors(withHeader(json, new Uint8Array(4 * Math.max(1, names.length))));
        if (asMetadata) {
          expect(Object.keys(r.header.metadata).sort()).toEqual([...names].sort());
          for (const n of names) expect(Object.getOwnPropertyDescriptor(r.header.metadata, n)?.value).toBe('x');
          expect(Object.getPrototypeOf(r.header.metadata)).toBe(Object.prototype);
        } else {
          expect(r.names()).toEqual(names);
          for (const n of names) expect(r.get(n).shape).toEqual([1]);
        }
        expect(({} as Record<string, unknown>).dtype).toBeUndefined();
      }),
      { numRuns: 60 },
    );
  }, TIMEOUT);
});
