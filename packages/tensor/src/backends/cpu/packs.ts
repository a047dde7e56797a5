// Linear weights kept in the matmul kernel's packed form (Backend.packWeight): a serving step's
// products of 17-64 rows spend about a tenth of their time packing B (the LM head's, a third:
// rrt bench matmul --linear), the same work every call for a weight that does not change.

import type { HostStorage, Storage } from '../../backend.js';
import { RrtError } from '../../errors.js';
import type { WasmHeap } from './heap.js';
import type { KernelExports } from './wasm.js';

interface Pack {
  ptr: number;
  cls: number;
  n: number;
  k: number;
  bytes: number;
  /** packWeight calls not yet released. */
  holds: number;
}

export class WeightPacks {
  private readonly packs = new Map<Storage, Pack>();
  /** Bytes held by packed forms. */
  bytes = 0;

  constructor(
    private readonly ex: KernelExports,
    private readonly heap: WasmHeap,
  ) {}

  get count(): number {
    return this.packs.size;
  }

  /** Packs w ([n, k], read as B^T) or counts one more hold on its packed form; false when it cannot. */
  pack(w: Storage, n: number, k: number): boolean {
    if (n * k !== w.size || n === 0 || k === 0) return false;
    const have = this.packs.get(w);
    if (have && have.n === n && have.k === k) {
      have.holds++;
      return true;
    }
    if (have) this.drop(w);
    const bytes = this.ex.matmulPackedBytes(n, k);
    let ptr: number;
    try {
      ptr = this.heap.alloc(bytes);
    } catch (e) {
      // No room for a second copy (a model near the 4 GiB wasm32 limit): products pack as before.
      if (e instanceof RrtError) return false;
      throw e;
    }
    const pack: Pack = { ptr, cls: this.heap.lastClass, n, k, bytes, holds: 1 };
    this.ex.matmulPackB((w as HostStorage).ptr, n, k, 1, ptr);
    this.packs.set(w, pack);
    this.bytes += bytes;
    return true;
  }

  /** One hold less; the packed form goes with the last. */
  release(w: Storage): void {
    const p = this.packs.get(w);
    if (p && --p.holds === 0) this.drop(w);
  }

  /** w was written or freed: its packed form is stale. */
  written(w: Storage): void {
    if (this.packs.size !== 0 && this.packs.has(w)) this.drop(w);
  }

  /** Address of w's packed form as B^T of an n x k product, or 0. */
  address(w: Storage, n: number, k: number): number {
    const p = this.packs.size === 0 ? undefined : this.packs.get(w);
    return p && p.n === n && p.k === k ? p.ptr : 0;
  }

  private drop(w: Storage): void {
    const p = this.packs.get(w)!;
    this.packs.delete(w);
    this.heap.free(p.ptr, p.cls);
    this.bytes -= p.bytes;
  }
}
