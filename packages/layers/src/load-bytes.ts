// Loading a Hugging Face model from bytes already in memory (a page's fetch, a bundled asset):
// config.json's parsed JSON and model.safetensors' bytes. No file system: works in browsers.

import { type Backend, getBackend, readSafetensors } from '@rrt/tensor';
import { loadWeights, type TensorSource } from './checkpoint-core.js';
import { parseHfConfig } from './config.js';
import { CausalLM } from './lm.js';

/** A TensorSource over one safetensors file held in memory; `source` names it in messages. */
export function bytesTensorSource(bytes: Uint8Array, source = 'model.safetensors'): TensorSource {
  const reader = readSafetensors(bytes, source);
  const names = new Set(reader.names());
  return {
    dir: source,
    has: (name) => names.has(name),
    read: (name) => ({ ...reader.get(name), file: source }),
  };
}

export interface LoadFromBytesOptions {
  /** Backend of the weights (default: the active one). */
  backend?: Backend;
  /** Names the files in messages (default 'config.json' and 'model.safetensors'). */
  configSource?: string;
  weightsSource?: string;
}

/**
 * Builds a model from a parsed config.json document and the bytes of its single-file
 * model.safetensors (llama, gemma, gpt_neox, gpt2 names), in eval mode. Sharded checkpoints
 * need the Node loader (loadPretrained).
 */
export function loadPretrainedFromBytes(config: unknown, safetensors: Uint8Array, opts: LoadFromBytesOptions = {}): CausalLM {
  const cfg = parseHfConfig(config, opts.configSource ?? 'config.json');
  const source = bytesTensorSource(safetensors, opts.weightsSource ?? 'model.safetensors');
  const model = new CausalLM(cfg, { backend: opts.backend ?? getBackend(), std: 0 });
  try {
    loadWeights(model, source);
  } catch (err) {
    model.dispose();
    throw err;
  }
  model.eval();
  return model;
}
