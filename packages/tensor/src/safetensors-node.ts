// Node-only safetensors I/O through file descriptors: one tensor in memory at a time.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { FormatError, RrtError } from './errors.js';
import {
  DTYPE_SIZES,
  type F32Tensor,
  type SafetensorsHeader,
  type TensorEntry,
  allocF32,
  decodeToF32,
  f32Bytes,
  missingTensor,
  parseSafetensorsHeader,
  planSafetensors,
  requireReadable,
  safetensorsHeaderLength,
} from './safetensors.js';

// readSync/writeSync take at most 2 GiB per call; converted dtypes go through a bounded scratch buffer.
const IO_CHUNK = 1 << 30;
const SCRATCH_BYTES = 1 << 23;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function ioError(what: string, path: string, e: unknown): RrtError {
  const err = new RrtError(`safetensors ${path}: ${what} failed: ${(e as Error)?.message ?? String(e)}`);
  (err as Error & { cause?: unknown }).cause = e;
  return err;
}

/** Reads exactly `length` bytes at `position` into `buf`; FormatError if the file ends first. */
function readFully(fd: number, buf: Uint8Array, position: number, path: string, what: string): void {
  let done = 0;
  while (done < buf.length) {
    let got: number;
    try {
      got = readSync(fd, buf, done, Math.min(buf.length - done, IO_CHUNK), position + done);
    } catch (e) {
      throw ioError(`reading ${what}`, path, e);
    }
    if (got === 0) {
      throw new FormatError(`safetensors ${path}: truncated while reading ${what}, expected ${buf.length} bytes at ${position}, got ${done}`);
    }
    done += got;
  }
}

function writeFully(fd: number, buf: Uint8Array, path: string): void {
  let done = 0;
  while (done < buf.length) {
    try {
      done += writeSync(fd, buf, done, Math.min(buf.length - done, IO_CHUNK));
    } catch (e) {
      throw ioError('write', path, e);
    }
  }
}

/**
 * A safetensors file opened for random access. The header is read and validated on open;
 * `read` then loads one tensor by its offsets, so a checkpoint larger than memory can be
 * walked tensor by tensor. Call `close()` when done.
 */
export class SafetensorsFile {
  /** The validated header (tensors in offset order). */
  readonly header: SafetensorsHeader;
  /** The path the file was opened from, used in error messages. */
  readonly path: string;
  private fd: number | undefined;

  private constructor(path: string, fd: number, header: SafetensorsHeader) {
    this.path = path;
    this.fd = fd;
    this.header = header;
  }

  /** Opens `path` and validates its header; throws FormatError for a malformed file, RrtError if it cannot be opened. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw ioError('open', path, e);
    }
    try {
      let size: number;
      try {
        size = fstatSync(fd).size;
      } catch (e) {
        throw ioError('stat', path, e);
      }
      const prefix = new Uint8Array(8);
      if (size >= 8) readFully(fd, prefix, 0, path, 'the header length');
      const n = safetensorsHeaderLength(prefix, size, path);
      // n is capped and within the file, so this allocation is bounded.
      const head = new Uint8Array(8 + n);
      head.set(prefix);
      readFully(fd, head.subarray(8), 8, path, 'the header');
      return new SafetensorsFile(path, fd, parseSafetensorsHeader(head, size, path));
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Tensor names in file (offset) order. */
  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  /** The header entry of `name` (dtype, shape, offsets); RrtError if there is none. */
  entry(name: string): TensorEntry {
    const e = this.header.tensors.get(name);
    if (!e) missingTensor(name, this.header, this.path);
    return e;
  }

  /** Reads one tensor and decodes it to float32 (F32, F16, BF16; other dtypes throw FormatError). */
  read(name: string): F32Tensor {
    if (this.fd === undefined) throw new RrtError(`safetensors ${this.path}: read("${name}") after close()`);
    const fd = this.fd;
    const entry = this.entry(name);
    requireReadable(entry, name, this.path);
    const data = allocF32(entry, name, this.path);
    const start = this.header.dataStart + entry.offsets[0];
    const nbytes = entry.offsets[1] - entry.offsets[0];
    const what = `tensor "${name}"`;
    if (entry.dtype === 'F32' && LITTLE_ENDIAN) {
      // Same byte order on disk and in memory: read straight into the result.
      readFully(fd, new Uint8Array(data.buffer, data.byteOffset, nbytes), start, this.path, what);
    } else {
      const size = DTYPE_SIZES[entry.dtype]!;
      const scratch = new Uint8Array(Math.min(nbytes, SCRATCH_BYTES - (SCRATCH_BYTES % size)));
      for (let done = 0; done < nbytes; ) {
        const chunk = scratch.subarray(0, Math.min(scratch.length, nbytes - done));
        readFully(fd, chunk, start + done, this.path, what);
        decodeToF32(entry.dtype, chunk, data, done / size, `${this.path}: ${what}`);
        done += chunk.length;
      }
    }
    return { shape: entry.shape.slice(), data };
  }

  /** Closes the file descriptor; later reads throw. Safe to call twice. */
  close(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    closeSync(fd);
  }
}

let tmpCounter = 0;

/**
 * Writes float32 tensors to `path` as safetensors (same bytes as serializeSafetensors), streaming
 * tensor by tensor into a temporary file in the same directory, fsyncing it, then renaming it over
 * `path`. A crash or error leaves either the old file or the complete new one, never a partial file.
 */
export function writeSafetensorsFile(
  path: string,
  tensors: Iterable<[string, F32Tensor]>,
  metadata?: Record<string, string>,
): void {
  const { head, order } = planSafetensors(tensors, metadata);
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${Date.now()}.${tmpCounter++}.tmp`);
  let fd: number | undefined;
  let created = false;
  try {
    try {
      fd = openSync(tmp, 'wx');
      created = true;
    } catch (e) {
      throw ioError('creating the temporary file', tmp, e);
    }
    writeFully(fd, head, tmp);
    for (const [, t] of order) writeFully(fd, f32Bytes(t.data), tmp);
    try {
      fsyncSync(fd);
    } catch (e) {
      throw ioError('fsync', tmp, e);
    }
    const closing = fd;
    fd = undefined;
    closeSync(closing);
    try {
      renameSync(tmp, path);
    } catch (e) {
      throw ioError(`renaming ${tmp} to`, path, e);
    }
  } catch (e) {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // already failing; the original error matters
      }
    }
    if (created) {
      try {
        unlinkSync(tmp);
      } catch {
        // already renamed or removed
      }
    }
    throw e;
  }
  // Persist the rename itself; directories cannot be fsynced on every platform, so this is best effort.
  try {
    const dfd = openSync(dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // best effort
  }
}
