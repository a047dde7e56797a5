import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Backend, Generator, type Tensor, add, affine, availableBackends, fromValues, mul, sum, warmupCosine } from '@rrt/tensor';
import { defineConfig } from './config.js';
import { CausalLM } from './lm.js';
import { BatchLoader, TokenSequences, type Batch } from './data.js';
import { nextTokenLoss } from './losses.js';
import { freezeParameters } from './module.js';
import { Trainer, TrainingDivergedError, latestCheckpoint, type StepInfo, type TrainerOptions } from './train.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'rrt-train-'));
const cfg = defineConfig('llama', { vocabSize: 32, hiddenSize: 16, numLayers: 2, numHeads: 2, intermediateSize: 32, maxPositions: 16 });
// A learnable stream: a fixed pseudo-random sequence of period 24 repeated.
const period = Int32Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % 32);
const tokens = Int32Array.from({ length: 24 * 40 + 1 }, (_, i) => period[i % 24]);

function setup(backend: Backend, seed: number, extra: Partial<TrainerOptions<Batch>> = {}, rng?: Generator) {
  const model = new CausalLM(cfg, { backend, rng: new Generator(seed) });
  const data = new BatchLoader(new TokenSequences(tokens, 8), { batchSize: 2, seed: 5 });
  const losses: number[] = [];
  const trainer = new Trainer<Batch>({
    model, data, steps: 10, lr: 1e-2, schedule: { kind: 'cosine', warmup: 2 }, rng,
    loss: (b) => {
      const l = nextTokenLoss(model.forward(b.ids, b.shape).logits, b.targets);
      // Uses the trainer's generator, so resume must restore its state too.
      return rng ? affine(l, 1 + 0.1 * rng.next(), 0) : l;
    },
    onStep: (i) => losses.push(i.loss),
    ...extra,
  });
  return { model, data, trainer, losses };
}

const values = (ps: Tensor[]) => ps.map((p) => Array.from(p.dataSync()));

describe.each(availableBackends().map((b) => [b.name, b] as const))('Trainer on %s', (_n, backend) => {
  it('lowers the loss of a tiny model', async () => {
    const { trainer, losses, model } = setup(backend, 1, { steps: 40, schedule: { kind: 'constant' } });
    const summary = await trainer.run();
    expect(summary.steps).toBe(40);
    expect(summary.skippedSteps).toBe(0);
    expect(losses[39]).toBeLessThan(losses[0] * 0.5);
    expect(summary.tokens).toBe(40 * 16);
    model.dispose();
  });

  it('leaves frozen parameters exactly as they were and trains the rest; the returned function unfreezes', async () => {
    const { trainer, model } = setup(backend, 1);
    const frozen = model.blocks.flatMap((b) => b.parameters());
    const free = model.parameters().filter((p) => !frozen.includes(p));
    const [frozenBefore, freeBefore] = [values(frozen), values(free)];
    const unfreeze = freezeParameters(frozen);
    expect(frozen.every((p) => !p.requiresGrad)).toBe(true);
    await trainer.run();
    expect(values(frozen)).toEqual(frozenBefore);
    expect(values(free)).not.toEqual(freeBefore);
    unfreeze();
    expect(model.parameters().every((p) => p.requiresGrad)).toBe(true);
    model.dispose();
  });

  it('resumes exactly: 10 steps = 5 steps + checkpoint + new trainer + 5 steps', async () => {
    const full = setup(backend, 1, {}, new Generator(9));
    await full.trainer.run();
    expect(full.losses.length).toBe(10);

    const dir = tmp();
    const first = setup(backend, 1, { checkpointDir: dir, steps: 10 }, new Generator(9));
    for (let i = 0; i < 5; i++) first.trainer.trainStep();
    first.trainer.saveCheckpoint();
    expect(first.losses).toEqual(full.losses.slice(0, 5));

    // Different init and generator seeds: everything must come from the checkpoint.
    const second = setup(backend, 2, { checkpointDir: dir }, new Generator(1234));
    expect(second.trainer.loadCheckpoint()).toBe(true);
    expect(second.trainer.step).toBe(5);
    const summary = await second.trainer.run();
    expect(summary.steps).toBe(10);
    expect(second.losses).toEqual(full.losses.slice(5));
    expect(values(second.model.parameters())).toEqual(values(full.model.parameters()));
    // The run's final checkpoint and the step-5 one are kept.
    expect(readdirSync(dir).sort()).toEqual(['step-00000005.json', 'step-00000005.safetensors', 'step-00000010.json', 'step-00000010.safetensors']);
    expect(latestCheckpoint(dir)).toBe(join(dir, 'step-00000010.json'));
    for (const r of [full, first, second]) r.model.dispose();
  });

  it('averages gradients over micro-batches like one big batch', async () => {
    const seqs = new TokenSequences(tokens, 8);
    const run = async (batchSize: number, accumulation: number) => {
      const model = new CausalLM(cfg, { backend, rng: new Generator(3) });
      const data = new BatchLoader(seqs, { batchSize, shuffle: false });
      const t = new Trainer<Batch>({ model, data, steps: 3, lr: 1e-2, accumulation, loss: (b) => nextTokenLoss(model.forward(b.ids, b.shape).logits, b.targets) });
      await t.run();
      return model;
    };
    const big = await run(2, 1), small = await run(1, 2);
    const a = values(big.parameters()).flat(), b = values(small.parameters()).flat();
    let err = 0;
    for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(a[i] - b[i]));
    expect(err).toBeLessThan(1e-5);
    big.dispose();
    small.dispose();
  });

  it('decays weights of rank >= 2 only and follows the lr schedule', async () => {
    const w = fromValues(new Float32Array([1, 2, 3, 4]), [2, 2], backend).requireGrad().keep();
    const bias = fromValues(new Float32Array([1, 2]), [2], backend).requireGrad().keep();
    const lrs: number[] = [];
    const model = { parameters: () => [w, bias] };
    const t = new Trainer<number>({
      model, steps: 6, lr: 0.1, weightDecay: 0.5, schedule: { kind: 'cosine', warmup: 2, minLr: 0.01 },
      data: { next: () => 0 },
      // Zero gradients: only weight decay moves the parameters.
      loss: () => sum(add(mul(w, 0), mul(bias, 0))),
      onStep: (i) => lrs.push(i.lr),
    });
    await t.run();
    const sched = warmupCosine(0.1, 2, 6, 0.01);
    expect(lrs).toEqual([0, 1, 2, 3, 4, 5].map(sched));
    const shrink = lrs.reduce((s, lr) => s * (1 - lr * 0.5), 1);
    const got = Array.from(w.dataSync());
    [1, 2, 3, 4].forEach((v, i) => expect(got[i]).toBeCloseTo(v * shrink, 5));
    expect(Array.from(bias.dataSync())).toEqual([1, 2]);
    w.dispose();
    bias.dispose();
  });

  it('skips non-finite steps, stops after maxBadSteps in a row and keeps the last good checkpoint', async () => {
    const dir = tmp();
    let poison = new Set<number>([3]);
    const infos: StepInfo[] = [];
    const { trainer, model } = setup(backend, 1, {
      steps: 20, checkpointDir: dir, checkpointEvery: 2, maxBadSteps: 3,
      onStep: (i) => infos.push(i),
    });
    const inner = (trainer as unknown as { opts: TrainerOptions<Batch> }).opts;
    const base = inner.loss;
    inner.loss = (b, ctx) => (poison.has(ctx.step) ? affine(base(b, ctx), NaN, 0) : base(b, ctx));
    for (let i = 0; i < 6; i++) trainer.trainStep();
    expect(infos[3].skipped).toBe(true);
    expect(Number.isNaN(infos[3].loss)).toBe(true);
    expect(trainer.skippedSteps).toBe(1);
    // A skipped step leaves the parameters untouched.
    poison = new Set([6, 7, 8, 9]);
    const before = values(model.parameters());
    trainer.trainStep();
    expect(values(model.parameters())).toEqual(before);
    trainer.saveCheckpoint();
    const good = latestCheckpoint(dir);
    trainer.trainStep();
    let err: unknown;
    try {
      trainer.trainStep();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TrainingDivergedError);
    expect((err as Error).message).toMatch(/3 steps in a row.*non-finite.*step-00000007\.json/);
    expect((err as TrainingDivergedError).lastCheckpoint).toBe(good);
    expect(trainer.skippedSteps).toBe(4);
    expect(latestCheckpoint(dir)).toBe(good);
    model.dispose();
  });

  it('a non-finite gradient norm also skips the step', async () => {
    const w = fromValues(new Float32Array([1, 2]), [2], backend).requireGrad().keep();
    let step = 0;
    const t = new Trainer<number>({
      model: { parameters: () => [w] }, steps: 2, lr: 0.1, data: { next: () => 0 },
      // Finite loss, infinite gradient on the first step.
      loss: () => sum(mul(w, fromValues(new Float32Array(step++ === 0 ? [Infinity, 0] : [1, 1]), [2], backend))),
    });
    const first = t.trainStep();
    expect(first.skipped).toBe(true);
    expect(Number.isFinite(first.gradNorm)).toBe(false);
    expect(Array.from(w.dataSync())).toEqual([1, 2]);
    expect(t.trainStep().skipped).toBe(false);
    w.dispose();
  });

  it('evaluates and checkpoints on schedule, and reports progress', async () => {
    const dir = tmp();
    const evalSteps: number[] = [];
    const infos: StepInfo[] = [];
    const { trainer, model } = setup(backend, 1, {
      steps: 7, evalEvery: 3, checkpointDir: dir, checkpointEvery: 2, keepCheckpoints: 3,
      evaluate: (step) => {
        evalSteps.push(step);
        expect(model.training).toBe(false);
        return { step2: step * 2 };
      },
      onStep: (i) => infos.push(i),
    });
    const summary = await trainer.run();
    expect(evalSteps).toEqual([3, 6, 7]);
    expect(summary.evals).toEqual([3, 6, 7].map((s) => ({ step: s, metrics: { step2: s * 2 } })));
    expect(model.training).toBe(true);
    expect(readdirSync(dir).filter((f) => f.endsWith('.json')).sort()).toEqual(['step-00000004.json', 'step-00000006.json', 'step-00000007.json']);
    expect(summary.checkpoint).toBe(join(dir, 'step-00000007.json'));
    const json = JSON.parse(readFileSync(summary.checkpoint!, 'utf8'));
    expect(json.step).toBe(7);
    expect(json.data).toEqual({ seed: 5, epoch: 0, batch: 7 });
    expect(json.paramNames).toContain('blocks.0.attn.q.weight');
    expect(existsSync(join(dir, json.weights))).toBe(true);
    const last = infos[infos.length - 1];
    expect(last.step).toBe(7);
    expect(last.etaMs).toBe(0);
    expect(last.tokensPerSec).toBeGreaterThan(0);
    expect(last.elapsedMs).toBeGreaterThan(0);
    expect(infos[2].etaMs).toBeGreaterThan(0);
    model.dispose();
  });

  // The host backends run 300 steps in seconds; a device backend pays a dispatch per op (the gpu
  // backend on a software Vulkan driver takes about 0.4 s a step), so it runs fewer.
  const memorySteps = backend.name === 'ref' || backend.name === 'cpu' ? 300 : 40;
  it(`runs ${memorySteps} steps at flat memory`, async () => {
    const { trainer, model } = setup(backend, 1, { steps: memorySteps, accumulation: 2, schedule: { kind: 'wsd', warmup: 10 } });
    const inUse: number[] = [];
    const inner = (trainer as unknown as { opts: TrainerOptions<Batch> }).opts;
    inner.onStep = (i) => inUse.push(backend.memory().bytesInUse);
    await trainer.run();
    expect(inUse.length).toBe(memorySteps);
    expect(Math.max(...inUse.slice(5))).toBe(inUse[4]);
    model.dispose();
  });
});

describe('Trainer.setPlannedSteps', () => {
  it('a total changed during warmup gives the run planned with that total', async () => {
    const backend = availableBackends()[0];
    const run = async (steps: number, changeTo?: number) => {
      const r = setup(backend, 1, { steps, schedule: { kind: 'cosine', warmup: 4 } });
      const lrs: number[] = [];
      const inner = (r.trainer as unknown as { opts: TrainerOptions<Batch> }).opts;
      inner.onStep = (i) => {
        lrs.push(i.lr);
        if (i.step === 2 && changeTo !== undefined) r.trainer.setPlannedSteps(changeTo);
      };
      const summary = await r.trainer.run();
      r.model.dispose();
      return { lrs, steps: summary.steps };
    };
    const planned = await run(8);
    const changed = await run(20, 8);
    expect(changed).toEqual(planned);
    expect(changed.steps).toBe(8);
    const t = setup(backend, 1).trainer;
    t.trainStep();
    expect(() => t.setPlannedSteps(0)).toThrow(/>= 1/);
  });
});
