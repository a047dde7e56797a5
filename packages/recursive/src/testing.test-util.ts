// Helpers for the tests of this package and of @rrt/lora (which re-exports the shared ones); not
// part of the public API, and not reachable from either package's entry, so never built or published.
import { join } from 'node:path';
import { Generator, availableBackends, backendByName, tidy, type Backend } from '@rrt/tensor';
import { CausalLM, defineConfig, loadPretrained, type ModelFamily } from '@rrt/layers';
import { writeValues } from './model.js';

export const FAMILIES: ModelFamily[] = ['llama', 'gemma', 'gpt_neox', 'gpt2'];

/** $RRT_BACKEND when set, else the first backend that can be created here (ref). */
export function testBackend(): Backend {
  const env = process.env.RRT_BACKEND;
  return env ? backendByName(env) : availableBackends()[0]!;
}

/** packages/layers/test/fixtures/<family>: tiny Hugging Face models (2 layers each). */
export function fixtureDir(family: string): string {
  return join(import.meta.dirname, '..', '..', 'layers', 'test', 'fixtures', family);
}

export function loadFixture(family: ModelFamily, backend = testBackend()): CausalLM {
  return loadPretrained(fixtureDir(family), { backend });
}

/**
 * A small model of `family` with numLayers layers and every parameter random (norm weights
 * around their identity value too), so inits that pick or average layers are distinguishable.
 */
export function randomModel(family: ModelFamily, numLayers: number, seed = 1, backend = testBackend()): CausalLM {
  const cfg = defineConfig(family, { numLayers, vocabSize: 32, hiddenSize: 16, numHeads: 2, maxPositions: 16, ...(family === 'gemma' ? {} : { numKvHeads: 2 }) });
  const model = new CausalLM(cfg, { backend });
  const rng = new Generator(seed);
  for (const [path, t] of model.namedParameters()) {
    const isNormWeight = /(^|\.)(ln\d|norm)\.weight$/.test(path);
    const base = isNormWeight && !cfg.rmsNormAddOne ? 1 : 0;
    const scale = isNormWeight ? 0.1 : 0.3;
    const v = new Float32Array(t.size);
    for (let i = 0; i < v.length; i++) v[i] = base + scale * rng.normal();
    writeValues(t, v);
  }
  return model;
}

/** Deterministic token ids [B*T] for a vocabulary. */
export function someIds(B: number, T: number, vocab: number, seed = 3): number[] {
  const rng = new Generator(seed);
  return Array.from({ length: B * T }, () => Math.floor(rng.next() * vocab));
}

/** Logits [B, T, V] as a flat array. */
export function logitsOf(model: CausalLM, ids: number[], shape: [number, number]): Float32Array {
  return tidy(() => model.forward(ids, shape).logits.dataSync());
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The values of a block parameter at block-relative path in block b of a model. */
export function blockValues(model: CausalLM, block: number, path: string): Float32Array {
  return model.blocks[block].namedParameters().get(path)!.dataSync();
}

/** Same as blockValues but for the block run at a depth position. */
export function depthValues(model: CausalLM, depth: number, path: string): Float32Array {
  return model.blockAt(depth).namedParameters().get(path)!.dataSync();
}
