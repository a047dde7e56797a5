// The `gpu` backend in a browser: the same gpu.js kernels (kernels.ts) on a device thread that
// runs in a Web Worker (browser-device.ts). Creating it is asynchronous (the device worker only
// starts once the creating thread yields); using it is synchronous, like in Node.

import { RrtError } from '../../errors.js';
import { BrowserGpuDevice, type BrowserGpuMode } from './browser-device.js';
import { createDeviceBackend, type DeviceBackend } from './device-backend.js';

export { BROWSER_GPU_MODES, type BrowserGpuMode, type BrowserDeviceMemory } from './browser-device.js';

export interface BrowserGpuBackendOptions {
  /**
   * URL of gpu.js's browser build (`gpu.js/dist/gpu-browser.min.js`), as the page serves it;
   * with Vite: `import gpujsUrl from 'gpu.js/dist/gpu-browser.min.js?url'`.
   */
  gpujsUrl: string;
  /** Force a gpu.js mode (default: the best that runs: webgpu, webgl2, webasm, cpu). */
  mode?: BrowserGpuMode;
  /** How long a read may wait for the device, ms (default 10 minutes). */
  timeoutMs?: number;
  /** Backend name (default 'gpu'). */
  name?: string;
}

/** The gpu backend in a browser: the device thread is a Web Worker of this worker. */
export type BrowserGpuBackend = DeviceBackend<BrowserGpuMode>;

/**
 * Creates a gpu backend in a browser Web Worker (not a page's main thread: reads block on
 * Atomics.wait), on a cross-origin isolated page. Throws a RrtError saying what to change when
 * that is not the case or no gpu.js mode runs.
 */
export async function createBrowserGpuBackend(options: BrowserGpuBackendOptions): Promise<BrowserGpuBackend> {
  if (typeof options?.gpujsUrl !== 'string' || options.gpujsUrl === '') {
    throw new RrtError("createBrowserGpuBackend: options.gpujsUrl must be the URL of gpu.js's browser build (gpu.js/dist/gpu-browser.min.js), got " + String(options?.gpujsUrl));
  }
  const name = options.name ?? 'gpu';
  const timeoutMs = options.timeoutMs ?? 600_000;
  const device = await BrowserGpuDevice.start({ gpujsUrl: options.gpujsUrl, mode: options.mode, timeoutMs });
  // WebGL2 is a texture mode like headless GL (gpu.js builds headless GL kernels on its WebGL
  // ones), so the kernels take the same code paths for both.
  const mode = device.init.mode;
  return createDeviceBackend(name, device, mode === 'webgl2' ? 'headlessgl' : mode);
}
