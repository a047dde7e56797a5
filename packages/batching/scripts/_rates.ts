import { loadExitModel, loadOriginal } from './exit-model.js';
import { ServingEngine, benchWorkload, maxProbExit, entropyExit, oracleExit } from '../src/index.js';
const { model } = loadExitModel();
const { data } = await loadOriginal(false);
for (const temperature of [0, 1]) {
  const reqs = benchWorkload(model, { requests: 24, corpus: data.validation.tokens, temperature, newTokens: { min: 16, max: 32 } });
  for (const p of [maxProbExit(0.1), maxProbExit(0.2), maxProbExit(0.3), entropyExit(3), entropyExit(4), oracleExit()]) {
    const e = new ServingEngine(model, { exitPolicy: p, maxBatch: 24 });
    e.serve(reqs);
    const s = e.stats();
    console.log(`T=${temperature} ${p.name}: exits ${s.exitsPerLoop.join('/')} loops ${s.meanLoopsPerToken.toFixed(2)}`);
  }
}
