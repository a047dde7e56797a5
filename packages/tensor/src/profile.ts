// Kernel profiling: while enabled, a backend's kernel table is replaced by a Proxy that times
// every call by kernel name (unary/binary/reduce also by op). Disabled, the original table is
// back in place, so ordinary runs pay nothing.

import type { Backend, Kernels } from './backend.js';

export interface KernelTiming {
  /** e.g. 'matmul', 'binary:add', 'unaryGrad:gelu_tanh'. */
  kernel: string;
  calls: number;
  ms: number;
}

interface Profiled {
  original: Kernels;
  stats: Map<string, { calls: number; ms: number }>;
}

const active = new WeakMap<Backend, Profiled>();
// Kernels whose first argument names the op; their timings are split by it.
const BY_OP = new Set(['unary', 'unaryGrad', 'binary', 'reduce']);

/** Starts timing every kernel call of `backend` (a no-op if already profiling). */
export function startProfile(backend: Backend): void {
  if (active.has(backend)) return;
  const original = backend.kernels;
  const stats = new Map<string, { calls: number; ms: number }>();
  const wrapped = new Map<PropertyKey, unknown>();
  const proxy = new Proxy(original, {
    get(target, prop) {
      const f = (target as unknown as Record<PropertyKey, unknown>)[prop];
      if (typeof f !== 'function') return f;
      let w = wrapped.get(prop);
      if (!w) {
        const name = String(prop);
        const byOp = BY_OP.has(name);
        w = (...args: unknown[]) => {
          const key = byOp ? `${name}:${String(args[0])}` : name;
          const t = performance.now();
          try {
            return (f as (...a: unknown[]) => unknown).apply(target, args);
          } finally {
            const ms = performance.now() - t;
            const s = stats.get(key);
            if (s) {
              s.calls++;
              s.ms += ms;
            } else stats.set(key, { calls: 1, ms });
          }
        };
        wrapped.set(prop, w);
      }
      return w;
    },
  });
  active.set(backend, { original, stats });
  setKernels(backend, proxy);
}

/** Stops profiling `backend` and returns its timings, slowest first (empty if it was not profiled). */
export function stopProfile(backend: Backend): KernelTiming[] {
  const p = active.get(backend);
  if (!p) return [];
  active.delete(backend);
  setKernels(backend, p.original);
  return [...p.stats].map(([kernel, s]) => ({ kernel, calls: s.calls, ms: s.ms })).sort((a, b) => b.ms - a.ms);
}

// `kernels` is readonly in the type only; backends are plain objects.
function setKernels(backend: Backend, kernels: Kernels): void {
  Object.defineProperty(backend, 'kernels', { value: kernels, writable: true, configurable: true, enumerable: true });
}
