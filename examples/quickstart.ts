// Quick start, the API in four steps: load a pretrained model, convert it into a Recursive
// Transformer, relax it with depth-wise LoRA, and generate text. The root README shows this code.
// Run: npx tsx examples/quickstart.ts   (after pnpm build; a few seconds)

import { generate, loadDefaultModel } from '@rrt/layers';
import { CYCLE, stepwise, toRecursive } from '@rrt/recursive';
import { relax } from '@rrt/lora';

// 1. Load: the shipped 6-layer llama-style model and its tokenizer
//    (loadPretrained(dir) reads a Hugging Face folder: llama, gemma, gpt_neox, gpt2).
const { model: original, tokenizer } = await loadDefaultModel();

// 2. Convert: 3 shared layers looped twice (CYCLE sharing), initialised from the original's
//    layers (stepwise). `residuals` is what tying lost at each depth.
const { model, residuals } = toRecursive(original, { loops: 2, scheme: CYCLE, init: stepwise });

// 3. Relax: a rank-32 LoRA per depth position, SVD-initialised from those residuals.
const lora = relax(model, { rank: 32, init: 'svd', residuals });
console.log(`original ${original.numParameters()} parameters; recursive ${model.numParameters()} + LoRA ${lora.counts.lora}`);

// 4. Generate (greedy) with the relaxed recursive model.
const out = generate(model, tokenizer, { prompt: 'In the beginning', maxNewTokens: 24, temperature: 0 });
console.log(`generated: In the beginning${out.text}`);
