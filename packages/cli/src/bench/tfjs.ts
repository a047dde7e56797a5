// Loads TensorFlow.js with its WebAssembly backend in this process, for side-by-side numbers.

import { createRequire, register } from 'node:module';
import { dirname } from 'node:path';

export type Tf = typeof import('@tensorflow/tfjs-core');

export interface TfjsInfo {
  backend: string;
  version: string;
  simd: boolean;
  threads: number;
}

export interface TfjsWasm {
  tf: Tf;
  info: TfjsInfo;
}

let loading: Promise<TfjsWasm> | null = null;
let gradients: Promise<void> | null = null;

/** tfjs-core on the wasm backend, initialised once per process. */
export function loadTfjsWasm(): Promise<TfjsWasm> {
  loading ??= (async () => {
    const tf = await import('@tensorflow/tfjs-core');
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    // In Node the wasm binaries are read from the package's dist folder.
    const require = createRequire(import.meta.url);
    wasm.setWasmPaths(`${dirname(require.resolve('@tensorflow/tfjs-backend-wasm'))}/`);
    if (!(await tf.setBackend('wasm'))) throw new Error('tfjs: the wasm backend did not initialise');
    await tf.ready();
    const simd = Boolean(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'));
    return { tf, info: { backend: tf.getBackend(), version: tf.version_core, simd, threads: wasm.getThreadsCount() } };
  })();
  return loading;
}

// tfjs-core registers no gradients itself (the @tensorflow/tfjs bundle does). Its ESM files use
// extensionless imports, which Node's resolver rejects, so a resolve hook scoped to tfjs-core's
// dist folder adds ".js" (or "/index.js") before importing register_all_gradients.
const RESOLVE_HOOK = `export async function resolve(s, c, next) {
  if (s.startsWith('.') && !s.endsWith('.js') && c.parentURL && c.parentURL.includes('/tfjs-core/dist/')) {
    try { return await next(s + '.js', c); } catch { return next(s + '/index.js', c); }
  }
  return next(s, c);
}`;

/** Registers tfjs-core's gradient functions (needed for training), once per process. */
export function loadTfjsGradients(): Promise<void> {
  gradients ??= (async () => {
    register(`data:text/javascript,${encodeURIComponent(RESOLVE_HOOK)}`);
    await import('@tensorflow/tfjs-core/dist/register_all_gradients.js');
  })();
  return gradients;
}
