// Helpers for tests (here and in the other packages): which backends to run on.

import { backendByName, listBackends, type Backend } from './backend.js';

/** Backends that can be created on this machine, excluding the float64 oracle. */
export function availableBackends(): Backend[] {
  const out: Backend[] = [];
  for (const name of listBackends()) {
    if (name === 'ref64') continue;
    try {
      out.push(backendByName(name));
    } catch {
      // A backend whose runtime is missing here (e.g. no GPU mode) is reported by its own suite.
    }
  }
  return out;
}
