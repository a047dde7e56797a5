// safetensors reading and writing on plain Float32Array + shape pairs.
// Browser-safe: no Node imports here; the file-descriptor reader/writer lives in safetensors-node.ts.
import { FormatError, RrtError, ShapeError, fmtShape } from './errors.js';

/** One tensor's record in a safetensors header. `offsets` is the file's `data_offsets`: [begin, end) in bytes, relative to the data region. */
export interface TensorEntry {
  dtype: 'F32' | 'F16' | 'BF16' | string;
  shape: number[];
  offsets: [number, number];
}

/** A validated safetensors header. `tensors` is ordered by data offset; `dataStart` is the absolute byte offset of the data region (8 + header length). */
export interface SafetensorsHeader {
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
  dataStart: number;
}

/** A tensor decoded to float32: row-major data with `shape`. */
export interface F32Tensor {
  shape: number[];
  data: Float32Array;
}

/** Largest header accepted, in bytes; same cap as the reference implementation. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Bytes per element of every dtype accepted in a header. Only F32, F16 and BF16 can be read as float32. */
export const DTYPE_SIZES: Readonly<Record<string, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
});

const READABLE = new Set(['F32', 'F16', 'BF16']);
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Validates the 8-byte little-endian length prefix and returns the header length N.
 * `prefix` needs only its first 8 bytes; `fileSize` is the whole file's size.
 */
export function safetensorsHeaderLength(prefix: Uint8Array, fileSize: number, source = '<buffer>'): number {
  if (!Number.isSafeInteger(fileSize) || fileSize < 0) {
    throw new RrtError(`safetensors ${source}: expected a non-negative integer file size, got ${fileSize}`);
  }
  if (fileSize < 8 || prefix.length < 8) {
    throw new FormatError(
      `safetensors ${source}: truncated, expected at least 8 bytes for the header length, found ${Math.min(fileSize, prefix.length)}`,
    );
  }
  const dv = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  if (hi !== 0 || lo > MAX_HEADER_BYTES) {
    const n = hi * 2 ** 32 + lo;
    throw new FormatError(`safetensors ${source}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte cap`);
  }
  if (8 + lo > fileSize) {
    throw new FormatError(
      `safetensors ${source}: header length ${lo} runs past the end of the file (${fileSize} bytes, header would end at ${8 + lo})`,
    );
  }
  return lo;
}

// fatal: invalid UTF-8 must fail rather than turn into U+FFFD; keep a BOM so JSON.parse rejects it.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `array of length ${v.length}`;
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (typeof v === 'object') return 'object';
  return `${typeof v} ${String(v)}`;
}

/**
 * Parses and validates a safetensors header. `bytes` holds at least the first 8 + N bytes of the file
 * (the whole file is fine); `fileSize` is the file's full size, used to bound offsets.
 * Checks: length prefix within the file and under MAX_HEADER_BYTES, UTF-8 JSON object,
 * `__metadata__` a string-to-string map, known dtypes, shapes of non-negative safe integers,
 * shape × dtype size equal to the offset span, offsets within the data region, no overlapping tensors.
 * Throws FormatError on any violation; never allocates based on sizes it has not checked.
 */
export function parseSafetensorsHeader(bytes: Uint8Array, fileSize: number, source = '<buffer>'): SafetensorsHeader {
  const n = safetensorsHeaderLength(bytes, fileSize, source);
  if (bytes.length < 8 + n) {
    throw new FormatError(
      `safetensors ${source}: truncated header, expected ${8 + n} bytes (8 + header length ${n}), got ${bytes.length}`,
    );
  }
  let text: string;
  try {
    text = utf8Decoder.decode(bytes.subarray(8, 8 + n));
  } catch {
    throw new FormatError(`safetensors ${source}: header is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FormatError(`safetensors ${source}: header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) {
    throw new FormatError(`safetensors ${source}: expected the header to be a JSON object, found ${describe(json)}`);
  }

  const dataStart = 8 + n;
  const dataSize = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const found: [string, TensorEntry][] = [];

  for (const [name, raw] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(raw)) {
        throw new FormatError(`safetensors ${source}: expected "__metadata__" to be an object of strings, found ${describe(raw)}`);
      }
      const entries = Object.entries(raw);
      for (const [k, v] of entries) {
        if (typeof v !== 'string') {
          throw new FormatError(`safetensors ${source}: expected __metadata__[${JSON.stringify(k)}] to be a string, found ${describe(v)}`);
        }
      }
      // fromEntries defines own properties, so a "__proto__" key stays data, not a prototype.
      metadata = Object.fromEntries(entries) as Record<string, string>;
      continue;
    }
    found.push([name, parseEntry(name, raw, dataSize, source)]);
  }

  // Order by offset: this is file order, and makes the overlap check linear.
  found.sort((a, b) => a[1].offsets[0] - b[1].offsets[0] || a[1].offsets[1] - b[1].offsets[1] || compareNames(a[0], b[0]));
  let prevEnd = 0;
  let prevName = '';
  for (const [name, e] of found) {
    const [begin, end] = e.offsets;
    if (begin === end) continue; // empty tensors occupy no bytes
    if (begin < prevEnd) {
      throw new FormatError(
        `safetensors ${source}: tensor "${name}" data_offsets [${begin},${end}] overlap tensor "${prevName}" which ends at ${prevEnd}`,
      );
    }
    prevEnd = end;
    prevName = name;
  }
  return { tensors: new Map(found), metadata, dataStart };
}

function parseEntry(name: string, raw: unknown, dataSize: number, source: string): TensorEntry {
  const where = `safetensors ${source}: tensor "${name}"`;
  if (!isPlainObject(raw)) throw new FormatError(`${where}: expected an object with dtype, shape, data_offsets, found ${describe(raw)}`);
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== 'string' || !Object.prototype.hasOwnProperty.call(DTYPE_SIZES, dtype)) {
    throw new FormatError(`${where}: expected dtype one of ${Object.keys(DTYPE_SIZES).join(', ')}, found ${describe(dtype)}`);
  }
  if (!Array.isArray(shape)) throw new FormatError(`${where}: expected shape to be an array, found ${describe(shape)}`);
  // The element count stays exact because every partial product is checked against 2^53 before the next multiply.
  let count = 1;
  for (let i = 0; i < shape.length; i++) {
    const d: unknown = shape[i];
    if (!isCount(d)) throw new FormatError(`${where}: expected shape[${i}] to be a non-negative integer, found ${describe(d)}`);
    count *= d;
    if (!Number.isSafeInteger(count)) {
      throw new FormatError(`${where}: shape ${JSON.stringify(shape)} has more elements than can be addressed (over 2^53)`);
    }
  }
  const nbytes = count * DTYPE_SIZES[dtype]!;
  if (!Number.isSafeInteger(nbytes)) {
    throw new FormatError(`${where}: shape ${JSON.stringify(shape)} of ${dtype} needs more than 2^53 bytes`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !isCount(offsets[0]) || !isCount(offsets[1])) {
    throw new FormatError(`${where}: expected data_offsets to be [begin, end] non-negative integers, found ${describe(offsets)}${Array.isArray(offsets) ? ` ${JSON.stringify(offsets).slice(0, 60)}` : ''}`);
  }
  const begin = offsets[0] as number;
  const end = offsets[1] as number;
  if (begin > end) throw new FormatError(`${where}: data_offsets [${begin},${end}] end before they begin`);
  if (end - begin !== nbytes) {
    throw new FormatError(
      `${where}: shape ${fmtShape(shape as number[])} of ${dtype} needs ${nbytes} bytes but data_offsets [${begin},${end}] span ${end - begin}`,
    );
  }
  if (end > dataSize) {
    throw new FormatError(`${where}: data_offsets [${begin},${end}] run past the data region of ${dataSize} bytes`);
  }
  return { dtype, shape: (shape as number[]).map((d) => d + 0), offsets: [begin, end] }; // +0 turns -0 into 0
}

/** Code-point order, i.e. the byte order of the UTF-8 encodings, as the reference writer sorts names. */
function compareNames(a: string, b: string): number {
  const len = Math.min(a.length, b.length);
  for (let i = 0; i < len; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return remapUnit(x) - remapUnit(y);
  }
  return a.length - b.length;
}

// Surrogates start code points above U+FFFF, so they must sort after U+E000..U+FFFF.
function remapUnit(c: number): number {
  if (c >= 0xd800 && c <= 0xdfff) return c + 0x2000;
  if (c >= 0xe000) return c - 0x800;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Decoding

let f16Table: Uint32Array | undefined;

/** float32 bit pattern of an IEEE half (binary16) bit pattern; exact, including subnormals, infinities and NaN payloads. */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half: shift the mantissa up to an implicit leading 1, lowering the exponent each step.
  let e = 113;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

const scalarBits = new Uint32Array(1);
const scalarF32 = new Float32Array(scalarBits.buffer);

/** Value of an IEEE half (binary16) bit pattern. */
export function f16ToF32(h: number): number {
  scalarBits[0] = f16BitsToF32Bits(h & 0xffff);
  return scalarF32[0]!;
}

/** Value of a bfloat16 bit pattern (the top 16 bits of a float32). */
export function bf16ToF32(h: number): number {
  scalarBits[0] = (h & 0xffff) << 16;
  return scalarF32[0]!;
}

function getF16Table(): Uint32Array {
  if (!f16Table) {
    // 256 KiB once, then decoding is one lookup per element.
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  return f16Table;
}

/**
 * Decodes little-endian `dtype` elements from `src` into `out` starting at element `outOffset`,
 * bit-exactly (NaN payloads kept). `src` needs no alignment. Throws FormatError for dtypes other than F32, F16, BF16.
 */
export function decodeToF32(dtype: string, src: Uint8Array, out: Float32Array, outOffset = 0, where = '<buffer>'): void {
  if (!READABLE.has(dtype)) throw unreadable(dtype, where);
  const size = DTYPE_SIZES[dtype]!;
  const count = src.length / size;
  if (!Number.isInteger(count) || outOffset + count > out.length) {
    throw new RrtError(`decodeToF32: ${src.length} bytes of ${dtype} do not fit ${out.length - outOffset} float32 slots at ${outOffset}`);
  }
  if (dtype === 'F32' && LITTLE_ENDIAN) {
    new Uint8Array(out.buffer, out.byteOffset + outOffset * 4, src.length).set(src);
    return;
  }
  // Writing bit patterns through a Uint32 view keeps NaN payloads, which a float round trip may not.
  const bits = new Uint32Array(out.buffer, out.byteOffset + outOffset * 4, count);
  if (dtype === 'F32') {
    for (let i = 0, j = 0; i < count; i++, j += 4) {
      bits[i] = (src[j]! | (src[j + 1]! << 8) | (src[j + 2]! << 16) | (src[j + 3]! << 24)) >>> 0;
    }
  } else if (dtype === 'F16') {
    const table = getF16Table();
    for (let i = 0, j = 0; i < count; i++, j += 2) bits[i] = table[src[j]! | (src[j + 1]! << 8)]!;
  } else {
    for (let i = 0, j = 0; i < count; i++, j += 2) bits[i] = ((src[j]! << 16) | (src[j + 1]! << 24)) >>> 0;
  }
}

function unreadable(dtype: string, where: string): FormatError {
  return new FormatError(`safetensors ${where}: cannot read dtype ${dtype} as float32 (supported: F32, F16, BF16)`);
}

/** @internal Throws FormatError unless `entry` can be decoded to float32. */
export function requireReadable(entry: TensorEntry, name: string, source: string): void {
  if (!READABLE.has(entry.dtype)) throw unreadable(entry.dtype, `${source}: tensor "${name}"`);
}

/** @internal Allocates the float32 output for `entry`, after its size has been validated against the file. */
export function allocF32(entry: TensorEntry, name: string, source: string): Float32Array {
  const count = (entry.offsets[1] - entry.offsets[0]) / DTYPE_SIZES[entry.dtype]!;
  try {
    return new Float32Array(count);
  } catch (e) {
    throw new RrtError(`safetensors ${source}: tensor "${name}" has ${count} elements, too many for one Float32Array (${(e as Error).message})`);
  }
}

/** @internal Throws the not-found error, naming a few of the tensors that do exist. */
export function missingTensor(name: string, header: SafetensorsHeader, source: string): never {
  const names = [...header.tensors.keys()];
  const shown = names.slice(0, 8).map((s) => JSON.stringify(s)).join(', ');
  throw new RrtError(
    `safetensors ${source}: expected a tensor named ${JSON.stringify(name)}, not found among ${names.length} tensors (${shown}${names.length > 8 ? ', ...' : ''})`,
  );
}

/** An in-memory safetensors file: the validated header plus float32 decoding of single tensors. */
export interface SafetensorsReader {
  header: SafetensorsHeader;
  /** Tensor names in file (offset) order. */
  names(): string[];
  /** Decodes one tensor into a fresh Float32Array (F32, F16, BF16; other dtypes throw FormatError). */
  get(name: string): F32Tensor;
}

/**
 * Reads a whole safetensors file held in memory. The header is validated up front; tensors are
 * decoded on demand and copied, so the result does not alias `bytes`. Works in browsers.
 */
export function readSafetensors(bytes: Uint8Array, source = '<buffer>'): SafetensorsReader {
  const header = parseSafetensorsHeader(bytes, bytes.length, source);
  return {
    header,
    names: () => [...header.tensors.keys()],
    get(name: string): F32Tensor {
      const entry = header.tensors.get(name);
      if (!entry) missingTensor(name, header, source);
      requireReadable(entry, name, source);
      const data = allocF32(entry, name, source);
      const start = header.dataStart + entry.offsets[0];
      decodeToF32(entry.dtype, bytes.subarray(start, header.dataStart + entry.offsets[1]), data, 0, `${source}: tensor "${name}"`);
      return { shape: entry.shape.slice(), data };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Writing

/** A planned file: the 8-byte prefix plus padded header, and the tensors in the order their data follows. */
export interface SafetensorsLayout {
  head: Uint8Array;
  order: [string, F32Tensor][];
  /** Total file size in bytes. */
  size: number;
}

/**
 * Plans an F32 safetensors file the way the reference writer does: tensors sorted by name
 * (code-point order) and packed back to back, `__metadata__` first when given, header JSON padded
 * with spaces to a multiple of 8 so the data region is 8-byte aligned. Metadata keys are sorted too,
 * so equal inputs give identical bytes. Throws ShapeError / RrtError on invalid input.
 */
export function planSafetensors(
  tensors: Iterable<[string, F32Tensor]>,
  metadata?: Record<string, string>,
): SafetensorsLayout {
  const order: [string, F32Tensor][] = [];
  const seen = new Set<string>();
  for (const [name, t] of tensors) {
    if (typeof name !== 'string') throw new RrtError(`serializeSafetensors: expected tensor names to be strings, got ${describe(name)}`);
    if (name === '__metadata__') throw new RrtError('serializeSafetensors: the tensor name "__metadata__" is reserved for file metadata');
    if (seen.has(name)) throw new RrtError(`serializeSafetensors: tensor name "${name}" appears twice`);
    seen.add(name);
    if (!(t?.data instanceof Float32Array)) {
      throw new RrtError(`serializeSafetensors: tensor "${name}": expected data to be a Float32Array, got ${describe(t?.data)}`);
    }
    if (!Array.isArray(t.shape) || !t.shape.every(isCount)) {
      throw new ShapeError(`serializeSafetensors: tensor "${name}": expected shape of non-negative integers, got ${JSON.stringify(t.shape)}`);
    }
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) {
      throw new ShapeError(`serializeSafetensors: tensor "${name}": shape ${fmtShape(t.shape)} has ${count} elements but data has ${t.data.length}`);
    }
    order.push([name, t]);
  }
  order.sort((a, b) => compareNames(a[0], b[0]));

  // Built by hand: a JS object would move integer-like keys ("0", "12") to the front.
  const parts: string[] = [];
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) throw new RrtError(`serializeSafetensors: expected metadata to be an object of strings, got ${describe(metadata)}`);
    const keys = Object.keys(metadata).sort(compareNames);
    const kv = keys.map((k) => {
      const v = metadata[k];
      if (typeof v !== 'string') throw new RrtError(`serializeSafetensors: metadata[${JSON.stringify(k)}]: expected a string, got ${describe(v)}`);
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    parts.push(`"__metadata__":{${kv.join(',')}}`);
  }
  let offset = 0;
  for (const [name, t] of order) {
    const end = offset + t.data.length * 4;
    parts.push(`${JSON.stringify(name)}:{"dtype":"F32","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  const json = utf8Encoder.encode(`{${parts.join(',')}}`);
  const n = Math.ceil(json.length / 8) * 8;
  if (n > MAX_HEADER_BYTES) throw new RrtError(`serializeSafetensors: header would be ${n} bytes, over the ${MAX_HEADER_BYTES}-byte cap readers accept`);
  const head = new Uint8Array(8 + n);
  new DataView(head.buffer).setUint32(0, n, true);
  head.set(json, 8);
  head.fill(0x20, 8 + json.length);
  return { head, order, size: 8 + n + offset };
}

/** Little-endian bytes of `data`; a view without copying on little-endian hosts. */
export function f32Bytes(data: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.byteLength);
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  for (let i = 0, j = 0; i < bits.length; i++, j += 4) {
    const b = bits[i]!;
    out[j] = b & 0xff;
    out[j + 1] = (b >>> 8) & 0xff;
    out[j + 2] = (b >>> 16) & 0xff;
    out[j + 3] = b >>> 24;
  }
  return out;
}

/**
 * Serializes float32 tensors into a safetensors file in memory (see planSafetensors for the layout).
 * Deterministic: the same tensors and metadata give the same bytes whatever the iteration order.
 */
export function serializeSafetensors(
  tensors: Iterable<[string, F32Tensor]>,
  metadata?: Record<string, string>,
): Uint8Array {
  const { head, order, size } = planSafetensors(tensors, metadata);
  const out = new Uint8Array(size);
  out.set(head, 0);
  let pos = head.length;
  for (const [, t] of order) {
    out.set(f32Bytes(t.data), pos);
    pos += t.data.byteLength;
  }
  return out;
}
