// Relax a recursive model with depth-wise LoRA: each depth position gets its own low-rank
// correction of the shared weights. SVD init starts as close to the original model as rank r
// allows; zero init starts as the plain recursive model. Higher rank: closer, more parameters.
// Run: npx tsx examples/relax-with-lora.ts   (TINY=1 for one rank)

import { batches, defaultCorpusPath, evaluateLM, loadDefaultModel, loadTextData } from '@rrt/layers';
import { CYCLE, average, toRecursive } from '@rrt/recursive';
import { relax, residualsFrom } from '@rrt/lora';

const tiny = process.env.TINY === '1';
const { model: teacher, tokenizer } = await loadDefaultModel();
const data = loadTextData(defaultCorpusPath(), tokenizer, { seqLen: tiny ? 32 : 128 });
const ppl = (m: Parameters<typeof evaluateLM>[0]) =>
  evaluateLM(m, batches(data.validation, { batchSize: 4, shuffle: false, dropLast: false }), { maxBatches: tiny ? 1 : 10 }).perplexity.toFixed(1);

// Average init is the paper's choice as the base of relaxed models.
const { model } = toRecursive(teacher, { loops: 2, scheme: CYCLE, init: average });
console.log(`original ${teacher.numParameters()} parameters, perplexity ${ppl(teacher)}`);
console.log(`recursive ${model.numParameters()} parameters, perplexity ${ppl(model)}`);

for (const rank of tiny ? [8] : [8, 32, 128]) {
  for (const init of ['zero', 'svd'] as const) {
    // residualsFrom reads W_original - W_shared per depth, the matrix the SVD truncates.
    const lora = relax(model, { rank, init, residuals: residualsFrom(teacher, model) });
    console.log(`relaxed r=${String(rank).padStart(3)} ${init.padEnd(4)} init: +${lora.counts.lora} LoRA parameters, perplexity ${ppl(model)}`);
    lora.remove(); // back to the plain recursive model
  }
}
model.dispose();
teacher.dispose();
