// The model side of the page, in a Web Worker: reads of gpu tensors block (Atomics.wait), which
// a page's main thread may not do. Loads the shipped kjv-llama model from the files the page
// serves, turns it into a Recursive Transformer (2 loops over 3 shared blocks), optionally relaxes
// it with depth-wise LoRA, and serves the prompts through continuous depth-wise batching on the
// gpu backend, posting every batched call and every token to the page.

import { registerBrowserGpuBackend, setBackend, type BrowserGpuBackend } from '@rrt/tensor/browser';
import { loadPretrainedFromBytes, tokenizerFromJSON, type CausalLM, type Tokenizer } from '@rrt/layers';
import { CYCLE, stepwise, toRecursive, type Conversion } from '@rrt/recursive';
import { relax, type RelaxedLora } from '@rrt/lora';
import { ServingEngine, maxProbExit, neverExit } from '@rrt/batching';
import type { InitRequest, RunRequest, WorkerEvent } from './protocol.mjs';

/** The LoRA rank of every relaxed projection (SVD init from the conversion residuals). */
const LORA_RANK = 8;
const LOOPS = 2;

const scope = globalThis as unknown as { postMessage(e: WorkerEvent): void; onmessage: ((e: MessageEvent<InitRequest | RunRequest>) => void) | null };
const send = (e: WorkerEvent) => scope.postMessage(e);

interface Loaded {
  backend: BrowserGpuBackend;
  tokenizer: Tokenizer;
  teacher: CausalLM;
  conversion: Conversion;
  lora: RelaxedLora | null;
}
let loaded: Loaded | null = null;
let busy = false;

async function fetchBytes(url: string): Promise<Uint8Array> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`fetching ${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

async function fetchJson(url: string): Promise<unknown> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`fetching ${url}: HTTP ${res.status}`);
  return res.json();
}

async function init(req: InitRequest): Promise<void> {
  const t0 = performance.now();
  send({ type: 'status', text: 'starting gpu.js' });
  const backend = await registerBrowserGpuBackend({ gpujsUrl: req.assetBase + 'gpu-browser.min.js', mode: req.gpuMode });
  setBackend(backend.name);
  send({ type: 'status', text: `gpu.js runs in ${backend.mode} mode; fetching the model` });
  const [config, weights, tokenizerDoc] = await Promise.all([
    fetchJson(req.assetBase + 'config.json'), fetchBytes(req.assetBase + 'model.safetensors'), fetchJson(req.assetBase + 'tokenizer.json'),
  ]);
  const tokenizer = tokenizerFromJSON(tokenizerDoc);
  send({ type: 'status', text: 'converting to a recursive model' });
  const teacher = loadPretrainedFromBytes(config, weights, { backend });
  const conversion = toRecursive(teacher, { loops: LOOPS, scheme: CYCLE, init: stepwise });
  conversion.model.eval();
  // The teacher stays loaded (18 MB): LoRA's SVD init reads the conversion residuals
  // W_original - W_shared from it whenever LoRA is switched on.
  loaded = { backend, tokenizer, teacher, conversion, lora: null };
  const params = conversion.model.numParameters();
  send({
    type: 'ready', mode: backend.mode, skipped: Object.entries(backend.skippedModes).map(([m, why]) => `${m}: ${why}`),
    adapter: typeof backend.info().details.adapter === 'string' ? (backend.info().details.adapter as string) : null,
    loops: LOOPS, sharedBlocks: conversion.model.blocks.length, params, loadMs: performance.now() - t0,
  });
}

function setLora(m: Loaded, on: boolean): void {
  if (on && !m.lora) {
    send({ type: 'status', text: `relaxing with depth-wise LoRA (rank ${LORA_RANK}, SVD init)` });
    m.lora = relax(m.conversion.model, { rank: LORA_RANK, init: 'svd', residuals: m.conversion.residuals });
  } else if (!on && m.lora) {
    m.lora.remove();
    m.lora = null;
  }
}

const yieldToEvents = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

async function run(req: RunRequest): Promise<void> {
  const m = loaded;
  if (!m) throw new Error('run before the model was loaded');
  setLora(m, req.lora);
  const model = m.conversion.model;
  const engine = new ServingEngine(model, {
    scheduler: req.scheduler,
    maxBatch: req.maxBatch,
    exitPolicy: req.threshold >= 1 ? neverExit() : maxProbExit(req.threshold),
    trace: true,
    onToken: (id, token, exitLoop) => send({ type: 'token', request: Number(id), text: m.tokenizer.decode([token]), exitLoop }),
  });
  send({
    type: 'run-start', prompts: req.prompts, loops: LOOPS, maxBatch: req.maxBatch, scheduler: req.scheduler,
    lora: m.lora ? `rank ${LORA_RANK}, ${m.lora.numParameters} parameters` : 'off', policy: req.threshold >= 1 ? 'never exit early' : `exit when max p >= ${req.threshold}`,
  });
  try {
    req.prompts.forEach((p, i) => engine.submit({ id: i, prompt: m.tokenizer.encode(p), maxNewTokens: req.maxNewTokens }));
    const t0 = performance.now();
    let tokens = 0;
    let traced = 0;
    while (engine.step()) {
      const steps = engine.trace().steps;
      for (; traced < steps.length; traced++) {
        const s = steps[traced]!;
        if (s.kind === 'decode') tokens = engine.stats().tokens;
        send({ type: 'step', step: s.step, kind: s.kind, depths: s.items.map((it) => it.depth), tokens, elapsedMs: performance.now() - t0 });
      }
      // Lets the page's messages (and the browser's bookkeeping) through between calls.
      await yieldToEvents();
    }
    const s = engine.stats();
    send({
      type: 'done', tokens: s.tokens, exitsPerLoop: s.exitsPerLoop, tokensPerSecond: s.tokensPerSecond, steps: s.steps, decodeCalls: s.decodeCalls,
      meanOccupancy: s.meanOccupancy, meanLoopsPerToken: s.meanLoopsPerToken, compiledKernels: m.backend.compiledKernels, elapsedMs: performance.now() - t0,
    });
  } finally {
    engine.dispose();
  }
}

scope.onmessage = (e) => {
  const req = e.data;
  if (busy) {
    send({ type: 'error', message: `busy: a ${req.type} is still running` });
    return;
  }
  busy = true;
  (req.type === 'init' ? init(req) : run(req))
    .catch((err: unknown) => send({ type: 'error', message: err instanceof Error ? err.message : String(err) }))
    .finally(() => {
      busy = false;
    });
};
