// The small llama-style model trained on the King James Bible that ships with the package
// (models/kjv-llama: config.json, model.safetensors, tokenizer.json, TRAINING.md).

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RrtError, type Backend } from '@rrt/tensor';
import { loadPretrained } from './checkpoint.js';
import type { CausalLM } from './lm.js';
import { loadTokenizer, type Tokenizer } from './tokenizers/index.js';

/** Folder of the shipped model; resolves the same from src/ and from the built dist/. */
export function defaultModelPath(): string {
  return fileURLToPath(new URL('../models/kjv-llama', import.meta.url));
}

/** Loads the shipped model and its tokenizer (Node only). */
export async function loadDefaultModel(opts: { backend?: Backend; dir?: string } = {}): Promise<{ model: CausalLM; tokenizer: Tokenizer; dir: string }> {
  const dir = opts.dir ?? defaultModelPath();
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) {
    if (!existsSync(join(dir, f))) {
      throw new RrtError(`${dir}: ${f} is missing; the default model is built by packages/layers/scripts/train-default.ts`);
    }
  }
  const tokenizer = await loadTokenizer(join(dir, 'tokenizer.json'));
  const model = loadPretrained(dir, { backend: opts.backend });
  model.eval();
  return { model, tokenizer, dir };
}
