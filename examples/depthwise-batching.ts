// Continuous depth-wise batching: every loop of a recursive model runs the same block, so tokens
// at different loops share one batched call, and slots freed by early exits refill at once.
// Serves one workload with static, sequence-wise and depth-wise scheduling, then draws a
// simulated depth-wise schedule as an SVG.
// Run: npx tsx examples/depthwise-batching.ts   (TINY=1 for a small workload)

import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadDefaultModel } from '@rrt/layers';
import { CYCLE, stepwise, toRecursive } from '@rrt/recursive';
import { ServingEngine, constantCost, geometricExit, makeRequests, maxProbExit, neverExit, scheduleToSvg, simulate, type SchedulerKind } from '@rrt/batching';

const tiny = process.env.TINY === '1';
const { model: teacher, tokenizer } = await loadDefaultModel();
const { model } = toRecursive(teacher, { loops: 2, scheme: CYCLE, init: stepwise });
teacher.dispose();

const prompts = ['In the beginning', 'And the LORD said', 'Blessed are the', 'Let there be light', 'The kingdom of heaven', 'And it came to pass'];
const requests = Array.from({ length: tiny ? 3 : 24 }, (_, i) => ({
  id: i,
  prompt: tokenizer.encode(prompts[i % prompts.length]!),
  maxNewTokens: tiny ? 3 : 8 + (i % 5) * 6, // uneven lengths: what continuous batching exploits
}));

const runs: [SchedulerKind, boolean][] = [['static', false], ['sequence', false], ['depthwise', false], ['depthwise', true]];
for (const [scheduler, exit] of runs) {
  const engine = new ServingEngine(model, { scheduler, maxBatch: tiny ? 2 : 8, exitPolicy: exit ? maxProbExit(0.5) : neverExit() });
  engine.serve(requests);
  const s = engine.stats();
  console.log(`${`${scheduler}${exit ? '+exit' : ''}`.padEnd(15)} ${s.tokens} tokens, ${s.tokensPerSecond.toFixed(1)} tokens/s, ${s.decodeCalls} decode calls, occupancy ${(100 * s.meanOccupancy).toFixed(0)}%, loops/token ${s.meanLoopsPerToken.toFixed(2)}`);
  engine.dispose();
}
model.dispose();

// The simulator replays the scheduler with a cost model: here each call costs 1 time unit and
// half of the tokens exit after loop 1.
const sim = simulate({
  scheduler: 'depthwise', loops: 2, maxBatch: 4, cost: constantCost(1), exitDistribution: geometricExit(2, 0.5), seed: 0,
  requests: makeRequests({ count: 8, prefixLength: 4, decodeLength: { min: 3, max: 12 }, seed: 0 }),
});
const svg = join(tmpdir(), 'rrt-depthwise-schedule.svg');
writeFileSync(svg, scheduleToSvg(sim.trace));
console.log(`simulated schedule: ${sim.trace.totalSteps} calls, drawn to ${svg}`);
