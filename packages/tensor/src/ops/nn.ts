// Neural-network ops with fused kernels: softmax, norms, cross-entropy, and the losses and
// helpers built from them (KL divergence, dropout, attention).

import type { Backend, Storage } from '../backend.js';
import { RrtError, ShapeError, fmtShape } from '../errors.js';
import { globalGenerator, type Generator } from '../random.js';
import { Tensor, empty, fromValues, isGradEnabled, record } from '../tensor.js';
import { add, affine, exp, mul, sub } from './elementwise.js';
import { matmul } from './matmul.js';
import { sum } from './reduce.js';
import { causalMask, concat, narrow, permute, reshape, slice, transpose } from './shape.js';
import { backendOf, checkIds, normAxis } from './util.js';

function lastAxisOp(x: Tensor, axis: number, fn: (x: Tensor) => Tensor): Tensor {
  const a = normAxis('softmax', axis, x.rank);
  if (a === x.rank - 1) return fn(x);
  return transpose(fn(transpose(x, a, -1)), a, -1);
}

function softmaxImpl(x: Tensor, log: boolean): Tensor {
  const cols = x.shape[x.rank - 1] ?? 1;
  const rows = cols === 0 ? 0 : x.size / cols;
  const out = empty(x.shape.slice(), x.backend);
  x.backend.kernels.softmax(x.storage, rows, cols, log, out.storage);
  return record(out, log ? 'logSoftmax' : 'softmax', [x], (g) => {
    const dx = empty(x.shape.slice(), x.backend);
    x.backend.kernels.softmaxGrad(out.storage, g.storage, rows, cols, log, dx.storage);
    return [dx];
  });
}

/** Softmax along an axis (default last), numerically stable. */
export function softmax(x: Tensor, axis = -1): Tensor {
  return lastAxisOp(x, axis, (t) => softmaxImpl(t, false));
}

export interface CausalSoftmaxOptions {
  /** Multiplies x before the softmax (default 1; must be > 0). */
  scale?: number;
  /** Query positions per matrix: row r of x's last matrix is query r % period (default: all its rows). */
  period?: number;
  /** Query t sees keys s <= offset + t (default: keys - period, the queries are the last positions). */
  offset?: number;
}

/**
 * softmax(scale * x + causal mask) over the last axis, in one pass where the backend has the
 * fused kernel (else as affine + mask + softmax). x: [..., R, S] -> same shape; masked entries
 * are 0. Grouped-query attention lays G heads' scores as [G * T, S]: period T.
 */
export function causalSoftmax(x: Tensor, opts: CausalSoftmaxOptions = {}): Tensor {
  if (x.rank < 2) throw new ShapeError(`causalSoftmax: x must be [..., rows, keys], got ${fmtShape(x.shape)}`);
  const R = x.shape[x.rank - 2], S = x.shape[x.rank - 1];
  const period = opts.period ?? R, offset = opts.offset ?? S - period, scale = opts.scale ?? 1;
  if (!(Number.isInteger(period) && period >= 1 && R % period === 0)) {
    throw new RrtError(`causalSoftmax: period must be a positive integer dividing the ${R} rows of ${fmtShape(x.shape)}, got ${period}`);
  }
  if (!(Number.isInteger(offset) && offset >= 0)) throw new RrtError(`causalSoftmax: offset must be a non-negative integer (every query sees key 0), got ${offset}`);
  if (!(scale > 0 && Number.isFinite(scale))) throw new RrtError(`causalSoftmax: scale must be a positive finite number, got ${scale}`);
  const backend = x.backend, kernels = backend.kernels;
  const rows = S === 0 ? 0 : x.size / S;
  if (!kernels.causalSoftmax) {
    const mask = causalMask(period, S, offset, backend);
    const scaled = scale === 1 ? x : affine(x, scale, 0);
    return reshape(softmax(add(reshape(scaled, [rows / period, period, S]), mask)), x.shape.slice());
  }
  const out = empty(x.shape.slice(), backend);
  kernels.causalSoftmax(x.storage, rows, S, scale, period, offset, out.storage);
  return record(out, 'causalSoftmax', [x], (g) => {
    const dx = empty(x.shape.slice(), backend);
    kernels.softmaxGrad(out.storage, g.storage, rows, S, false, dx.storage);
    // In place: the backends with the fused kernel run affine elementwise.
    if (scale !== 1) kernels.affine(dx.storage, scale, 0, dx.storage);
    return [dx];
  });
}

/** log(softmax(x)) along an axis, computed stably. */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return lastAxisOp(x, axis, (t) => softmaxImpl(t, true));
}

function checkNormParam(op: string, p: Tensor | null, cols: number): void {
  if (p && (p.rank !== 1 || p.shape[0] !== cols)) throw new ShapeError(`${op}: parameter must be [${cols}], got ${fmtShape(p.shape)}`);
}

/** LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * w + b. x: [..., D], w, b: [D]. */
export function layerNorm(x: Tensor, w: Tensor | null, b: Tensor | null, eps = 1e-5): Tensor {
  const cols = x.shape[x.rank - 1];
  checkNormParam('layerNorm', w, cols);
  checkNormParam('layerNorm', b, cols);
  const inputs = [x, w, b].filter((t): t is Tensor => t !== null);
  const backend = backendOf('layerNorm', ...inputs);
  const rows = x.size / cols;
  const out = empty(x.shape.slice(), backend);
  const mean = empty([rows], backend), rstd = empty([rows], backend);
  backend.kernels.layerNorm(x.storage, w?.storage ?? null, b?.storage ?? null, rows, cols, eps, out.storage, mean.storage, rstd.storage);
  return record(out, 'layerNorm', inputs, (g) => {
    const dx = empty(x.shape.slice(), backend);
    const dw = w ? zerosOn(w) : null, db = b ? zerosOn(b) : null;
    backend.kernels.layerNormGrad(x.storage, w?.storage ?? null, mean.storage, rstd.storage, g.storage, rows, cols, dx.storage, dw?.storage ?? null, db?.storage ?? null);
    const grads: (Tensor | null)[] = [dx];
    if (w) grads.push(dw);
    if (b) grads.push(db);
    return grads;
  });
}

/** RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * w, or * (1 + w) with addOne (Gemma). */
export function rmsNorm(x: Tensor, w: Tensor | null, eps = 1e-6, addOne = false): Tensor {
  const cols = x.shape[x.rank - 1];
  checkNormParam('rmsNorm', w, cols);
  const inputs = w ? [x, w] : [x];
  const backend = backendOf('rmsNorm', ...inputs);
  const rows = x.size / cols;
  const out = empty(x.shape.slice(), backend);
  const rstd = empty([rows], backend);
  backend.kernels.rmsNorm(x.storage, w?.storage ?? null, rows, cols, eps, addOne, out.storage, rstd.storage);
  return record(out, 'rmsNorm', inputs, (g) => {
    const dx = empty(x.shape.slice(), backend);
    const dw = w ? zerosOn(w) : null;
    backend.kernels.rmsNormGrad(x.storage, w?.storage ?? null, rstd.storage, g.storage, rows, cols, addOne, dx.storage, dw?.storage ?? null);
    return w ? [dx, dw] : [dx];
  });
}

function zerosOn(like: Tensor): Tensor {
  const t = empty(like.shape.slice(), like.backend);
  like.backend.kernels.fill(t.storage, 0);
  return t;
}

export interface CrossEntropyOptions {
  /** Targets equal to this are skipped (default -100, as in PyTorch). */
  ignoreIndex?: number;
  /** 'mean' over non-ignored targets (default), 'sum', or 'none' (per position). */
  reduction?: 'mean' | 'sum' | 'none';
}

/**
 * Cross-entropy of logits [..., V] against integer targets (one per position, Int32Array or
 * number[]). Returns a scalar, or [...] per position with reduction 'none'.
 */
export function crossEntropy(logits: Tensor, targets: ArrayLike<number>, opts: CrossEntropyOptions = {}): Tensor {
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const reduction = opts.reduction ?? 'mean';
  const vocab = logits.shape[logits.rank - 1];
  const rows = logits.size / vocab;
  if (targets.length !== rows) {
    throw new ShapeError(`crossEntropy: ${targets.length} targets for logits ${fmtShape(logits.shape)} (${rows} positions)`);
  }
  const t = Int32Array.from(targets);
  let counted = 0;
  for (let i = 0; i < t.length; i++) {
    if (t[i] === ignoreIndex) continue;
    if (!(t[i] >= 0 && t[i] < vocab)) throw new RrtError(`crossEntropy: target ${t[i]} at position ${i} is out of range [0, ${vocab})`);
    counted++;
  }
  const backend = logits.backend;
  const loss = empty(logits.shape.slice(0, -1), backend);
  const lse = empty([rows], backend);
  backend.kernels.crossEntropy(logits.storage, t, rows, vocab, ignoreIndex, loss.storage, lse.storage);
  const perRow = record(loss, 'crossEntropy', [logits], (g) => {
    const d = empty(logits.shape.slice(), backend);
    backend.kernels.crossEntropyGrad(logits.storage, t, lse.storage, g.storage, rows, vocab, ignoreIndex, d.storage);
    return [d];
  });
  if (reduction === 'none') return perRow;
  const total = sum(perRow);
  return reduction === 'sum' ? total : affine(total, 1 / Math.max(counted, 1), 0);
}

export interface KlOptions {
  /** Softens both distributions; the loss is scaled by T^2 so gradients keep their size. */
  temperature?: number;
  /** 'forward' = KL(teacher || student) (default), 'reverse' = KL(student || teacher). */
  direction?: 'forward' | 'reverse';
  /** 'mean' over positions (default), 'sum', or 'none'. */
  reduction?: 'mean' | 'sum' | 'none';
}

/**
 * KL divergence between the distributions of two logit tensors [..., V] (student first).
 * Gradients flow to whichever inputs require them (detach the teacher to freeze it).
 */
export function klDivergence(studentLogits: Tensor, teacherLogits: Tensor, opts: KlOptions = {}): Tensor {
  if (studentLogits.shape.join() !== teacherLogits.shape.join()) {
    throw new ShapeError(`klDivergence: student ${fmtShape(studentLogits.shape)} and teacher ${fmtShape(teacherLogits.shape)} differ`);
  }
  const temp = opts.temperature ?? 1;
  const ls = logSoftmax(affine(studentLogits, 1 / temp, 0));
  const lt = logSoftmax(affine(teacherLogits, 1 / temp, 0));
  const [lp, lq] = (opts.direction ?? 'forward') === 'forward' ? [lt, ls] : [ls, lt];
  const perRow = sum(mul(exp(lp), sub(lp, lq)), -1);
  const scaled = affine(perRow, temp * temp, 0);
  const reduction = opts.reduction ?? 'mean';
  if (reduction === 'none') return scaled;
  const total = sum(scaled);
  return reduction === 'sum' ? total : affine(total, 1 / Math.max(perRow.size, 1), 0);
}

/** Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p). */
export function dropout(x: Tensor, p: number, rng: Generator = globalGenerator()): Tensor {
  if (!(p >= 0 && p < 1)) throw new RrtError(`dropout: p must be in [0, 1), got ${p}`);
  if (p === 0) return x;
  const keep = new Float32Array(x.size);
  const scale = 1 / (1 - p);
  for (let i = 0; i < keep.length; i++) keep[i] = rng.next() >= p ? scale : 0;
  return mul(x, fromValues(keep, x.shape.slice(), x.backend));
}

/**
 * Scaled dot-product attention. q: [B, H, T, Dh], k, v: [B, H, S, Dh]; mask (optional, additive)
 * broadcastable to [B, H, T, S]. Returns [B, H, T, Dh].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null, scale = 1 / Math.sqrt(q.shape[q.rank - 1])): Tensor {
  let scores = affine(matmul(q, k, { transB: true }), scale, 0);
  if (mask) scores = add(scores, mask);
  return matmul(softmax(scores), v);
}

export interface CachedAttentionOptions {
  /** Multiplies q k^T (default 1 / sqrt(headDim)). */
  scale?: number;
  /** Additive mask [M, length] (e.g. causal rows of a multi-token step), or null for none. */
  mask?: Tensor | null;
  /**
   * Causal masking without a mask tensor (instead of `mask`): query row r is position
   * r % period and sees cached positions <= offset + r % period (see causalSoftmax).
   */
  causal?: { period: number; offset: number };
}

const offsetCache = new Map<number, Int32Array>();

/** [0, stride, 2 stride, ...] (H values), read-only and shared: a decode step asks for the same few. */
function headOffsets(H: number, stride: number): Int32Array {
  const key = H * 2 ** 31 + stride;
  if (H >= 2 ** 16 || stride >= 2 ** 31) return Int32Array.from({ length: H }, (_, h) => h * stride);
  let offs = offsetCache.get(key);
  if (!offs) {
    if (offsetCache.size >= 4096) offsetCache.clear();
    offs = Int32Array.from({ length: H }, (_, h) => h * stride);
    offsetCache.set(key, offs);
  }
  return offs;
}

/**
 * Attention of new queries over the first `length` positions of a key/value cache, reading the
 * cache buffers in place: a decode step costs O(length) reads, not a copy of the cache.
 * q: [H, M, Dh] (M query rows per head); kCache, vCache: [H, C, Dh] with 1 <= length <= C;
 * mask (optional, additive): [M, length] -> [H, M, Dh].
 * When gradients are recorded for an input, it runs as slice + attention (same values) so the
 * gradient flows; otherwise nothing is copied.
 */
export function cachedAttention(q: Tensor, kCache: Tensor, vCache: Tensor, length: number, opts: CachedAttentionOptions = {}): Tensor {
  const backend = backendOf('cachedAttention', q, kCache, vCache);
  if (q.rank !== 3 || kCache.rank !== 3 || vCache.rank !== 3) {
    throw new ShapeError(`cachedAttention: q, kCache and vCache must be [H, M, Dh] and [H, C, Dh], got ${fmtShape(q.shape)}, ${fmtShape(kCache.shape)}, ${fmtShape(vCache.shape)}; reshape them to rank 3`);
  }
  const [H, M, Dh] = q.shape;
  const C = kCache.shape[1];
  if (kCache.shape[0] !== H || kCache.shape[2] !== Dh || vCache.shape[0] !== H || vCache.shape[1] !== C || vCache.shape[2] !== Dh) {
    throw new ShapeError(`cachedAttention: caches must be [${H}, C, ${Dh}] like q ${fmtShape(q.shape)}, got ${fmtShape(kCache.shape)} and ${fmtShape(vCache.shape)}`);
  }
  if (!(Number.isInteger(length) && length >= 1 && length <= C)) {
    throw new RrtError(`cachedAttention: length must be an integer in [1, ${C}] (the cache capacity), got ${length}`);
  }
  const mask = opts.mask ?? null;
  if (mask && !(mask.rank === 2 && mask.shape[0] === M && mask.shape[1] === length)) {
    throw new ShapeError(`cachedAttention: the mask must be [${M}, ${length}] (query rows, cached positions), got ${fmtShape(mask.shape)}`);
  }
  const scale = opts.scale ?? 1 / Math.sqrt(Dh);
  if (mask && opts.causal) throw new RrtError('cachedAttention: give either mask or causal, not both');
  if (isGradEnabled() && (q.requiresGrad || kCache.requiresGrad || vCache.requiresGrad || (mask?.requiresGrad ?? false))) {
    const k = length === C ? kCache : slice(kCache, [null, [0, length]]);
    const v = length === C ? vCache : slice(vCache, [null, [0, length]]);
    if (!opts.causal) return attention(q, k, v, mask, scale);
    return matmul(causalSoftmax(matmul(q, k, { transB: true }), { ...opts.causal, scale }), v);
  }
  const offsets = (stride: number): Int32Array => headOffsets(H, stride);
  const qOffsets = offsets(M * Dh), cacheOffsets = offsets(C * Dh);
  const scores = empty([H, M, length], backend);
  backend.kernels.matmul(q.storage, kCache.storage, scores.storage, {
    batch: H, m: M, k: Dh, n: length, transA: false, transB: true, aBatchOffsets: qOffsets, bBatchOffsets: cacheOffsets, accumulate: false,
  });
  let probs: Tensor;
  if (mask) {
    const masked = add(affine(scores, scale, 0), mask);
    probs = softmax(masked);
    masked.dispose();
  } else {
    // Scale, (causal) mask and softmax in one pass; no causal option: every position is visible.
    probs = causalSoftmax(scores, { period: 1, offset: length - 1, ...opts.causal, scale });
  }
  scores.dispose();
  const out = empty([H, M, Dh], backend);
  backend.kernels.matmul(probs.storage, vCache.storage, out.storage, {
    batch: H, m: M, k: length, n: Dh, transA: false, transB: false, aBatchOffsets: offsets(M * length), bBatchOffsets: cacheOffsets, accumulate: false,
  });
  probs.dispose();
  return out;
}

/** Runs of copyRuns: what to copy, and (for strided runs) how many blocks and their strides. */
export interface CopyRuns {
  src: readonly Tensor[];
  srcOffsets: Int32Array;
  dst: readonly Tensor[];
  dstOffsets: Int32Array;
  /** Elements per block. */
  length: number;
  /** Blocks per run (default 1), block b at offset + b * stride on each side. */
  blocks?: number;
  /** Per run, in elements (needed when blocks > 1). */
  srcStrides?: Int32Array;
  dstStrides?: Int32Array;
}

/**
 * For every run j, copies `blocks` blocks of `length` values, block b from src[j] at element
 * srcOffsets[j] + b * srcStrides[j] to dst[j] at dstOffsets[j] + b * dstStrides[j]: the many
 * small copies of a serving step (a cache entry of every KV head is one run) in one kernel call
 * where the backend has one, one copyRegion per run otherwise. Writes storage in place, outside
 * autograd.
 */
export function copyRuns(runs: CopyRuns): void {
  const { src, srcOffsets, dst, dstOffsets, length } = runs;
  const blocks = runs.blocks ?? 1;
  const n = src.length;
  const unstrided = blocks === 1 ? new Int32Array(n) : null;
  const srcStrides = runs.srcStrides ?? unstrided, dstStrides = runs.dstStrides ?? unstrided;
  if (dst.length !== n || srcOffsets.length !== n || dstOffsets.length !== n) {
    throw new RrtError(`copyRuns: ${n} sources need as many destinations and offsets, got ${dst.length} destinations, ${srcOffsets.length} and ${dstOffsets.length} offsets`);
  }
  if (!(Number.isInteger(length) && length >= 0)) throw new RrtError(`copyRuns: length must be an integer >= 0, got ${length}`);
  if (!(Number.isInteger(blocks) && blocks >= 1)) throw new RrtError(`copyRuns: blocks must be an integer >= 1, got ${blocks}`);
  if (!srcStrides || !dstStrides || srcStrides.length !== n || dstStrides.length !== n) throw new RrtError(`copyRuns: ${blocks} blocks per run need ${n} source and destination strides`);
  if (n === 0 || length === 0) return;
  const backend = src[0].backend;
  for (let j = 0; j < n; j++) {
    const s = src[j], d = dst[j];
    if (s.backend !== backend || d.backend !== backend) throw new RrtError(`copyRuns: run ${j} mixes backends (${s.backend.name}, ${d.backend.name}, expected ${backend.name})`);
    const last = blocks - 1;
    const inSrc = srcOffsets[j] >= 0 && srcStrides[j] >= 0 && srcOffsets[j] + last * srcStrides[j] + length <= s.size;
    const inDst = dstOffsets[j] >= 0 && dstStrides[j] >= 0 && dstOffsets[j] + last * dstStrides[j] + length <= d.size;
    if (!inSrc || !inDst) {
      throw new RrtError(`copyRuns: run ${j} (${blocks} x ${length} values, from offset ${srcOffsets[j]} of ${s.size} to offset ${dstOffsets[j]} of ${d.size}) is out of bounds`);
    }
  }
  runCopies(backend, src.map((t) => t.storage), srcOffsets, srcStrides, dst.map((t) => t.storage), dstOffsets, dstStrides, length, blocks);
}

/** copyRuns on checked storages: the backend's kernel, or copyRegion per run (per block where a run is not a 2-D region). */
function runCopies(
  backend: Backend, src: Storage[], srcOffsets: Int32Array, srcStrides: Int32Array, dst: Storage[], dstOffsets: Int32Array, dstStrides: Int32Array,
  length: number, blocks: number,
): void {
  const k = backend.kernels;
  if (k.copyRuns) return k.copyRuns(src, srcOffsets, srcStrides, dst, dstOffsets, dstStrides, length, blocks);
  // Each copyRegion may be a device dispatch: a run is one [blocks, length] region of its two
  // storages viewed as rows of their strides, when they divide into such rows.
  const asRows = (s: Storage, off: number, stride: number) => (blocks === 1 ? { shape: [s.size], start: [off] } : stride > 0 && s.size % stride === 0 && (off % stride) + length <= stride ? { shape: [s.size / stride, stride], start: [Math.floor(off / stride), off % stride] } : null);
  for (let j = 0; j < src.length; j++) {
    const a = asRows(src[j], srcOffsets[j], srcStrides[j]), b = asRows(dst[j], dstOffsets[j], dstStrides[j]);
    if (a && b) {
      k.copyRegion(src[j], a.shape, a.start, dst[j], b.shape, b.start, blocks === 1 ? [length] : [blocks, length], false);
      continue;
    }
    for (let i = 0; i < blocks; i++) {
      k.copyRegion(src[j], [src[j].size], [srcOffsets[j] + i * srcStrides[j]], dst[j], [dst[j].size], [dstOffsets[j] + i * dstStrides[j]], [length], false);
    }
  }
}

/** One sequence in an appendAttend call: its cache buffers and where its new entries go. */
export interface CacheSegment {
  /** The cache buffers, [KV, C, Dh] each. */
  k: Tensor;
  v: Tensor;
  /** Entries cached before this call: the segment's tokens go to positions start, start + 1, ... */
  start: number;
  /** Tokens of the segment: the next `tokens` rows of q, k and v. */
  tokens: number;
}

/**
 * Serving attention of many sequences in one call. q: [S, H, Dh], k, v: [S, KV, Dh] for S
 * tokens in segments (segment i takes the next segments[i].tokens rows). Each segment's keys and
 * values are written into its cache at positions start.., then its token t attends to cached
 * positions 0..start + t; query head h uses KV head floor(h / (H / KV)). Returns [S, H, Dh].
 * Where the backend has copyRuns and attendCaches this is two kernel calls for every sequence
 * together; otherwise (or when q needs gradients) it runs cachedAttention per segment, with the
 * same values. Gradients never flow into the caches.
 */
export function appendAttend(q: Tensor, k: Tensor, v: Tensor, segments: readonly CacheSegment[], opts: { scale?: number } = {}): Tensor {
  const backend = backendOf('appendAttend', q, k, v);
  if (q.rank !== 3 || k.rank !== 3 || v.rank !== 3) {
    throw new ShapeError(`appendAttend: q must be [S, H, Dh] and k, v [S, KV, Dh], got ${fmtShape(q.shape)}, ${fmtShape(k.shape)}, ${fmtShape(v.shape)}`);
  }
  const [S, H, Dh] = q.shape, KV = k.shape[1];
  if (k.shape[0] !== S || k.shape[2] !== Dh || v.shape.some((d, i) => d !== k.shape[i]) || KV < 1 || H % KV !== 0) {
    throw new ShapeError(`appendAttend: k and v must be [${S}, KV, ${Dh}] with KV dividing ${H}, got ${fmtShape(k.shape)} and ${fmtShape(v.shape)}`);
  }
  const n = segments.length;
  const caps = new Int32Array(n), starts = new Int32Array(n), lens = new Int32Array(n);
  let total = 0;
  segments.forEach((seg, i) => {
    const C = seg.k.shape[1];
    if (seg.k.rank !== 3 || seg.k.shape[0] !== KV || seg.k.shape[2] !== Dh || seg.v.shape.some((d, a) => d !== seg.k.shape[a])) {
      throw new ShapeError(`appendAttend: segment ${i}'s caches must be [${KV}, C, ${Dh}], got ${fmtShape(seg.k.shape)} and ${fmtShape(seg.v.shape)}`);
    }
    if (seg.k.backend !== backend || seg.v.backend !== backend) throw new RrtError(`appendAttend: segment ${i}'s caches are on ${seg.k.backend.name}, the queries on ${backend.name}`);
    if (!(Number.isInteger(seg.tokens) && seg.tokens >= 1 && Number.isInteger(seg.start) && seg.start >= 0 && seg.start + seg.tokens <= C)) {
      throw new RrtError(`appendAttend: segment ${i} writes ${seg.tokens} tokens at position ${seg.start} of a cache of capacity ${C}`);
    }
    caps[i] = C; starts[i] = seg.start; lens[i] = seg.tokens;
    total += seg.tokens;
  });
  if (total !== S) throw new RrtError(`appendAttend: the segments hold ${total} tokens, q has ${S}`);
  const scale = opts.scale ?? 1 / Math.sqrt(Dh);
  // The writes: a token's entry (all KV heads) is one run of KV blocks of Dh values, contiguous
  // in k (v) and C * Dh apart in its cache. (In bounds by the checks above: no per-run checks.)
  const runs = 2 * S;
  const src: Storage[] = new Array(runs), dst: Storage[] = new Array(runs);
  const srcOffs = new Int32Array(runs), dstOffs = new Int32Array(runs), srcStrides = new Int32Array(runs).fill(Dh), dstStrides = new Int32Array(runs);
  let r = 0, row = 0;
  segments.forEach((seg, i) => {
    const ks = seg.k.storage, vs = seg.v.storage, stride = caps[i] * Dh;
    for (let t = 0; t < seg.tokens; t++, row++) {
      const from = row * KV * Dh, to = (seg.start + t) * Dh;
      src[r] = k.storage; srcOffs[r] = from; dst[r] = ks; dstOffs[r] = to; dstStrides[r++] = stride;
      src[r] = v.storage; srcOffs[r] = from; dst[r] = vs; dstOffs[r] = to; dstStrides[r++] = stride;
    }
  });
  runCopies(backend, src, srcOffs, srcStrides, dst, dstOffs, dstStrides, Dh, KV);
  const kernels = backend.kernels;
  if (kernels.attendCaches && !(isGradEnabled() && q.requiresGrad)) {
    const out = empty([S, H, Dh], backend);
    kernels.attendCaches(q.storage, segments.map((s) => s.k.storage), segments.map((s) => s.v.storage), caps, starts, lens, H, KV, Dh, scale, out.storage);
    return out;
  }
  // Per segment: queries [len, KV, G, Dh] -> [KV, G * len, Dh], attention, and back.
  const G = H / KV;
  const q4 = reshape(q, [S, KV, G, Dh]);
  const parts: Tensor[] = [];
  let offset = 0;
  segments.forEach((seg, i) => {
    const len = lens[i];
    const qs = reshape(permute(len === S ? q4 : narrow(q4, 0, offset, len), [1, 2, 0, 3]), [KV, G * len, Dh]);
    const o = cachedAttention(qs, seg.k, seg.v, seg.start + len, { scale, causal: { period: len, offset: seg.start } });
    parts.push(reshape(permute(reshape(o, [KV, G, len, Dh]), [2, 0, 1, 3]), [len, H, Dh]));
    offset += len;
  });
  return parts.length === 1 ? parts[0] : concat(parts, 0);
}

/** Checks token ids against a vocabulary size; returns them as an Int32Array. */
export function checkTokenIds(ids: ArrayLike<number>, vocab: number, what = 'token ids'): Int32Array {
  return checkIds(what, ids, vocab);
}
