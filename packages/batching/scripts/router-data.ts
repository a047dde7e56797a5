// How much served text the exit router needs: fits a router on N served continuations of
// training prompts for each N, and reports, on other served continuations of held-out prompts,
// how many tokens each threshold sends out after loop 1 and how often those keep the last
// exit's top-1 token (precision). A 2+-loop recursive model folder (rrt convert / uptrain /
// exit-train) is required; its tokenizer.json is used with the shipped corpus.
//
//   npx tsx packages/batching/scripts/router-data.ts --model DIR [--counts 64,160,480] [--thresholds 0.95,0.9,0.8,0.7,0.6] [--test 96] [--json]
//
// Prints a markdown table (the one in packages/batching/README.md).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { argmax, noGrad, tidy } from '@rrt/tensor';
import { defaultCorpusPath, loadTextData, tokenizerFromJSON } from '@rrt/layers';
import { loadRecursive } from '@rrt/recursive';
import { exitLogits, resolveLayout, servedContinuations, trainExitRouter } from '../src/index.js';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    counts: { type: 'string', default: '64,160,480' },
    thresholds: { type: 'string', default: '0.95,0.9,0.8,0.7,0.6' },
    test: { type: 'string', default: '96' },
    json: { type: 'boolean', default: false },
  },
});
if (!args.model) throw new Error('router-data: --model DIR (a recursive model folder) is required');
const model = loadRecursive(args.model);
const tokenizer = tokenizerFromJSON(JSON.parse(readFileSync(join(args.model, 'tokenizer.json'), 'utf8')));
const data = loadTextData(defaultCorpusPath(), tokenizer, { seqLen: model.cfg.maxPositions });
const layout = resolveLayout(model, undefined);
if (layout.loops < 2) throw new Error(`router-data: the model runs ${layout.loops} loop; early exit needs 2 or more`);
const thresholds = args.thresholds!.split(',').map(Number);

// The test tokens: loop 1's final-normed hidden states and whether loop 1's top-1 is the last exit's.
const test = servedContinuations(model, data.validation.tokens, { count: Number(args.test), seed: 99 });
const feats = [];
const labels: boolean[] = [];
for (const seq of test) {
  feats.push(noGrad(() => tidy(() => {
    const { hidden } = model.forward(seq, [1, seq.length], { hidden: true });
    const first = argmax(exitLogits(model, hidden![layout.ends[0]], 0), -1).dataSync();
    const last = argmax(exitLogits(model, hidden![layout.ends[layout.loops - 1]], layout.loops - 1), -1).dataSync();
    for (let t = 0; t < seq.length; t++) labels.push(first[t] === last[t]);
    return model.norm.forward(hidden![layout.ends[0]]).keep();
  })));
}
const baseRate = labels.filter(Boolean).length / labels.length;

const rows = [];
for (const count of args.counts!.split(',').map(Number)) {
  const t0 = performance.now();
  const fit = trainExitRouter(model, servedContinuations(model, data.train.tokens, { count, seed: 1 }), { seed: 0 });
  const seconds = (performance.now() - t0) / 1000;
  const probs = feats.flatMap((f) => Array.from(fit.router.probabilities(f, 0)));
  const cells = thresholds.map((threshold) => {
    let exits = 0, kept = 0;
    probs.forEach((p, i) => {
      if (p < threshold) return;
      exits++;
      if (labels[i]) kept++;
    });
    return { threshold, exitRate: exits / probs.length, precision: exits > 0 ? kept / exits : NaN };
  });
  rows.push({ count, seconds, cells });
  fit.router.dispose();
}

if (args.json) {
  console.log(JSON.stringify({ testSequences: test.length, testTokens: labels.length, baseRate, rows }, null, 2));
} else {
  console.log(`${labels.length} test tokens (${test.length} served continuations of held-out prompts); loop 1 keeps the last exit's top-1 for ${(100 * baseRate).toFixed(1)}% of them\n`);
  console.log(`| fitted on | fit + continuations | ${thresholds.map((t) => `router:${t} exits / precision`).join(' | ')} |`);
  console.log(`|---|---|${thresholds.map(() => '---').join('|')}|`);
  for (const r of rows) {
    const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
    console.log(`| ${r.count} | ${r.seconds.toFixed(0)} s | ${r.cells.map((c) => `${pct(c.exitRate)} / ${pct(c.precision)}`).join(' | ')} |`);
  }
}
