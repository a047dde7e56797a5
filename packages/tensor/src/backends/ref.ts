// The reference backend: storage is a Float32Array on the JS heap and every kernel is the
// plain-JS one (float64 accumulation). Slow, simple, and the oracle of every test.

import type { Backend, HostStorage, Storage } from '../backend.js';
import { jsKernels } from './js/kernels.js';

class RefStorage implements HostStorage {
  readonly ptr = -1;
  constructor(readonly backend: Backend, readonly data: Float32Array) {}
  get size(): number { return this.data.length; }
}

/**
 * Creates the `ref` backend. With precision 64 the storage is a Float64Array behind the same
 * interface (the `ref64` backend): finite-difference gradient checks use it.
 */
export function createRefBackend(precision: 32 | 64 = 32): Backend {
  const Store = precision === 64 ? Float64Array : Float32Array;
  const name = precision === 64 ? 'ref64' : 'ref';
  let live = 0;
  let bytes = 0;
  const backend: Backend = {
    name,
    kernels: jsKernels,
    alloc(size) {
      live++; bytes += size * 4;
      return new RefStorage(backend, new Store(size) as Float32Array);
    },
    upload(values) {
      live++; bytes += values.length * 4;
      return new RefStorage(backend, Store.from(values) as Float32Array);
    },
    read(s: Storage) { return Float32Array.from((s as RefStorage).data); },
    free(s: Storage) { live--; bytes -= s.size * 4; },
    info: () => ({ name, details: { accumulation: 'float64', storage: `float${precision}`, memory: 'js-heap' } }),
    memory: () => ({ storages: live, bytesInUse: bytes * (precision / 32), bytesReserved: bytes * (precision / 32) }),
  };
  return backend;
}
