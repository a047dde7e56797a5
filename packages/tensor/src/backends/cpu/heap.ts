// The wasm heap allocator. Blocks come from size-class free lists kept in JS (O(1) alloc and
// free), else from a bump pointer; memory grows on demand and is never returned (wasm memory
// cannot shrink). Block starts are 64-byte aligned (cache lines, SIMD loads).

import { RrtError } from '../../errors.js';
import { MAX_PAGES, type WasmMemory } from './wasm.js';

const PAGE = 65536;
const ALIGN = 64;
/** Classes: 64-byte steps up to 1 KiB, then 4 per power of two (at most 25% slack). */
const SMALL_LIMIT = 1024;
const NUM_CLASSES = 16 + (32 - 10) * 4 + 1;
/** From this block size on, alloc takes a free larger block (up to 2x) before carving. */
const REUSE_LARGER_MIN = 65536;

/** Size class of a block of `bytes` (> 0). */
export function sizeClass(bytes: number): number {
  if (bytes <= SMALL_LIMIT) return (bytes + ALIGN - 1) >>> 6;
  const e = 31 - Math.clz32(bytes - 1); // 2^e < bytes <= 2^(e+1), e >= 10
  const shift = e - 2;
  const q = ((bytes - 1) >>> shift) + 1; // 5..8
  return 16 + (e - 10) * 4 + (q - 4);
}

/** Bytes of every block in class `c`. */
export function classBytes(c: number): number {
  if (c <= 16) return c * ALIGN;
  const e = 10 + Math.floor((c - 17) / 4);
  const q = ((c - 17) % 4) + 5;
  return q * 2 ** (e - 2);
}

export class WasmHeap {
  buffer: SharedArrayBuffer;
  f32: Float32Array;
  i32: Int32Array;
  /** Bytes of memory (the wasm heap size). */
  limit: number;
  private top: number;
  private readonly base: number;
  private readonly lists: number[][] = [];
  private readonly sizes: number[] = [];
  /** Class of the block handed out by the last alloc. */
  lastClass = 0;
  blocks = 0;
  bytesInUse = 0;

  constructor(readonly memory: WasmMemory, heapBase: number) {
    this.buffer = memory.buffer as unknown as SharedArrayBuffer;
    this.f32 = new Float32Array(this.buffer);
    this.i32 = new Int32Array(this.buffer);
    this.limit = this.buffer.byteLength;
    this.base = this.top = Math.ceil(heapBase / ALIGN) * ALIGN;
    for (let c = 0; c < NUM_CLASSES; c++) {
      this.lists.push([]);
      this.sizes.push(classBytes(c));
    }
  }

  /** A block of at least `bytes` (> 0) bytes; its class is left in lastClass. */
  alloc(bytes: number): number {
    const c = sizeClass(bytes);
    const list = this.lists[c];
    this.blocks++;
    if (list.length > 0) {
      this.lastClass = c;
      return list.pop()!;
    }
    const size = this.sizes[c];
    // Before carving new memory (which then counts in RSS for good), reuse a free block up to
    // one doubling larger for blocks of 64 KiB and up (the large tensors of a training step).
    if (size >= REUSE_LARGER_MIN || this.top + size > this.limit) {
      for (let d = c + 1; d <= c + 4 && d < NUM_CLASSES; d++) {
        if (this.lists[d].length > 0) {
          this.lastClass = d;
          return this.lists[d].pop()!;
        }
      }
    }
    if (this.top + size > this.limit) this.grow(this.top + size);
    const p = this.top;
    this.top += size;
    this.lastClass = c;
    return p;
  }

  free(ptr: number, cls: number): void {
    this.blocks--;
    this.lists[cls].push(ptr);
  }

  /** Bytes taken from the bump region so far (live plus free-listed blocks). */
  get bytesCarved(): number {
    return this.top - this.base;
  }

  private grow(needed: number): void {
    const pages = this.limit / PAGE;
    const min = Math.ceil((needed - this.limit) / PAGE);
    if (pages + min > MAX_PAGES) {
      throw new RrtError(`cpu backend: out of wasm memory: need ${needed} bytes, the wasm32 limit is 4 GiB (${this.bytesInUse} bytes in live storages)`);
    }
    // Grow geometrically (x1.5, at least 16 MiB) so growth is rare.
    const want = Math.min(MAX_PAGES - pages, Math.max(min, Math.ceil(pages / 2), 256));
    try {
      this.memory.grow(want);
    } catch {
      try {
        this.memory.grow(min);
      } catch {
        throw new RrtError(`cpu backend: the system refused to grow wasm memory to ${needed} bytes`);
      }
    }
    this.buffer = this.memory.buffer as unknown as SharedArrayBuffer;
    this.f32 = new Float32Array(this.buffer);
    this.i32 = new Int32Array(this.buffer);
    this.limit = this.buffer.byteLength;
  }
}
