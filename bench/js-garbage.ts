// JS heap bytes one training step of the reference model allocates, by allocating function,
// counting objects that minor and major GCs have already collected (V8's sampling heap
// profiler). This is the garbage that makes RSS creep over long runs.
//
//   npx tsx bench/js-garbage.ts [--steps 5] [--top 12]

import { Session } from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import { AdamW, noGrad, tidy } from '@rrt/tensor';
import { CausalLM, nextTokenLoss } from '@rrt/layers';
import { REFERENCE_SHAPE, benchConfig } from '../packages/cli/src/bench/train.js';

const { values: args } = parseArgs({ options: { steps: { type: 'string', default: '5' }, top: { type: 'string', default: '12' } } });
const steps = Number(args.steps);
const { batch: B, seq: T, vocab } = REFERENCE_SHAPE;
const model = new CausalLM(benchConfig(REFERENCE_SHAPE));
const optimizer = new AdamW(model.parameters(), { lr: 3e-4, weightDecay: 0 });
const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7) % vocab);
const targets = Int32Array.from({ length: B * T }, (_, i) => (i * 13) % vocab);
const step = (): void => {
  tidy(() => {
    const loss = nextTokenLoss(model.forward(ids, [B, T]).logits, targets);
    loss.backward(undefined, { freeIntermediates: true });
  });
  noGrad(() => optimizer.step());
  optimizer.zeroGrad();
};
for (let i = 0; i < 3; i++) step(); // warm up: optimizer state, compiled code

interface ProfileNode { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: ProfileNode[] }
const session = new Session();
session.connect();
await session.post('HeapProfiler.startSampling', { samplingInterval: 512, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
for (let i = 0; i < steps; i++) step();
const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: ProfileNode } };
session.disconnect();

const bytes = new Map<string, number>();
const walk = (n: ProfileNode, parent: string): void => {
  const f = n.callFrame;
  const here = f.url ? `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}` : `${f.functionName || '(native)'} <- ${parent}`;
  bytes.set(here, (bytes.get(here) ?? 0) + n.selfSize);
  for (const c of n.children) walk(c, f.url ? here : parent);
};
walk(profile.head, '(root)');
const total = [...bytes.values()].reduce((a, b) => a + b, 0);
const mib = (b: number): string => (b / steps / 2 ** 20).toFixed(2);
console.log(`JS heap allocated per training step: ${mib(total)} MiB (mean of ${steps} steps)`);
for (const [where, b] of [...bytes].sort((a, c) => c[1] - a[1]).slice(0, Number(args.top))) console.log(`${mib(b).padStart(7)} MiB  ${where}`);
