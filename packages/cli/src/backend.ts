// Picks the tensor backend for a command: --backend, else $RRT_BACKEND, else cpu (falling back
// to ref where the cpu kernels are not built, so accounting commands work on a fresh checkout).

import { listBackends, setBackend, type Backend } from '@rrt/tensor';
import { UsageError } from './errors.js';

export interface BackendChoice {
  backend: Backend;
  /** Why the backend differs from what was asked for, if it does. */
  fallbackNote?: string;
}

function unavailable(name: string, from: string): UsageError {
  return new UsageError(`${from}: backend '${name}' is not available; available here: ${listBackends().join(', ')}`);
}

export function selectBackend(requested: string | undefined, env: Readonly<Record<string, string | undefined>>): BackendChoice {
  const available = listBackends();
  if (requested !== undefined) {
    if (!available.includes(requested)) throw unavailable(requested, '--backend');
    return { backend: setBackend(requested) };
  }
  const fromEnv = env.RRT_BACKEND;
  if (fromEnv !== undefined && fromEnv !== '') {
    if (!available.includes(fromEnv)) throw unavailable(fromEnv, 'RRT_BACKEND');
    return { backend: setBackend(fromEnv) };
  }
  if (available.includes('cpu')) return { backend: setBackend('cpu') };
  return { backend: setBackend('ref'), fallbackNote: 'cpu backend not available in this build' };
}

/** "backend: ref (accumulation float64, storage float32)": the first line of every command's human output. */
export function backendLine(choice: BackendChoice): string {
  const info = choice.backend.info();
  const details = Object.entries(info.details)
    .map(([k, v]) => `${k} ${String(v)}`)
    .join(', ');
  const extra = [details, choice.fallbackNote].filter((s) => s).join('; ');
  return `backend: ${info.name}${extra ? ` (${extra})` : ''}`;
}
