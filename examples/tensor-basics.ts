// Tensors and autograd: build tensors, run ops, call backward() and read gradients, then fit a
// line with AdamW. tidy() frees every intermediate tensor made inside it.
// Run: npx tsx examples/tensor-basics.ts   (TINY=1 for fewer steps)

import { AdamW, getBackend, matmul, mean, mul, setBackend, sub, sum, tensor, tidy } from '@rrt/tensor';

try {
  getBackend();
} catch {
  setBackend('ref'); // no WebAssembly backend here: the pure-JS reference one
}
console.log(`backend: ${getBackend().name}`);

// A 2x3 matrix times a 3x1 vector.
const a = tensor([[1, 2, 3], [4, 5, 6]]);
const x = tensor([[1], [0], [-1]]).requireGrad();
const y = matmul(a, x);
console.log(`a @ x = ${JSON.stringify(y.toArray())}`);

// d(sum(a @ x))/dx = column sums of a.
sum(y).backward();
console.log(`grad of sum(a @ x) w.r.t. x = ${JSON.stringify(x.grad!.toArray())}`);

// Fit w in y = 3x with squared error; each step's tensors are freed by tidy().
const steps = process.env.TINY === '1' ? 20 : 200;
const w = tensor([0]).requireGrad();
const opt = new AdamW([w], { lr: 0.1, weightDecay: 0 });
const xs = tensor([1, 2, 3, 4]), ys = tensor([3, 6, 9, 12]);
for (let i = 0; i < steps; i++) {
  tidy(() => {
    const err = sub(mul(xs, w), ys);
    mean(mul(err, err)).backward();
    opt.step();
    opt.zeroGrad();
  });
}
console.log(`fitted w = ${w.dataSync()[0]!.toFixed(3)} after ${steps} steps (target 3)`);
