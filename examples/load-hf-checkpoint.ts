// Load a Hugging Face checkpoint folder (config.json + model.safetensors) and check its logits
// against the reference values PyTorch produced for the same weights (expected.json).
// Run: npx tsx examples/load-hf-checkpoint.ts [folder]   (default: the llama test fixture)

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPretrained } from '@rrt/layers';
import { noGrad } from '@rrt/tensor';

const dir = process.argv[2] ?? fileURLToPath(new URL('../packages/layers/test/fixtures/llama', import.meta.url));
const model = loadPretrained(dir);
console.log(`loaded ${dir}: ${model.cfg.family}, ${model.depth} layers, hidden ${model.cfg.hiddenSize}, ${model.numParameters()} parameters`);

// The fixture ships PyTorch's logits for two sequences; compare ours to them.
const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as {
  input_ids: { shape: [number, number]; data: number[] };
  logits: { data: number[] };
};
const logits = noGrad(() => model.forward(expected.input_ids.data, expected.input_ids.shape).logits.dataSync());
let maxErr = 0;
for (let i = 0; i < logits.length; i++) maxErr = Math.max(maxErr, Math.abs(logits[i]! - expected.logits.data[i]!));
console.log(`max |logit - PyTorch logit| = ${maxErr.toExponential(2)} over ${logits.length} logits`);
console.log(maxErr < 1e-3 ? 'matches the reference' : 'does NOT match the reference');
model.dispose();
