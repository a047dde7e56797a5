// Quick start: build a 2-layer llama-style model, train it 50 steps on the shipped corpus
// (the King James Bible) with a byte-level tokenizer, and watch the loss go down.
// Run: pnpm --filter @rrt/examples quickstart   (after pnpm build)

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AdamW, Generator, crossEntropy, getBackend, reshape, tidy, clipGradNorm } from '@rrt/tensor';
import { ByteTokenizer, CausalLM, defineConfig } from '@rrt/layers';

const steps = Number(process.env.STEPS ?? 50);
const [batch, seq] = [8, 64];

console.log(`backend: ${JSON.stringify(getBackend().info())}`);
const corpusPath = fileURLToPath(import.meta.resolve('@rrt/layers/data/kjv.txt'));
const text = readFileSync(corpusPath, 'utf8').slice(0, 200_000);
const tokenizer = new ByteTokenizer();
const ids = Int32Array.from(tokenizer.encode(text));

const cfg = defineConfig('llama', {
  vocabSize: tokenizer.vocabSize, hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 4, headDim: 16,
  intermediateSize: 172, maxPositions: seq,
});
const rng = new Generator(0);
const model = new CausalLM(cfg, { rng });
const opt = new AdamW(model.parameters(), { lr: 3e-3, weightDecay: 0.01 });
console.log(`model: ${cfg.family}, ${cfg.numLayers} layers, ${model.numParameters()} parameters`);

for (let step = 1; step <= steps; step++) {
  // A random batch of windows: inputs ids[s..s+seq), targets shifted by one.
  const x = new Int32Array(batch * seq), y = new Int32Array(batch * seq);
  for (let b = 0; b < batch; b++) {
    const start = rng.int(0, ids.length - seq - 1);
    x.set(ids.subarray(start, start + seq), b * seq);
    y.set(ids.subarray(start + 1, start + seq + 1), b * seq);
  }
  const loss = tidy(() => {
    const { logits } = model.forward(x, [batch, seq]);
    const l = crossEntropy(reshape(logits, [batch * seq, -1]), y);
    l.backward();
    clipGradNorm(model.parameters(), 1);
    opt.step();
    opt.zeroGrad();
    return l.item();
  });
  if (step === 1 || step % 10 === 0) console.log(`step ${String(step).padStart(3)}  loss ${loss.toFixed(3)}`);
}
