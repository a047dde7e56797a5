export * from './elementwise.js';
export * from './shape.js';
export * from './reduce.js';
export * from './matmul.js';
export * from './nn.js';
// Kernel timing lives beside the ops it measures (exported through here).
export * from '../profile.js';

import { setAutogradHelpers, type Tensor } from '../tensor.js';
import { add } from './elementwise.js';
import { clone, setShapeHelpers } from './shape.js';
import { onesLike } from '../creation.js';

setShapeHelpers({ add: (a: Tensor, b: Tensor) => add(a, b) });
setAutogradHelpers({
  // In-place accumulation of gradients: acc owns its storage (checked by the engine).
  addInto: (acc: Tensor, g: Tensor) => {
    const gs = g.rank === acc.rank ? g.shape : acc.shape;
    acc.backend.kernels.binary('add', acc.storage, acc.shape, g.storage, gs, acc.storage, acc.shape);
  },
  onesLike,
  clone,
});
