// Messages between the page (main.ts) and the model worker (model.worker.ts).

export type Scheduler = 'depthwise' | 'sequence' | 'static';

/** Page -> worker, first: where the model files and gpu.js are served, and an optional forced gpu.js mode. */
export interface InitRequest {
  type: 'init';
  assetBase: string;
  gpuMode?: 'webgpu' | 'webgl2' | 'webasm' | 'cpu';
}

/** Page -> worker: generate for these prompts with these settings. */
export interface RunRequest {
  type: 'run';
  prompts: string[];
  maxNewTokens: number;
  /** Exit after loop 1 when the intermediate head's top probability reaches this; 1 = never exit early. */
  threshold: number;
  lora: boolean;
  scheduler: Scheduler;
  maxBatch: number;
}

/** Worker -> page. */
export type WorkerEvent =
  | { type: 'status'; text: string }
  | {
      type: 'ready';
      /** gpu.js mode the kernels run in, and why better ones were skipped. */
      mode: string;
      skipped: string[];
      adapter: string | null;
      loops: number;
      sharedBlocks: number;
      params: number;
      loadMs: number;
    }
  | { type: 'run-start'; prompts: string[]; loops: number; maxBatch: number; scheduler: Scheduler; lora: string; policy: string }
  | {
      type: 'step';
      step: number;
      kind: 'prefill' | 'decode';
      /** The loop (0-based) each row of this call computes; its length is the call's batch. */
      depths: number[];
      tokens: number;
      elapsedMs: number;
    }
  | { type: 'token'; request: number; text: string; exitLoop: number }
  | {
      type: 'done';
      tokens: number;
      exitsPerLoop: number[];
      tokensPerSecond: number;
      steps: number;
      decodeCalls: number;
      meanOccupancy: number;
      meanLoopsPerToken: number;
      compiledKernels: number;
      elapsedMs: number;
    }
  | { type: 'error'; message: string };
