// The Tensor type, its memory rules (tidy / dispose / keep) and the autograd tape.

import { getBackend, type Backend, type Storage } from './backend.js';
import { DisposedError, RrtError, ShapeError, fmtShape } from './errors.js';

/** Storage plus a reference count, so free views (reshape, detach) can share it. */
class Buffer {
  refs = 1;
  constructor(readonly storage: Storage) {}
  release(): void {
    if (--this.refs === 0) this.storage.backend.free(this.storage);
  }
}

/** How an op's result gets its inputs' gradients: the vector-Jacobian product. */
export interface GradNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
  /** Given d(loss)/d(output), returns d(loss)/d(input) per input (null where not needed). */
  backward(grad: Tensor): (Tensor | null)[];
}

// Safety net only: storage of a tensor that was dropped without dispose() is freed when the
// tensor object is collected. tidy()/dispose() are the real mechanism.
const finalizer = new FinalizationRegistry<Buffer>((buf) => buf.release());

let gradEnabled = true;
const scopes: Tensor[][] = [];

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (let i = 0; i < shape.length; i++) n *= shape[i];
  return n;
}

export class Tensor {
  readonly shape: number[];
  readonly size: number;
  /** True when gradients flow to this tensor (parameters, or results of ops on them). */
  requiresGrad = false;
  /** Accumulated gradient of a leaf tensor after backward(); same shape. */
  grad: Tensor | null = null;
  /** The op that produced this tensor, when recorded for autograd. */
  gradNode: GradNode | null = null;
  /** Optional name, used in messages and by modules. */
  name?: string;
  private buf: Buffer | null;
  private kept = false;
  /** Whether the finalizer safety net watches this tensor (see guard()). */
  private guarded = false;

  /** Wraps existing storage; prefer the creation functions (tensor, zeros, ...). */
  constructor(storage: Storage, shape: number[], share?: Tensor) {
    const size = shapeSize(shape);
    if (size !== storage.size) throw new ShapeError(`tensor: shape ${fmtShape(shape)} needs ${size} values, storage has ${storage.size}`);
    this.shape = shape;
    this.size = size;
    if (share) {
      this.buf = share.buffer();
      this.buf.refs++;
    } else {
      this.buf = new Buffer(storage);
    }
    // Inside tidy() the scope frees the tensor (or hands it on), so the finalizer safety net is
    // only attached to tensors that leave every scope: registering every temporary costs a weak
    // cell per op that lingers until a full GC (garbage that training steps pile up).
    const scope = scopes[scopes.length - 1];
    if (scope) scope.push(this);
    else this.guard();
  }

  /** @internal Whether the finalizer safety net watches this tensor (tests). */
  get hasSafetyNet(): boolean {
    return this.guarded;
  }

  /** @internal Attaches the finalizer safety net (tensors that outlive every tidy scope). */
  guard(): void {
    if (this.guarded || !this.buf) return;
    finalizer.register(this, this.buf, this);
    this.guarded = true;
  }

  private buffer(): Buffer {
    if (!this.buf) throw new DisposedError(`tensor${this.name ? ` "${this.name}"` : ''} of shape ${fmtShape(this.shape)} was used after dispose()`);
    return this.buf;
  }

  /** The storage holding the values (throws when disposed). */
  get storage(): Storage {
    return this.buffer().storage;
  }
  get backend(): Backend {
    return this.buffer().storage.backend;
  }
  get rank(): number {
    return this.shape.length;
  }
  get isDisposed(): boolean {
    return this.buf === null;
  }
  /** True when this tensor's storage is shared with no other live tensor (safe to write in place). */
  get ownsStorage(): boolean {
    return this.buffer().refs === 1;
  }

  /** A host copy of the values (synchronous on host backends). */
  dataSync(): Float32Array {
    return this.backend.read(this.storage);
  }
  /** A host copy of the values. */
  async data(): Promise<Float32Array> {
    return this.dataSync();
  }
  /** The single value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new ShapeError(`item: tensor has ${this.size} elements (shape ${fmtShape(this.shape)}), expected 1`);
    return this.dataSync()[0];
  }
  /** Values as nested arrays. */
  toArray(): unknown {
    const d = this.dataSync();
    const build = (dim: number, off: number): unknown => {
      if (dim === this.shape.length) return d[off];
      const stride = shapeSize(this.shape.slice(dim + 1));
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, off + i * stride));
    };
    return build(0, 0);
  }

  /** Frees the storage now (idempotent). */
  dispose(): void {
    if (!this.buf) return;
    if (this.guarded) finalizer.unregister(this);
    this.buf.release();
    this.buf = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
    this.gradNode = null;
  }

  /** Exempts this tensor from the enclosing tidy() scopes; returns this. */
  keep(): this {
    this.kept = true;
    return this;
  }
  get isKept(): boolean {
    return this.kept;
  }

  /** A tensor sharing this one's storage, cut from the autograd graph. */
  detach(): Tensor {
    return new Tensor(this.storage, this.shape.slice(), this);
  }

  /** A tensor sharing this one's storage, viewed with another shape (no autograd record). */
  view(shape: number[]): Tensor {
    return new Tensor(this.storage, shape, this);
  }

  /** Marks this tensor as a trainable leaf; returns this. */
  requireGrad(flag = true): this {
    this.requiresGrad = flag;
    return this;
  }

  /** Drops the accumulated gradient. */
  zeroGrad(): void {
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /**
   * Backpropagates from this tensor. A scalar needs no upstream gradient; otherwise pass one of
   * the same shape. Leaf gradients accumulate into `.grad` (kept across tidy scopes).
   */
  backward(grad?: Tensor, opts: BackwardOptions = {}): void {
    backward(this, grad, opts);
  }

  toString(): string {
    return `Tensor(${fmtShape(this.shape)}, ${this.backend.name}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

/** Creates a tensor on `backend` (default: the active one) from values. */
export function fromValues(values: Float32Array, shape: number[], backend: Backend = getBackend()): Tensor {
  return new Tensor(backend.upload(values), shape);
}

/** An uninitialised tensor; ops use this for outputs. */
export function empty(shape: number[], backend: Backend = getBackend()): Tensor {
  return new Tensor(backend.alloc(shapeSize(shape)), shape);
}

export interface BackwardOptions {
  /**
   * Dispose each intermediate tensor of the graph (an op's recorded result: not a leaf, not
   * kept, not the tensor backward started from) as soon as backward has used it, instead of at
   * the end of the enclosing tidy. A training step then never holds all activations and all
   * their gradients at once, which lowers its peak memory. Reading such a tensor afterwards
   * throws DisposedError. Default false.
   */
  freeIntermediates?: boolean;
}

/** Whether ops currently record gradients. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with gradient recording off (inference, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Attaches an autograd record to `out` when any input needs gradients; returns out. */
export function record(out: Tensor, op: string, inputs: Tensor[], backwardFn: (grad: Tensor) => (Tensor | null)[]): Tensor {
  if (!gradEnabled) return out;
  let needed = false;
  for (let i = 0; i < inputs.length; i++) if (inputs[i].requiresGrad) { needed = true; break; }
  if (!needed) return out;
  out.requiresGrad = true;
  out.gradNode = { op, inputs, backward: backwardFn };
  return out;
}

function collectTensors(value: unknown, into: Set<Tensor>, depth = 0): void {
  if (depth > 4 || value === null || typeof value !== 'object') return;
  if (value instanceof Tensor) {
    into.add(value);
    return;
  }
  if (Array.isArray(value)) for (const v of value) collectTensors(v, into, depth + 1);
  else if (value instanceof Map) for (const v of value.values()) collectTensors(v, into, depth + 1);
  else if (Object.getPrototypeOf(value) === Object.prototype) for (const v of Object.values(value)) collectTensors(v, into, depth + 1);
}

/**
 * Runs fn and disposes every tensor created inside it, except tensors it returns (directly or
 * inside arrays, Maps and plain objects), tensors marked keep(), and gradients of leaves.
 * Returned tensors move to the enclosing scope.
 */
export function tidy<T>(fn: () => T): T {
  scopes.push([]);
  let result: T;
  let scope: Tensor[];
  try {
    result = fn();
  } catch (e) {
    // The scope's tensors stay alive as before; the safety net frees them once unreachable.
    for (const t of scopes.pop()!) t.guard();
    throw e;
  }
  scope = scopes.pop()!;
  if (result instanceof Promise) {
    for (const t of scope) t.guard();
    throw new RrtError('tidy: fn returned a Promise; tidy scopes are synchronous');
  }
  const keepSet = new Set<Tensor>();
  collectTensors(result, keepSet);
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (keepSet.has(t)) {
      if (parent) parent.push(t);
      else t.guard();
    } else if (t.isKept) {
      t.guard();
    } else {
      t.dispose();
    }
  }
  return result;
}

/** Disposes every tensor found in value (tensor, array, Map or plain object). */
export function dispose(value: unknown): void {
  const set = new Set<Tensor>();
  collectTensors(value, set);
  for (const t of set) t.dispose();
}

// Imported lazily by backward() to avoid a cycle with the op modules.
let addInto: ((acc: Tensor, g: Tensor) => void) | null = null;
let onesLike: ((t: Tensor) => Tensor) | null = null;
let cloneOf: ((t: Tensor) => Tensor) | null = null;
/** @internal Wires the ops backward() needs (set by ops/index). */
export function setAutogradHelpers(h: { addInto: (acc: Tensor, g: Tensor) => void; onesLike: (t: Tensor) => Tensor; clone: (t: Tensor) => Tensor }): void {
  addInto = h.addInto;
  onesLike = h.onesLike;
  cloneOf = h.clone;
}

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.gradNode ? t.gradNode.inputs : [];
    if (i < inputs.length) {
      top[1]++;
      const next = inputs[i];
      if (next.requiresGrad && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

function backward(root: Tensor, grad: Tensor | undefined, opts: BackwardOptions): void {
  if (!root.requiresGrad) throw new RrtError('backward: tensor does not require gradients (no parameter with requiresGrad contributed to it)');
  if (!grad && root.size !== 1) throw new ShapeError(`backward: an upstream gradient is needed for a non-scalar tensor of shape ${fmtShape(root.shape)}`);
  if (grad && shapeSize(grad.shape) !== root.size) throw new ShapeError(`backward: gradient shape ${fmtShape(grad.shape)} does not match tensor shape ${fmtShape(root.shape)}`);
  noGrad(() => {
    const order = topoOrder(root);
    const grads = new Map<Tensor, Tensor>();
    // Every map entry is a distinct Tensor object (aliases share storage by refcount), so an
    // entry can be disposed as soon as its node is processed.
    const own = (g: Tensor): Tensor => g.view(g.shape);
    grads.set(root, grad ? own(grad) : onesLike!(root));
    for (let idx = order.length - 1; idx >= 0; idx--) {
      const t = order[idx];
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      if (!t.gradNode) {
        // Leaf: accumulate into .grad, which must own its storage to be updated in place.
        if (t.grad) {
          addInto!(t.grad, g);
          g.dispose();
        } else {
          t.grad = (g.ownsStorage ? g : cloneOf!(g)).keep();
          if (t.grad !== g) g.dispose();
          if (!sameShape(t.grad.shape, t.shape)) t.grad = reshapeOwned(t.grad, t.shape);
        }
        continue;
      }
      const node = t.gradNode;
      // The VJP's temporaries are freed here; only the gradients it returns survive.
      const inputGrads = tidy(() => node.backward(g));
      const { inputs } = t.gradNode;
      for (let i = 0; i < inputs.length; i++) {
        const input = inputs[i];
        const ig = inputGrads[i];
        if (!ig || !input.requiresGrad) continue;
        if (shapeSize(ig.shape) !== input.size) {
          throw new RrtError(`backward of ${t.gradNode.op}: gradient for input ${i} has shape ${fmtShape(ig.shape)}, input has ${fmtShape(input.shape)}`);
        }
        const prev = grads.get(input);
        if (prev) {
          if (prev.ownsStorage) addInto!(prev, ig);
          else {
            const sum = cloneOf!(prev);
            addInto!(sum, ig);
            prev.dispose();
            grads.set(input, sum);
          }
        } else {
          grads.set(input, own(ig));
        }
      }
      for (const ig of inputGrads) if (ig && ig !== g) ig.dispose();
      g.dispose();
      // Free what the node saved for backward: it will not run again. Every consumer of t
      // came later in the forward pass, so its backward has already run.
      if (t !== root) {
        t.gradNode = null;
        if (opts.freeIntermediates && !t.isKept) t.dispose();
      }
    }
    root.gradNode = null;
    for (const g of grads.values()) g.dispose();
  });
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function reshapeOwned(t: Tensor, shape: number[]): Tensor {
  const v = t.view(shape).keep();
  t.dispose();
  return v;
}
