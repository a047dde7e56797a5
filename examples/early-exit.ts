// Early exit: a looped model can predict after every loop (final norm + LM head on the hidden
// state at the loop's end). Train the exits with the paper's "aggressive" CE + KD schedule,
// then let a confidence rule decide per token how many loops to run.
// Run: npx tsx examples/early-exit.ts   (TINY=1 for a quick check)

import { BatchLoader, Trainer, defaultCorpusPath, loadDefaultModel, loadTextData, type Batch } from '@rrt/layers';
import { CYCLE, stepwise, toRecursive } from '@rrt/recursive';
import { evaluateExits, exitLossWeights, exitTrainingLoss, maxProbExit, oracleExit } from '@rrt/batching';

const tiny = process.env.TINY === '1';
const { model: teacher, tokenizer } = await loadDefaultModel();
const data = loadTextData(defaultCorpusPath(), tokenizer, { seqLen: tiny ? 16 : 64 });
const { model } = toRecursive(teacher, { loops: 2, scheme: CYCLE, init: stepwise });

// Aggressive: the earlier exits get a small weight, the last one keeps weight 1.
console.log(`exit loss weights (aggressive, 2 loops): ${exitLossWeights('aggressive', 2).join(', ')}`);
const steps = tiny ? 1 : 40;
await new Trainer<Batch>({
  model,
  loss: (b) => exitTrainingLoss(model, b, { schedule: 'aggressive', teacher, kdWeight: 0.5 }),
  data: new BatchLoader(data.train, { batchSize: 4, seed: 0 }),
  steps,
  lr: 1e-3,
  onStep: (s) => s.step % 10 === 0 && console.log(`step ${s.step}  loss ${s.loss.toFixed(3)}`),
}).run();

// Teacher-forced decoding with exits: how many loops were used and what it costs in perplexity.
const n = tiny ? 2 : 16;
const sequences = Array.from({ length: n }, (_, i) => Array.from(data.validation.sequence(i)));
for (const policy of [maxProbExit(0.9), maxProbExit(0.5), oracleExit()]) {
  const r = evaluateExits(model, sequences, { policy });
  console.log(`${r.policy.padEnd(14)} mean loops ${r.meanLoops.toFixed(2)}, exits per loop ${r.exitsPerLoop.join('/')}, perplexity ${r.perplexity.toFixed(1)} (full depth ${r.fullPerplexity.toFixed(1)})`);
}
model.dispose();
teacher.dispose();
