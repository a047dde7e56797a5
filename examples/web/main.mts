// The page: controls, and live drawings of what the model worker reports. Per token, the loop
// at which it exited (its colour); per batched call, the loop each row computes (a column of the
// SVG); tokens/s and the gpu.js mode. Query parameters preset the controls (tests use them):
// ?autorun=1&tokens=4&threshold=0.5&lora=1&scheduler=depthwise&batch=4&gpu=webgl2

import type { InitRequest, RunRequest, Scheduler, WorkerEvent } from './protocol.mjs';

/** Loop colours: loop 1 (the earliest exit) first. */
const LOOP_COLOURS = ['#ffd8a8', '#a5d8ff', '#b2f2bb', '#eebefa'];
const CELL = 8;
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = <T extends HTMLElement>(id: string) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
};
const status = $('status');
const runButton = $<HTMLButtonElement>('run');
const threshold = $<HTMLInputElement>('threshold');
const thresholdValue = $<HTMLOutputElement>('threshold-value');
const lora = $<HTMLInputElement>('lora');
const scheduler = $<HTMLSelectElement>('scheduler');
const maxBatch = $<HTMLInputElement>('max-batch');
const maxTokens = $<HTMLInputElement>('max-tokens');
const prompts = $<HTMLTextAreaElement>('prompts');
const outputs = $('outputs');
const svg = $('batches') as unknown as SVGSVGElement;

const params = new URLSearchParams(location.search);
if (params.has('tokens')) maxTokens.value = params.get('tokens')!;
if (params.has('threshold')) threshold.value = params.get('threshold')!;
if (params.has('lora')) lora.checked = params.get('lora') !== '0';
if (params.has('scheduler')) scheduler.value = params.get('scheduler')!;
if (params.has('batch')) maxBatch.value = params.get('batch')!;
const showThreshold = () => (thresholdValue.textContent = Number(threshold.value) >= 1 ? 'never' : Number(threshold.value).toFixed(2));
threshold.addEventListener('input', showThreshold);
showThreshold();

function setStatus(text: string, state: 'loading' | 'ready' | 'running' | 'done' | 'error'): void {
  status.textContent = text;
  status.dataset.state = state;
}

const colour = (loop: number) => LOOP_COLOURS[loop % LOOP_COLOURS.length]!;

// ---- per-run state -------------------------------------------------------------------------
let loops = 2;
let batchRows = 4;
let columns = 0;
let tokenCount = 0;

function startRun(e: Extract<WorkerEvent, { type: 'run-start' }>): void {
  loops = e.loops;
  batchRows = e.maxBatch;
  columns = 0;
  tokenCount = 0;
  outputs.replaceChildren(
    ...e.prompts.map((p, i) => {
      const row = document.createElement('div');
      row.className = 'seq';
      row.id = `seq-${i}`;
      const prompt = document.createElement('span');
      prompt.className = 'prompt';
      prompt.textContent = p;
      row.append(prompt);
      return row;
    }),
  );
  svg.replaceChildren();
  svg.setAttribute('height', String(batchRows * CELL));
  svg.setAttribute('width', '0');
  $('legend').replaceChildren(
    ...Array.from({ length: loops }, (_, l) => {
      const s = document.createElement('span');
      s.className = 'tok';
      s.style.background = colour(l);
      s.textContent = l === loops - 1 ? `loop ${l + 1} (full depth)` : `exited after loop ${l + 1}`;
      return s;
    }),
  );
  for (const id of ['tokens', 'steps']) $(id).textContent = '0';
  for (const id of ['exits', 'tps', 'occupancy-mean']) $(id).textContent = '–';
  $('run-info').textContent = `${e.scheduler} scheduler, max batch ${e.maxBatch}, LoRA ${e.lora}, ${e.policy}`;
  $('summary').removeAttribute('data-done');
  setStatus('generating…', 'running');
}

function addToken(e: Extract<WorkerEvent, { type: 'token' }>): void {
  const span = document.createElement('span');
  span.className = `tok loop-${e.exitLoop}`;
  span.dataset.loop = String(e.exitLoop);
  span.style.background = colour(e.exitLoop);
  span.title = `exited after loop ${e.exitLoop + 1} of ${loops}`;
  span.textContent = e.text;
  document.getElementById(`seq-${e.request}`)?.append(span);
  tokenCount++;
  $('tokens').textContent = String(tokenCount);
}

function addStep(e: Extract<WorkerEvent, { type: 'step' }>): void {
  const x = columns * (CELL + 1);
  e.depths.forEach((depth, row) => {
    const r = document.createElementNS(SVG_NS, 'rect');
    r.setAttribute('x', String(x));
    r.setAttribute('y', String(row * CELL));
    r.setAttribute('width', String(CELL));
    r.setAttribute('height', String(CELL - 1));
    r.setAttribute('fill', colour(depth));
    if (e.kind === 'prefill') r.setAttribute('stroke', '#555');
    svg.append(r);
  });
  columns++;
  svg.setAttribute('width', String(columns * (CELL + 1)));
  $('steps').textContent = String(columns);
  if (e.elapsedMs > 0) $('tps').textContent = ((1000 * e.tokens) / e.elapsedMs).toFixed(1);
}

function finishRun(e: Extract<WorkerEvent, { type: 'done' }>): void {
  $('tokens').textContent = String(e.tokens);
  $('exits').textContent = e.exitsPerLoop.map((n, l) => `loop ${l + 1}: ${n}`).join(', ');
  $('tps').textContent = e.tokensPerSecond.toFixed(1);
  $('steps').textContent = String(e.steps);
  $('occupancy-mean').textContent = `${(100 * e.meanOccupancy).toFixed(0)}%`;
  const summary = $('summary');
  summary.dataset.tokens = String(e.tokens);
  summary.dataset.exits = JSON.stringify(e.exitsPerLoop);
  summary.dataset.steps = String(e.steps);
  summary.dataset.done = '1';
  setStatus(
    `done: ${e.tokens} tokens in ${(e.elapsedMs / 1000).toFixed(1)} s, ${e.meanLoopsPerToken.toFixed(2)} loops per token, ${e.compiledKernels} gpu.js kernels compiled so far`,
    'done',
  );
  runButton.disabled = false;
}

// ---- the worker ----------------------------------------------------------------------------
const worker = new Worker(new URL('./model.worker.mts', import.meta.url), { type: 'module' });
worker.onerror = (e) => setStatus(`the model worker failed: ${e.message}`, 'error');
worker.onmessage = (msg: MessageEvent<WorkerEvent>) => {
  const e = msg.data;
  switch (e.type) {
    case 'status':
      setStatus(e.text, status.dataset.state === 'running' ? 'running' : 'loading');
      return;
    case 'ready':
      $('mode').textContent = e.mode;
      $('mode').dataset.mode = e.mode;
      $('adapter').textContent = e.adapter ? `(${e.adapter})` : '';
      $('skipped').textContent = e.skipped.length > 0 ? `skipped: ${e.skipped.join('; ')}` : '';
      setStatus(`ready: ${e.sharedBlocks} shared blocks x ${e.loops} loops, ${e.params.toLocaleString()} parameters, loaded in ${(e.loadMs / 1000).toFixed(1)} s`, 'ready');
      runButton.disabled = false;
      if (params.get('autorun') === '1') generate();
      return;
    case 'run-start':
      startRun(e);
      return;
    case 'step':
      addStep(e);
      return;
    case 'token':
      addToken(e);
      return;
    case 'done':
      finishRun(e);
      return;
    case 'error':
      setStatus(`error: ${e.message}`, 'error');
      runButton.disabled = false;
      return;
  }
};

function generate(): void {
  const list = prompts.value.split('\n').map((p) => p.trim()).filter((p) => p.length > 0);
  if (list.length === 0) {
    setStatus('enter at least one prompt', 'ready');
    return;
  }
  const req: RunRequest = {
    type: 'run',
    prompts: list,
    maxNewTokens: Math.max(1, Math.min(64, Math.round(Number(maxTokens.value) || 16))),
    threshold: Number(threshold.value),
    lora: lora.checked,
    scheduler: scheduler.value as Scheduler,
    maxBatch: Math.max(1, Math.min(16, Math.round(Number(maxBatch.value) || 4))),
  };
  runButton.disabled = true;
  setStatus('generating…', 'running');
  worker.postMessage(req);
}
runButton.addEventListener('click', generate);

const gpu = params.get('gpu');
const init: InitRequest = { type: 'init', assetBase: new URL('rrt-assets/', document.baseURI).href };
if (gpu === 'webgpu' || gpu === 'webgl2' || gpu === 'webasm' || gpu === 'cpu') init.gpuMode = gpu;
worker.postMessage(init);
