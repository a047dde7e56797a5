import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FormatError, RrtError, ShapeError } from './errors.js';
import {
  type F32Tensor,
  bf16ToF32,
  f16BitsToF32Bits,
  f16ToF32,
  parseSafetensorsHeader,
  planSafetensors,
  readSafetensors,
  serializeSafetensors,
} from './safetensors.js';
import { SafetensorsFile, writeSafetensorsFile } from './safetensors-node.js';

const enc = new TextEncoder();

/** A file assembled by hand per the spec: u64 LE header length, header JSON, data bytes. */
function rawFile(json: string, data: ArrayLike<number> = [], headerLen?: number | bigint): Uint8Array {
  const header = enc.encode(json);
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen ?? header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

function bitsOf(a: Float32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
}

function f32FromBits(...bits: number[]): Float32Array {
  return new Float32Array(new Uint32Array(bits).buffer);
}

function le16(...words: number[]): number[] {
  return words.flatMap((w) => [w & 0xff, w >> 8]);
}

function formatErrorOf(fn: () => unknown): FormatError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(FormatError);
    return e as FormatError;
  }
  throw new Error('expected a FormatError, nothing was thrown');
}

describe('hand-written files', () => {
  const attnJson = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
  const attnData = Array.from(new Uint8Array(new Float32Array([0, 1, 2, 3, 4, 5]).buffer));

  it('reads a file written byte by byte per the spec', () => {
    const bytes = rawFile(attnJson, attnData);
    expect(bytes.length).toBe(8 + 64 + 24);
    expect(Array.from(bytes.subarray(0, 8))).toEqual([64, 0, 0, 0, 0, 0, 0, 0]);
    const r = readSafetensors(bytes);
    expect(r.names()).toEqual(['attn.0']);
    expect(r.header.dataStart).toBe(72);
    expect(r.header.tensors.get('attn.0')).toEqual({ dtype: 'F32', shape: [1, 2, 3], offsets: [0, 24] });
    const t = r.get('attn.0');
    expect(t.shape).toEqual([1, 2, 3]);
    expect(Array.from(t.data)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('serializes to the same bytes as the reference writer', () => {
    const t = { shape: [1, 2, 3], data: new Float32Array([0, 1, 2, 3, 4, 5]) };
    expect(serializeSafetensors([['attn.0', t]])).toEqual(rawFile(attnJson, attnData));
    // 61-byte JSON padded with 3 spaces to 64 so the data starts 8-byte aligned.
    const t4 = { shape: [1, 1, 2, 3], data: t.data };
    expect(serializeSafetensors([['attn0', t4]])).toEqual(
      rawFile('{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       ', attnData),
    );
    expect(serializeSafetensors([])).toEqual(rawFile('{}      '));
    expect(serializeSafetensors([], { framework: 'pt' })).toEqual(rawFile('{"__metadata__":{"framework":"pt"}}     '));
  });

  it('reads F16 and BF16 tensors at unaligned offsets, with metadata and padding', () => {
    const json =
      '{"__metadata__":{"format":"pt","note":"x"},' +
      '"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},' +
      '"b":{"dtype":"BF16","shape":[2],"data_offsets":[6,10]},' +
      '"i":{"dtype":"I32","shape":[1],"data_offsets":[10,14]}} ';
    const data = [...le16(0x3c00, 0xc100, 0x7bff), ...le16(0x3f80, 0xc020), 1, 0, 0, 0];
    const r = readSafetensors(rawFile(json, data), 'mem.safetensors');
    expect(r.header.metadata).toEqual({ format: 'pt', note: 'x' });
    expect(r.names()).toEqual(['h', 'b', 'i']);
    expect(Array.from(r.get('h').data)).toEqual([1, -2.5, 65504]);
    expect(Array.from(r.get('b').data)).toEqual([1, -2.5]);
    const e = formatErrorOf(() => r.get('i'));
    expect(e.message).toContain('I32');
    expect(e.message).toContain('"i"');
    expect(e.message).toContain('mem.safetensors');
    expect(() => r.get('nope')).toThrow(RrtError);
    expect(() => r.get('nope')).not.toThrow(FormatError);
  });

  it('accepts tensors in any offset order and empty tensors at shared offsets', () => {
    const json =
      '{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"e":{"dtype":"F32","shape":[0,5],"data_offsets":[4,4]},' +
      '"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}';
    const r = readSafetensors(rawFile(json, Array.from(new Uint8Array(new Float32Array([7, 8]).buffer))));
    expect(r.names()).toEqual(['a', 'e', 'b']);
    expect(r.get('a')).toEqual({ shape: [], data: new Float32Array([7]) });
    expect(r.get('e')).toEqual({ shape: [0, 5], data: new Float32Array(0) });
    expect(r.get('b').data[0]).toBe(8);
  });

  it('allows unused bytes in the data region (no coverage requirement)', () => {
    const r = readSafetensors(rawFile('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', new Array(12).fill(0)));
    expect(r.get('a').data[0]).toBe(0);
  });

  it('keeps a "__proto__" metadata key as plain data', () => {
    const r = readSafetensors(rawFile('{"__metadata__":{"__proto__":"x","a":"b"}}'));
    expect(Object.keys(r.header.metadata)).toEqual(['__proto__', 'a']);
    expect(r.header.metadata['__proto__']).toBe('x');
    expect(Object.getPrototypeOf(r.header.metadata)).toBe(Object.prototype);
  });
});

describe('F16 and BF16 decoding', () => {
  it('decodes hand-computed F16 values', () => {
    expect(f16ToF32(0x3c00)).toBe(1);
    expect(f16ToF32(0xc100)).toBe(-2.5);
    expect(f16ToF32(0x7bff)).toBe(65504);
    expect(f16ToF32(0x0001)).toBe(2 ** -24); // smallest subnormal
    expect(f16ToF32(0x03ff)).toBe(1023 * 2 ** -24); // largest subnormal
    expect(f16ToF32(0x0400)).toBe(2 ** -14); // smallest normal
    expect(f16ToF32(0x3555)).toBe(0.333251953125);
    expect(Object.is(f16ToF32(0x8000), -0)).toBe(true);
    expect(f16ToF32(0x0000)).toBe(0);
    expect(f16ToF32(0x7c00)).toBe(Infinity);
    expect(f16ToF32(0xfc00)).toBe(-Infinity);
    expect(f16ToF32(0x7e00)).toBeNaN();
    expect(f16BitsToF32Bits(0x7e00)).toBe(0x7fc00000);
    expect(f16BitsToF32Bits(0x7c01)).toBe(0x7f802000); // signalling payload kept
    expect(f16BitsToF32Bits(0xfe00)).toBe(0xffc00000);
  });

  it('matches the binary16 definition for all 65536 bit patterns', () => {
    const src = new Uint8Array(65536 * 2);
    for (let h = 0; h < 65536; h++) {
      src[2 * h] = h & 0xff;
      src[2 * h + 1] = h >> 8;
    }
    const file = rawFile('{"h":{"dtype":"F16","shape":[65536],"data_offsets":[0,131072]}}', src);
    const out = readSafetensors(file).get('h').data;
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >> 10) & 0x1f;
      const mant = h & 0x3ff;
      const want =
        exp === 0x1f ? (mant ? NaN : sign * Infinity) : exp === 0 ? sign * mant * 2 ** -24 : sign * (1 + mant / 1024) * 2 ** (exp - 15);
      if (!Object.is(out[h], want)) expect({ h, got: out[h] }).toEqual({ h, got: want });
    }
  });

  it('decodes hand-computed BF16 values', () => {
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(0xc020)).toBe(-2.5);
    expect(bf16ToF32(0x4049)).toBe(3.140625);
    expect(bf16ToF32(0x0001)).toBe(2 ** -133); // smallest subnormal
    expect(bf16ToF32(0x7f7f)).toBe(3.3895313892515355e38); // largest finite
    expect(Object.is(bf16ToF32(0x8000), -0)).toBe(true);
    expect(bf16ToF32(0x7f80)).toBe(Infinity);
    expect(bf16ToF32(0xff80)).toBe(-Infinity);
    expect(bf16ToF32(0x7fc0)).toBeNaN();
    const r = readSafetensors(rawFile('{"b":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}', le16(0x7f81, 0x0001)));
    expect(bitsOf(r.get('b').data)).toEqual([0x7f810000, 0x00010000]);
  });
});

describe('round trip', () => {
  const special = f32FromBits(0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffc12345, 0x00000001, 0x3f800000);
  const tensors: [string, F32Tensor][] = [
    ['z.weight', { shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) }],
    ['10', { shape: [9], data: special }],
    ['2', { shape: [], data: new Float32Array([Math.PI]) }],
    ['empty', { shape: [0, 4], data: new Float32Array(0) }],
    ['ünï.cödé', { shape: [1, 1], data: new Float32Array([-0.5]) }],
    ['\u{1F600}', { shape: [1], data: new Float32Array([1]) }],
    ['\uFF21', { shape: [1], data: new Float32Array([2]) }],
  ];
  const metadata = { format: 'pt', '0': 'zero', 'quote"d': 'new\nline', ['__proto__']: 'p' };

  it('is bit-exact and preserves metadata', () => {
    const bytes = serializeSafetensors(tensors, metadata);
    const r = readSafetensors(bytes);
    expect(r.header.metadata).toEqual(Object.fromEntries(Object.entries(metadata)));
    expect(r.header.metadata['__proto__']).toBe('p');
    // Code-point order: U+FF21 sorts before U+1F600 although its UTF-16 units are larger.
    expect(r.names()).toEqual(['10', '2', 'empty', 'z.weight', 'ünï.cödé', '\uFF21', '\u{1F600}']);
    expect((r.header.dataStart) % 8).toBe(0);
    for (const [name, t] of tensors) {
      const got = r.get(name);
      expect(got.shape).toEqual(t.shape);
      expect(bitsOf(got.data)).toEqual(bitsOf(t.data));
    }
  });

  it('is deterministic whatever the input order', () => {
    const a = serializeSafetensors(tensors, metadata);
    const b = serializeSafetensors([...tensors].reverse(), Object.fromEntries(Object.entries(metadata).reverse()));
    expect(b).toEqual(a);
  });

  it('copies data out instead of aliasing the file', () => {
    const bytes = serializeSafetensors([['a', { shape: [1], data: new Float32Array([1]) }]]);
    const t = readSafetensors(bytes).get('a');
    t.data[0] = 5;
    expect(readSafetensors(bytes).get('a').data[0]).toBe(1);
  });

  it('reads from a subarray at an odd byte offset', () => {
    const file = serializeSafetensors(tensors, metadata);
    const host = new Uint8Array(file.length + 3);
    host.set(file, 3);
    const r = readSafetensors(host.subarray(3));
    expect(bitsOf(r.get('10').data)).toEqual(bitsOf(special));
  });

  it('rejects invalid input to the writer', () => {
    expect(() => serializeSafetensors([['a', { shape: [2, 2], data: new Float32Array(3) }]])).toThrow(ShapeError);
    expect(() => serializeSafetensors([['a', { shape: [-1], data: new Float32Array(0) }]])).toThrow(ShapeError);
    expect(() => serializeSafetensors([['a', { shape: [1], data: new Float32Array(1) }], ['a', { shape: [1], data: new Float32Array(1) }]])).toThrow(/twice/);
    expect(() => serializeSafetensors([['__metadata__', { shape: [1], data: new Float32Array(1) }]])).toThrow(/reserved/);
    expect(() => serializeSafetensors([['a', { shape: [1], data: [1] as unknown as Float32Array }]])).toThrow(RrtError);
    expect(() => serializeSafetensors([], { a: 1 as unknown as string })).toThrow(/metadata\["a"\]/);
  });
});

describe('header validation', () => {
  const ok = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  const data8 = new Array(8).fill(0);

  function rejects(bytes: Uint8Array, ...parts: (string | RegExp)[]): void {
    const e = formatErrorOf(() => parseSafetensorsHeader(bytes, bytes.length, 'model.safetensors'));
    expect(e.message).toContain('model.safetensors');
    for (const p of parts) expect(e.message).toMatch(p);
  }

  function entry(fields: string): Uint8Array {
    return rawFile(`{"a":{${fields}}}`, data8);
  }

  it('rejects truncated files', () => {
    rejects(new Uint8Array(0), /at least 8 bytes/, /found 0/);
    rejects(new Uint8Array(5), /found 5/);
    const full = rawFile(ok, data8);
    rejects(full.subarray(0, 30), /runs past the end/);
    rejects(full.subarray(0, full.length - 1), /"a"/, /run past the data region of 7 bytes/);
  });

  it('rejects a header length past the end or over the cap', () => {
    rejects(rawFile(ok, data8, 1000), /header length 1000 runs past the end/);
    rejects(rawFile(ok, data8, 2n ** 63n), /exceeds the 100000000-byte cap/);
    rejects(rawFile(ok, data8, 100_000_001), /exceeds/);
  });

  it('needs the whole header in the buffer it is given', () => {
    const full = rawFile(ok, data8);
    const e = formatErrorOf(() => parseSafetensorsHeader(full.subarray(0, 20), full.length, 'f'));
    expect(e.message).toMatch(/truncated header/);
  });

  it('rejects bad JSON, bad UTF-8 and non-object headers', () => {
    rejects(rawFile('{"a":'), /not valid JSON/);
    rejects(rawFile(''), /not valid JSON/);
    const bad = rawFile('{"a":1}');
    bad[10] = 0xff;
    rejects(bad, /not valid UTF-8/);
    rejects(rawFile('[1,2]'), /JSON object/, /array/);
    rejects(rawFile('null'), /JSON object/, /null/);
    rejects(rawFile('"{}"'), /JSON object/);
    rejects(rawFile('\uFEFF{}'), /not valid JSON/);
  });

  it('rejects malformed metadata', () => {
    rejects(rawFile('{"__metadata__":[]}'), /__metadata__/);
    rejects(rawFile('{"__metadata__":"x"}'), /__metadata__/);
    rejects(rawFile('{"__metadata__":{"k":1}}'), /__metadata__\["k"\]/, /number 1/);
    rejects(rawFile('{"__metadata__":{"k":{"n":"v"}}}'), /__metadata__\["k"\]/);
  });

  it('rejects malformed tensor entries', () => {
    rejects(rawFile('{"a":[1]}', data8), /"a"/, /expected an object/);
    rejects(entry('"dtype":"F32","shape":[2]'), /data_offsets/);
    rejects(entry('"shape":[2],"data_offsets":[0,8]'), /dtype/);
    rejects(entry('"dtype":"F32","data_offsets":[0,8]'), /shape to be an array/);
    rejects(entry('"dtype":"F32","shape":[2],"data_offsets":[0,8,9]'), /data_offsets/);
    rejects(entry('"dtype":"F32","shape":[2],"data_offsets":[-8,0]'), /data_offsets/);
    rejects(entry('"dtype":"F32","shape":[2],"data_offsets":{"0":0,"1":8}'), /data_offsets/);
    rejects(entry('"dtype":"F32","shape":[0],"data_offsets":[8,0]'), /end before they begin/);
  });

  it('rejects unknown dtypes', () => {
    rejects(entry('"dtype":"F128","shape":[2],"data_offsets":[0,8]'), /"a"/, /expected dtype one of/, /F128/);
    rejects(entry('"dtype":"float32","shape":[2],"data_offsets":[0,8]'), /float32/);
    rejects(entry('"dtype":"toString","shape":[2],"data_offsets":[0,8]'), /toString/);
    rejects(entry('"dtype":4,"shape":[2],"data_offsets":[0,8]'), /dtype/);
  });

  it('accepts non-float dtypes in the header but refuses to read them as float', () => {
    for (const [dtype, size] of [['F64', 8], ['I64', 8], ['I32', 4], ['I16', 2], ['I8', 1], ['U8', 1], ['BOOL', 1]] as const) {
      const r = readSafetensors(rawFile(`{"a":{"dtype":"${dtype}","shape":[2],"data_offsets":[0,${2 * size}]}}`, new Array(2 * size).fill(0)));
      expect(r.header.tensors.get('a')!.dtype).toBe(dtype);
      expect(formatErrorOf(() => r.get('a')).message).toContain(dtype);
    }
  });

  it('rejects NaN and other non-integers in shapes', () => {
    rejects(entry('"dtype":"F32","shape":[NaN],"data_offsets":[0,8]'), /not valid JSON/);
    rejects(entry('"dtype":"F32","shape":["NaN"],"data_offsets":[0,8]'), /shape\[0\]/, /NaN/);
    rejects(entry('"dtype":"F32","shape":[null],"data_offsets":[0,8]'), /shape\[0\]/, /null/);
    rejects(entry('"dtype":"F32","shape":[1.5],"data_offsets":[0,8]'), /shape\[0\]/);
    rejects(entry('"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]'), /shape\[1\]/);
    rejects(entry('"dtype":"F32","shape":[1e400],"data_offsets":[0,8]'), /shape\[0\]/, /Infinity/);
    rejects(entry('"dtype":"F32","shape":[[2]],"data_offsets":[0,8]'), /shape\[0\]/);
  });

  it('rejects shape/offset mismatches', () => {
    rejects(entry('"dtype":"F32","shape":[3],"data_offsets":[0,8]'), /\[3\] of F32 needs 12 bytes/, /span 8/);
    rejects(entry('"dtype":"F16","shape":[2],"data_offsets":[0,8]'), /needs 4 bytes/);
  });

  it('fails fast on absurd shapes without allocating', () => {
    const t0 = performance.now();
    rejects(entry('"dtype":"F32","shape":[1000000000000],"data_offsets":[0,8]'), /needs 4000000000000 bytes/);
    rejects(entry('"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]'), /run past the data region of 8 bytes/);
    rejects(entry('"dtype":"F64","shape":[1000000000,1000000000],"data_offsets":[0,8]'), /over 2\^53/);
    rejects(entry('"dtype":"F64","shape":[2000000000000000],"data_offsets":[0,8]'), /2\^53 bytes/);
    rejects(entry('"dtype":"F32","shape":[2],"data_offsets":[0,9007199254740993]'), /data_offsets/);
    expect(performance.now() - t0).toBeLessThan(100);
  });

  it('rejects offsets out of range', () => {
    rejects(entry('"dtype":"F32","shape":[2],"data_offsets":[4,12]'), /\[4,12\] run past the data region of 8 bytes/);
    rejects(rawFile('{"a":{"dtype":"F32","shape":[0],"data_offsets":[9,9]}}', data8), /run past/);
  });

  it('rejects overlapping tensors', () => {
    const json =
      '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
    rejects(rawFile(json, data8), /"b"/, /overlap tensor "a"/);
    const same = '{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
    rejects(rawFile(same, data8), /overlap/);
  });
});

describe('SafetensorsFile and writeSafetensorsFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rrt-safetensors-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const tensors: [string, F32Tensor][] = [
    ['b', { shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }],
    ['a', { shape: [3], data: f32FromBits(0x7fc00001, 0x80000000, 0x00000001) }],
    ['e', { shape: [0], data: new Float32Array(0) }],
  ];

  it('writes the same bytes as serializeSafetensors and reads them back bit-exactly', () => {
    const path = join(dir, 'model.safetensors');
    writeSafetensorsFile(path, tensors, { step: '3' });
    expect(new Uint8Array(readFileSync(path))).toEqual(serializeSafetensors(tensors, { step: '3' }));
    expect(readdirSync(dir)).toEqual(['model.safetensors']);
    const f = SafetensorsFile.open(path);
    try {
      expect(f.names()).toEqual(['a', 'b', 'e']);
      expect(f.header.metadata).toEqual({ step: '3' });
      expect(f.entry('b')).toEqual({ dtype: 'F32', shape: [2, 2], offsets: [12, 28] });
      for (const [name, t] of tensors) {
        const got = f.read(name);
        expect(got.shape).toEqual(t.shape);
        expect(bitsOf(got.data)).toEqual(bitsOf(t.data));
      }
      expect(() => f.read('zz')).toThrow(/"zz", not found among 3 tensors/);
    } finally {
      f.close();
    }
    f.close();
    expect(() => f.read('a')).toThrow(/after close/);
  });

  it('reads F16 tensors larger than the scratch buffer', () => {
    const n = 5_000_000; // 10 MB of F16, decoded in several chunks
    const src = new Uint8Array(2 * n);
    for (let i = 0; i < n; i++) {
      const h = i % 65536;
      src[2 * i] = h & 0xff;
      src[2 * i + 1] = h >> 8;
    }
    const path = join(dir, 'half.safetensors');
    writeFileSync(path, rawFile(`{"h":{"dtype":"F16","shape":[${n}],"data_offsets":[0,${2 * n}]}}`, src));
    const f = SafetensorsFile.open(path);
    const got = new Uint32Array(f.read('h').data.buffer);
    f.close();
    for (let i = 0; i < n; i += 997) expect(got[i]).toBe(f16BitsToF32Bits(i % 65536));
    expect(got[n - 1]).toBe(f16BitsToF32Bits((n - 1) % 65536));
  });

  it('reports malformed and missing files with their path', () => {
    const path = join(dir, 'trunc.safetensors');
    const full = serializeSafetensors(tensors);
    writeFileSync(path, full.subarray(0, full.length - 2));
    expect(() => SafetensorsFile.open(path)).toThrow(FormatError);
    expect(() => SafetensorsFile.open(path)).toThrow(path);
    writeFileSync(path, new Uint8Array(3));
    expect(() => SafetensorsFile.open(path)).toThrow(/at least 8 bytes/);
    const missing = join(dir, 'missing.safetensors');
    let err: unknown;
    try {
      SafetensorsFile.open(missing);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RrtError);
    expect(err).not.toBeInstanceOf(FormatError);
    expect((err as Error).message).toContain(missing);
  });

  it('leaves the old file intact and no temp file when a write fails part way', () => {
    const path = join(dir, 'keep.safetensors');
    writeSafetensorsFile(path, tensors);
    const before = readFileSync(path);
    // A tensor whose data can be planned but then fails while its bytes are being streamed.
    let reads = 0;
    let limit = Infinity;
    const data = new Float32Array([9, 9]);
    const flaky = {
      shape: [2],
      get data(): Float32Array {
        if (++reads > limit) throw new Error('disk full');
        return data;
      },
    };
    planSafetensors([['z', flaky]]);
    limit = reads;
    reads = 0;
    expect(() => writeSafetensorsFile(path, [...tensors, ['z', flaky]])).toThrow('disk full');
    expect(readFileSync(path)).toEqual(before);
    expect(readdirSync(dir).filter((f) => f.includes('keep'))).toEqual(['keep.safetensors']);
    expect(() => writeSafetensorsFile(join(dir, 'no', 'such', 'dir.safetensors'), tensors)).toThrow(RrtError);
  });
});
