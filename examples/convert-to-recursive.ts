// Convert the shipped 6-layer model into a Recursive Transformer: 3 shared layers looped twice
// (CYCLE sharing). Compares the paper's init methods by held-out perplexity right after
// conversion, then uptrains the stepwise one briefly with knowledge distillation.
// Run: npx tsx examples/convert-to-recursive.ts   (TINY=1 for a quick check)

import { BatchLoader, batches, defaultCorpusPath, evaluateLM, loadDefaultModel, loadTextData } from '@rrt/layers';
import { CYCLE, average, lower, stepwise, toRecursive, uptrain } from '@rrt/recursive';

const tiny = process.env.TINY === '1';
const { model: teacher, tokenizer } = await loadDefaultModel();
const data = loadTextData(defaultCorpusPath(), tokenizer, { seqLen: tiny ? 32 : 128 });
const heldOut = () => batches(data.validation, { batchSize: 4, shuffle: false, dropLast: false });
const ppl = (m: Parameters<typeof evaluateLM>[0]) => evaluateLM(m, heldOut(), { maxBatches: tiny ? 1 : 10 }).perplexity.toFixed(1);

console.log(`teacher: ${teacher.depth} layers, ${teacher.numParameters()} parameters, held-out perplexity ${ppl(teacher)}`);
for (const init of [stepwise, average, lower]) {
  const { model } = toRecursive(teacher, { loops: 2, scheme: CYCLE, init });
  console.log(`${init.name.padEnd(9)} depth map ${model.schedule.join(' ')}, ${model.numParameters()} parameters, perplexity ${ppl(model)}`);
  model.dispose();
}

// Uptraining: the student learns to match the teacher's next-token distribution (forward KL).
const { model: student } = toRecursive(teacher, { loops: 2, scheme: CYCLE, init: stepwise });
const steps = tiny ? 1 : 50;
await uptrain(student, teacher, new BatchLoader(data.train, { batchSize: 4, seed: 0 }), { steps, lr: 1e-3, loss: 'kd' });
console.log(`after ${steps} KD steps: stepwise perplexity ${ppl(student)}`);
student.dispose();
teacher.dispose();
