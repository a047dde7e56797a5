// Custom sharing schemes: a sharing scheme is a small object passed to toRecursive, so a new
// way of tying layers needs no change to the library. This script defines two and converts a
// small model with each:
//   1. MIRROR, a custom depth map: depth l and depth L-1-l share a block (0 1 2 2 1 0).
//   2. CYCLE with only the MLPs tied: attention and norms stay per depth position.
// Run: npx tsx examples/custom-scheme.ts   (from the repository root)

import { Generator, RrtError, getBackend, setBackend, tidy } from '@rrt/tensor';
import { CausalLM, defineConfig } from '@rrt/layers';
import { CYCLE, average, defineScheme, toRecursive, withTie } from '@rrt/recursive';

// Use the default backend, or the reference one where no faster backend is registered.
try {
  getBackend();
} catch {
  setBackend('ref');
}

// A small random llama-style model with 6 layers stands in for a pretrained one.
const cfg = defineConfig('llama', { numLayers: 6, vocabSize: 64, hiddenSize: 32, numHeads: 4, maxPositions: 32 });
const pretrained = new CausalLM(cfg, { rng: new Generator(0) });

// 1. A custom depth map. depthMap(L, loops) returns the shared block of each depth position and
// must use every block index 0..K-1. Throwing an RrtError is how a scheme rejects an L or loops.
const MIRROR = defineScheme({
  name: 'MIRROR',
  depthMap: (numLayers, loops) => {
    if (loops !== 2 || numLayers % 2 !== 0) throw new RrtError(`MIRROR: needs 2 loops and an even L, got L = ${numLayers}, ${loops} loops`);
    return Array.from({ length: numLayers }, (_, l) => Math.min(l, numLayers - 1 - l));
  },
  // sourcesOf (which layers initialise a block) defaults to the depths that run it: block 0 <- layers 0 and 5.
});

const mirrored = toRecursive(pretrained, { loops: 2, scheme: MIRROR, init: average });
console.log(`MIRROR depth map: ${mirrored.model.schedule.join(' ')}`);
console.log(`  ${mirrored.model.blocks.length} blocks; parameters`, mirrored.model.parameterCounts());

// 2. Tie only the MLPs. The depth map is CYCLE's (0 1 2 0 1 2); the tie predicate sees
// block-relative parameter paths ('mlp.up.weight', 'attn.q.weight', 'ln1.weight', ...).
const MLP_ONLY = withTie(CYCLE, (path) => path.startsWith('mlp.'), 'CYCLE-mlp-only');
const { model, residuals } = toRecursive(pretrained, { loops: 2, scheme: MLP_ONLY, init: average });
// Such a model keeps one block per depth; the tied MLP weights are the same tensors.
const up = (depth: number) => model.blockAt(depth).namedParameters().get('mlp.up.weight');
console.log(`MLP-only: ${model.blocks.length} blocks; depth 0 and depth 3 share mlp.up: ${up(0) === up(3)}`);
console.log('  parameters', model.parameterCounts());

// The residuals (original minus shared weight) feed the SVD init of depth-wise LoRA. Untied
// parameters are the originals, so their residual is zero.
const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
console.log(`  |residual| at depth 3: mlp.up ${norm(residuals(3, 'mlp.up.weight').data).toFixed(4)}, attn.q ${norm(residuals(3, 'attn.q.weight').data).toFixed(4)}`);

// Both models run like any CausalLM: ids [B*T] with shape [B, T] -> logits [B, T, V].
const ids = [1, 2, 3, 4, 5, 6, 7, 8];
const logits = tidy(() => model.forward(ids, [2, 4]).logits.shape);
console.log(`  forward: logits ${JSON.stringify(logits)}`);

for (const m of [pretrained, mirrored.model, model]) m.dispose();
