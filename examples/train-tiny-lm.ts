// Train a tiny language model with the library's Trainer: load and split the shipped corpus,
// train with AdamW and a cosine schedule, score the held-out text and sample a few tokens.
// Run: npx tsx examples/train-tiny-lm.ts   (TINY=1 for a few steps)

import { BatchLoader, ByteTokenizer, CausalLM, Trainer, batches, defaultCorpusPath, defineConfig, evaluateLM, generate, loadTextData, nextTokenLoss } from '@rrt/layers';
import { Generator } from '@rrt/tensor';

const tiny = process.env.TINY === '1';
const steps = tiny ? 3 : 200;
const seqLen = tiny ? 16 : 64;
const tokenizer = new ByteTokenizer();
// Held-out text is every 20th chapter, so no verse is in both parts.
const data = loadTextData(defaultCorpusPath(), tokenizer, { seqLen });
console.log(`data: ${data.train.count} training / ${data.validation.count} held-out sequences of ${seqLen} bytes`);

const cfg = defineConfig('llama', { vocabSize: tokenizer.vocabSize, hiddenSize: tiny ? 16 : 64, numLayers: 2, numHeads: 4, maxPositions: seqLen });
const model = new CausalLM(cfg, { rng: new Generator(0) });
console.log(`model: ${model.numParameters()} parameters`);

const trainer = new Trainer({
  model,
  loss: (b) => nextTokenLoss(model.forward(b.ids, b.shape).logits, b.targets),
  data: new BatchLoader(data.train, { batchSize: 8, seed: 0 }),
  steps,
  lr: 3e-3,
  schedule: { kind: 'cosine', warmup: Math.min(20, steps), minLr: 3e-4 },
  onStep: (s) => {
    if (s.step === 1 || s.step % 20 === 0 || s.step === steps) console.log(`step ${s.step}/${steps}  loss ${s.loss.toFixed(3)}`);
  },
});
await trainer.run();

const held = evaluateLM(model, batches(data.validation, { batchSize: 8, shuffle: false, dropLast: false }), { maxBatches: tiny ? 1 : 20 });
console.log(`held-out perplexity ${held.perplexity.toFixed(2)} over ${held.tokens} tokens`);
const sample = generate(model, tokenizer, { prompt: 'In the beginning', maxNewTokens: tiny ? 4 : 40, temperature: 0.8, seed: 0 });
console.log(`sample: In the beginning${sample.text ?? ''}`);
