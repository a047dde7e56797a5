// The device thread of the gpu backend, as source text for an eval'd worker (like the cpu
// backend's pool): it owns gpu.js, every kernel and every device buffer. WebGPU reads back only
// asynchronously (mapAsync), while Backend.read is synchronous, so the main thread queues
// commands here and blocks on Atomics.wait only when it needs values; this thread's event loop
// keeps running meanwhile. Kernel sources are generated on the main thread (codegen.ts).

/** Int32 slots of the control block shared with the main thread. */
export const CTL = {
  /** Sequence number of the last answered sync point. */
  done: 0,
  /** 0: ok, 1: an error (message in the text area). */
  status: 1,
  /** Byte length of the text in the text area. */
  textLength: 2,
  /** Live handles (device storages) held by the worker. */
  handles: 3,
  /** Live device buffers (webgpu: every GPUBuffer, kernels' own included). */
  buffers: 4,
  /** Kernels built so far. */
  kernels: 5,
  /** Set to 1 when the worker died; the text says why. */
  dead: 6,
  /** Start-up progress: START_MODES index * 16 + START_STEPS index (see startStepText). */
  step: 7,
} as const;
/** Float64 slots (after the Int32 ones). */
export const CTL_F64 = { handleBytes: 0, bufferBytes: 1 } as const;
export const CTL_INTS = 8;
export const CTL_TEXT_OFFSET = 64;
export const CTL_BYTES = CTL_TEXT_OFFSET + 64 * 1024;

/** Every mode a device thread may probe (Node's and the browser's), for the start-up step slot. */
export const START_MODES = ['webgpu', 'webgl2', 'headlessgl', 'webasm', 'cpu'] as const;
/** What a device thread does while it starts, in order (a hung start-up names its step). */
export const START_STEPS = [
  'starting the device thread',
  'loading the webgpu package (Dawn)',
  'requesting a WebGPU adapter',
  'requesting a WebGPU device',
  'loading gpu.js',
  'compiling and running the probe kernel',
  'reading the probe kernel back',
] as const;

/** The start-up step a device thread last reported (the CTL.step slot): its mode, once one is being probed, and the step. */
export function startStep(code: number): { mode?: (typeof START_MODES)[number]; step: string } {
  const mode = START_MODES[Math.floor(code / 16) - 1];
  return { mode, step: START_STEPS[code % 16] ?? START_STEPS[0] };
}

/** e.g. 'webgpu: requesting a WebGPU adapter'. */
export function startStepText(code: number): string {
  const { mode, step } = startStep(code);
  return mode ? `${mode}: ${step}` : step;
}

export const WORKER_SOURCE = String.raw`
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const { gpujsDir, dawnPath, forcedMode, skip, ctlBuffer } = workerData;
// How long one mode's probe may take before the next mode is tried (0: no bound).
const probeTimeoutMs = workerData.probeTimeoutMs || 0;
// A browser device thread (see browser-device.ts) sends its own mode order (webgl2 instead of
// headlessgl) and has navigator.gpu natively.
const modeOrder = workerData.modes || ['webgpu', 'headlessgl', 'webasm', 'cpu'];
const inBrowser = workerData.browser === true;
// Modes whose pipeline results are textures (read with toArray, uploaded through a copy kernel).
const textureMode = (m) => m === 'headlessgl' || m === 'webgl2';
const ctl = new Int32Array(ctlBuffer, 0, ${CTL_INTS});
const ctl64 = new Float64Array(ctlBuffer, ${CTL_INTS * 4}, 2);
const text = new Uint8Array(ctlBuffer, ${CTL_TEXT_OFFSET});
const encoder = new TextEncoder();
const startModes = ${JSON.stringify(START_MODES)};
const startSteps = ${JSON.stringify(START_STEPS)};
// Start-up progress for the main thread, which names the step when start-up runs out of time.
function step(m, name) {
  Atomics.store(ctl, ${CTL.step}, (startModes.indexOf(m) + 1) * 16 + startSteps.indexOf(name));
}

let GPU = null;
let gpu = null;
let mode = null;
let BufferResult = null;
let device = null;
let context = null;
let reader = null;
let liveBuffers = 0, bufferBytes = 0;
const handles = new Map();
let handleBytes = 0;
const kernels = new Map();
let built = 0;
let pendingError = null;

function writeText(s) {
  const bytes = encoder.encode(s.length > 60000 ? s.slice(0, 60000) + ' ...' : s);
  text.set(bytes);
  ctl[${CTL.textLength}] = bytes.length;
}

function publishStats() {
  ctl[${CTL.handles}] = handles.size;
  ctl[${CTL.buffers}] = liveBuffers;
  ctl[${CTL.kernels}] = built;
  ctl64[${CTL_F64.handleBytes}] = handleBytes;
  ctl64[${CTL_F64.bufferBytes}] = bufferBytes;
}

/** Answers sync point seq: status, text (error or payload) and stats. */
function answer(seq, error, payload) {
  if (error) {
    ctl[${CTL.status}] = 1;
    writeText(error);
  } else {
    ctl[${CTL.status}] = 0;
    writeText(payload || '');
  }
  publishStats();
  Atomics.store(ctl, ${CTL.done}, seq);
  Atomics.notify(ctl, ${CTL.done});
}

function die(e) {
  writeText('gpu worker died: ' + (e && e.stack ? e.stack : String(e)));
  ctl[${CTL.status}] = 1;
  Atomics.store(ctl, ${CTL.dead}, 1);
  Atomics.notify(ctl, ${CTL.done});
}
process.on('uncaughtException', die);
process.on('unhandledRejection', die);

const message = (e) => (e && e.message ? e.message : String(e));

// ---- modes -------------------------------------------------------------------------------

// Counts every GPUBuffer so tests can see device memory, kernels' own buffers included, and
// recycles destroyed ones: every kernel run writes a fresh output buffer (immutable pipeline
// kernels), and a new buffer costs an allocation plus the zero-fill WebGPU does before first use.
// A destroyed buffer may be reused at once: the queue orders it after the work that read it.
const POOL_LIMIT = (Number(process.env.RRT_GPU_POOL_MB) >= 0 ? Number(process.env.RRT_GPU_POOL_MB) : 512) * 1048576;
const pool = new Map();
let pooledBytes = 0;
let pooling = true;
function countBuffers(dev) {
  const create = dev.createBuffer.bind(dev);
  dev.createBuffer = (desc) => {
    const size = desc.size;
    const key = size + ':' + desc.usage;
    if (!desc.mappedAtCreation) {
      const free = pool.get(key);
      if (free && free.length > 0) {
        const b = free.pop();
        pooledBytes -= size;
        b._pooled = false;
        return b;
      }
    }
    const b = create(desc);
    liveBuffers++;
    bufferBytes += size;
    const destroy = b.destroy.bind(b);
    const poolable = (desc.usage & 0x01) === 0 && !desc.mappedAtCreation;
    let gone = false;
    b.destroy = () => {
      if (gone || b._pooled) return;
      if (pooling && poolable && pooledBytes + size <= POOL_LIMIT) {
        b._pooled = true;
        pooledBytes += size;
        let free = pool.get(key);
        if (!free) pool.set(key, (free = []));
        free.push(b);
        return;
      }
      gone = true;
      liveBuffers--;
      bufferBytes -= size;
      destroy();
    };
    return b;
  };
}

// gpu.js loads the optional gl package (a native addon) when it loads, and such an addon loads
// in one thread per process only: threads that will not use headless GL get a stub instead, so
// the thread that does can still have it.
function loadGpujs(withGl) {
  if (GPU) return;
  if (!withGl) {
    try {
      const Module = require('node:module');
      const path = Module.createRequire(gpujsDir + '/package.json').resolve('gl');
      const stub = new Module(path);
      stub.filename = path;
      stub.loaded = true;
      stub.exports = function () { return null; };
      require.cache[path] = stub;
    } catch (e) {
      // gl is not installed: nothing to keep out.
    }
  }
  GPU = require(gpujsDir).GPU;
}

async function probe(m) {
  const details = {};
  if (m !== 'webgpu') step(m, 'loading gpu.js');
  if (m === 'webgpu') {
    if (inBrowser) {
      if (!(globalThis.navigator && navigator.gpu)) throw new Error('navigator.gpu is missing: this browser has no WebGPU');
    } else {
      if (!dawnPath) throw new Error('the webgpu package (Dawn for Node) is not installed');
      step(m, 'loading the webgpu package (Dawn)');
      const { create, globals } = require(dawnPath);
      Object.assign(globalThis, globals);
      globalThis.navigator = { gpu: create([]) };
    }
    step(m, 'requesting a WebGPU adapter');
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error(inBrowser ? 'navigator.gpu.requestAdapter() gave no adapter (WebGPU disabled or unsupported here)' : 'no WebGPU adapter answered (no Vulkan driver? on Debian: mesa-vulkan-drivers from bookworm-backports)');
    const info = adapter.info || {};
    details.adapter = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' / ') || 'unknown';
    details.maxBufferBytes = Math.min(adapter.limits.maxStorageBufferBindingSize, adapter.limits.maxBufferSize);
    step(m, 'loading gpu.js');
    loadGpujs(false);
    const { WebGPUContext } = require(gpujsDir + '/src/backend/web-gpu/context.js');
    BufferResult = require(gpujsDir + '/src/backend/web-gpu/buffer-result.js').WebGPUBufferResult;
    step(m, 'requesting a WebGPU device');
    context = await WebGPUContext.acquire();
    device = context.device;
    countBuffers(device);
    gpu = new GPU({ mode: 'webgpu' });
  } else if (m === 'webgl2') {
    loadGpujs(false);
    if (!GPU.isWebGL2Supported) throw new Error('WebGL2 is unavailable in this thread (no OffscreenCanvas WebGL2 context)');
    gpu = new GPU({ mode: 'webgl2' });
  } else if (m === 'headlessgl') {
    loadGpujs(true);
    if (!GPU.isHeadlessGLSupported) throw new Error('headless GL is unavailable (the optional gl package is missing, unbuilt, or has no display)');
    gpu = new GPU({ mode: 'headlessgl' });
  } else if (m === 'webasm') {
    loadGpujs(false);
    if (!GPU.isWebAssemblySupported) throw new Error('WebAssembly is unavailable');
    gpu = new GPU({ mode: 'webasm' });
  } else if (m === 'cpu') {
    loadGpujs(false);
    gpu = new GPU({ mode: 'cpu' });
  } else {
    throw new Error('unknown gpu.js mode "' + m + '" (expected webgpu, headlessgl, webasm or cpu)');
  }
  mode = m;
  // A probe kernel proves the mode runs, including the integer index arithmetic every
  // kernel relies on.
  const src = 'function(a) { let i = 0; i++; i = this.thread.x; let q = 0; q++; q = (i / 3) | 0; return a[i] * 2 + q; }';
  step(m, 'compiling and running the probe kernel');
  const k = gpu.createKernel(src, settings([7]));
  const input = upload(Float32Array.from([1, 2, 3, 4, 5, 6, 7]));
  let out = k(input);
  if (out && typeof out.then === 'function') out = await out;
  checkMode(k, 'probe');
  step(m, 'reading the probe kernel back');
  const got = await readHandle(detach(k, out, false, [7]));
  const want = [2, 4, 6, 9, 11, 13, 16];
  for (let i = 0; i < 7; i++) {
    if (got[i] !== want[i]) throw new Error('probe kernel returned ' + Array.from(got).join(',') + ', expected ' + want.join(','));
  }
  if (m === 'webgpu') reader = k.kernel;
  return details;
}

function cleanup(m) {
  try { if (gpu) gpu.destroy(); } catch (e) {}
  gpu = null;
  device = null;
  context = null;
  if (m === 'webgpu') delete globalThis.navigator;
  mode = null;
}

// A probe that never settles (an adapter request no driver answers) moves on to the next mode.
function bounded(promise) {
  if (!probeTimeoutMs) return promise;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const at = startSteps[Atomics.load(ctl, ${CTL.step}) % 16];
      reject(new Error('did not start within ' + probeTimeoutMs + ' ms (stuck ' + at + ')'));
    }, probeTimeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function init() {
  const order = forcedMode ? [forcedMode] : modeOrder;
  const skipped = {};
  for (const m of order) {
    if (skip[m]) {
      skipped[m] = skip[m];
      continue;
    }
    try {
      step(m, 'starting the device thread');
      const details = await bounded(probe(m));
      return { mode: m, skipped, details };
    } catch (e) {
      skipped[m] = message(e).split('\n')[0];
      cleanup(m);
    }
  }
  if (forcedMode) throw new Error(skipped[forcedMode]);
  throw new Error(Object.entries(skipped).map(([m, r]) => m + ': ' + r).join('; '));
}

// ---- handles -----------------------------------------------------------------------------

/** threads: gpu.js output dims (x first); each thread returns 4 floats when vec4. */
function settings(threads) {
  return {
    output: threads,
    pipeline: true,
    immutable: true,
    precision: 'single',
    tactic: 'precision',
  };
}

// A kernel whose fallback replaced it with gpu.js's CPU kernel would run silently on the host.
function checkMode(k, name) {
  const inner = k.kernel;
  if (!inner || inner.constructor !== gpu.Kernel) {
    const got = inner && inner.constructor && inner.constructor.mode;
    throw new Error('kernel ' + name + ' runs in gpu.js mode "' + got + '" instead of "' + mode + '"' + (inner && inner.fallbackReason ? ': ' + inner.fallbackReason : ''));
  }
}

function sizeOf(h) {
  if (mode === 'webgpu' || textureMode(mode)) return h.output[0];
  return h.length;
}

/** The kernel's result as a handle this thread owns alone. */
function detach(k, h, vec4, threads) {
  if (mode === 'webgpu') {
    // immutable pipeline kernels keep a reference to their last output until the next call;
    // drop it so free() returns the memory at once.
    const inner = k.kernel;
    if (inner.outputBuffer === h.buffer) {
      inner.outputBuffer._refs--;
      inner.outputBuffer = null;
      inner.bindGroupDirty = true;
    }
    if (vec4 || h.output.length > 1) {
      // Array(4) and 2D results are the same row-major floats: every handle is a flat buffer.
      const n = h.output.reduce((a, b) => a * b, 1) * h.componentCount;
      const flat = new BufferResult({ buffer: h.buffer, output: [n], componentCount: 1, context: h.context, kernel: h.kernel });
      h.delete();
      return flat;
    }
  } else if (vec4 || threads.length > 1) {
    throw new Error('vec4 and 2D kernels are webgpu-only');
  }
  return h;
}

function release(h) {
  if (!h) return;
  handleBytes -= sizeOf(h) * 4;
  if (typeof h.delete === 'function') h.delete();
}

function store(id, h) {
  const old = handles.get(id);
  handles.set(id, h);
  handleBytes += sizeOf(h) * 4;
  if (old) release(old);
}

function upload(data) {
  if (mode === 'webgpu') {
    const buffer = device.createBuffer({ size: Math.max(4, data.byteLength), usage: 0x80 | 0x04 | 0x08 });
    device.queue.writeBuffer(buffer, 0, data);
    return new BufferResult({ buffer, output: [data.length], componentCount: 1, context, kernel: reader });
  }
  if (textureMode(mode)) {
    let k = uploaders.get(data.length);
    if (!k) {
      k = gpu.createKernel('function(a) { return a[this.thread.x]; }', settings([data.length]));
      uploaders.set(data.length, k);
    }
    return k(data);
  }
  return data;
}
const uploaders = new Map();

async function readHandle(h) {
  if (mode === 'webgpu') {
    const r = reader || h.kernel;
    return r.readBufferResult(h);
  }
  if (textureMode(mode)) return h.toArray();
  return h;
}

function handle(id, k) {
  const h = handles.get(id);
  if (!h) throw new Error('kernel ' + k.name + ': storage #' + id + ' holds no device data (freed, or never written)');
  return h;
}

// ---- commands ----------------------------------------------------------------------------

function build(k) {
  try {
    k.fn = gpu.createKernel(k.source, settings(k.threads));
  } catch (e) {
    throw new Error('kernel ' + k.name + ' failed to build: ' + message(e) + '\n' + k.source);
  }
  built++;
}

function finishRun(k, out, h) {
  if (!k.checked) {
    checkMode(k.fn, k.name);
    k.checked = true;
  }
  store(out, detach(k.fn, h, k.vec4, k.threads));
}

function runError(k, e) {
  return new Error('kernel ' + k.name + ': ' + message(e) + (k.checked ? '' : '\n' + k.source));
}

function exec(c) {
  switch (c[0]) {
    case 'def':
      kernels.set(c[1], { name: c[2], source: c[3], threads: c[4], vec4: c[5], fn: null, checked: false });
      return;
    case 'run': {
      const k = kernels.get(c[1]);
      if (!k.fn) build(k);
      const kinds = c[3];
      const args = new Array(kinds.length);
      for (let i = 0; i < kinds.length; i++) args[i] = kinds[i] === 1 ? handle(c[4 + i], k) : c[4 + i];
      let r;
      try {
        r = k.fn.apply(null, args);
      } catch (e) {
        throw runError(k, e);
      }
      if (r && typeof r.then === 'function') return r.then((h) => finishRun(k, c[2], h), (e) => { throw runError(k, e); });
      finishRun(k, c[2], r);
      return;
    }
    case 'up':
      store(c[1], upload(c[2]));
      return;
    case 'free': {
      const h = handles.get(c[1]);
      if (h) { handles.delete(c[1]); release(h); }
      return;
    }
    case 'read': {
      const [, id, sab, seq] = c;
      if (pendingError) return flushError(seq);
      const h = handles.get(id);
      if (!h) return answer(seq, 'read of storage #' + id + ' that holds no device data');
      return Promise.resolve(readHandle(h)).then((data) => {
        new Float32Array(sab, 0, data.length).set(data);
        answer(seq, null);
      }, (e) => answer(seq, 'read failed: ' + message(e)));
    }
    case 'sync': {
      if (pendingError) return flushError(c[1]);
      if (mode === 'webgpu' && device) {
        // Wait for the queue so timings and errors reflect finished work.
        return device.queue.onSubmittedWorkDone().then(() => answer(c[1], null), (e) => answer(c[1], message(e)));
      }
      return answer(c[1], null);
    }
    case 'shutdown':
      return shutdown().then(() => answer(c[1], null), (e) => answer(c[1], message(e)));
    default:
      throw new Error('unknown command ' + c[0]);
  }
}

// Dawn must be idle and its device destroyed before this thread is torn down: a callback that
// fires during teardown aborts the whole process.
async function shutdown() {
  pooling = false;
  batches.length = 0;
  for (const h of handles.values()) release(h);
  handles.clear();
  if (gpu) { try { gpu.destroy(); } catch (e) {} }
  gpu = null;
  for (const free of pool.values()) for (const b of free) { b._pooled = false; b.destroy(); }
  pool.clear();
  if (device) {
    const d = device;
    device = null;
    await d.queue.onSubmittedWorkDone();
    d.destroy();
    await Promise.race([d.lost, new Promise((r) => setTimeout(r, 1000))]);
  }
  if (mode === 'webgpu') delete globalThis.navigator;
}

function flushError(seq) {
  const e = pendingError;
  pendingError = null;
  answer(seq, e);
}

const batches = [];
let running = false;
let stopping = false;
async function pump() {
  running = true;
  while (batches.length > 0) {
    const batch = batches.shift();
    for (let i = 0; i < batch.length; i++) {
      if (stopping && batch[i][0] !== 'shutdown') continue;
      try {
        const r = exec(batch[i]);
        if (r && typeof r.then === 'function') await r;
      } catch (e) {
        // Reported at the next sync point; later commands still run so handles stay consistent.
        if (!pendingError) pendingError = message(e);
      }
    }
  }
  running = false;
}

init().then((r) => {
  parentPort.on('message', (batch) => {
    // A shutdown skips the work still queued (the process is exiting).
    if (batch.some((c) => c[0] === 'shutdown')) stopping = true;
    batches.push(batch);
    if (!running) pump().catch(die);
  });
  answer(1, null, JSON.stringify(r));
}, (e) => answer(1, message(e)));
`;
