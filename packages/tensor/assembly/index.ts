// Entry of the cpu backend's WebAssembly module. Memory is imported (shared with the worker
// threads); there is no allocator or GC here: JavaScript owns the heap and passes byte pointers.

export * from './matmul';
export * from './elementwise';
export * from './rows';
export * from './movement';
export * from './attention';

/** First byte after static data: JavaScript's heap starts at or above it. */
export function heapBase(): usize {
  return __heap_base;
}
