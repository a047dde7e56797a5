// Relaxed Recursive Transformer (PAPER.md section 2): relax() gives each depth position l its
// own LoRA on every target projection of the shared block s(l) it runs,
//
//     h = W'_{s(l)} x + B_l A_l x,
//
// initialised from the conversion residuals W_original(l) - W_shared(s(l)) by truncated SVD, or
// zero. The pairs run through one DepthHook per shared Linear (depth-hook.ts); the handle that
// owns them is a RelaxedLora (relaxed.ts).

import { Generator, RrtError, ShapeError, fmtShape, fromValues, noGrad, tidy } from '@rrt/tensor';
import type { CausalLM, DecoderBlock, Linear } from '@rrt/layers';
import { LoraPair, checkDropout } from './adapter.js';
import { DepthBias, DepthLora, hasDepthHook } from './depth-hook.js';
import type { LoraTarget } from './params.js';
import { type RelaxedLora, attachOrDispose } from './relaxed.js';
import { type SvdOptions, truncatedSvd } from './svd.js';
import { type TargetSlot, linearAt, partRows, targetSlots } from './targets.js';

/** A float32 matrix as the recursive package hands residuals out: shape [out, in], row-major. */
export interface ResidualMatrix {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/**
 * W_original(depth) - W_shared(schedule[depth]) for a block-relative weight path such as
 * 'attn.q.weight', 'attn.qkv.weight' or 'mlp.down.weight': [out, in].
 */
export type ResidualFn = (depth: number, path: string) => ResidualMatrix;

export interface RelaxOptions {
  /** LoRA rank r of every target unless rankPattern overrides it; capped at min(in, out) per matrix. 0: no LoRA. */
  readonly rank: number;
  /** 'svd': B A = best rank-r approximation of the residual; 'zero': B = 0 (A uniform random). */
  readonly init: 'svd' | 'zero';
  /** Projections to relax (default: q, k, v, o, gate, up, down, those the block has). */
  readonly targets?: readonly LoraTarget[];
  /** Separate ranks for attention (q, k, v, o) and MLP (gate, up, down) projections. */
  readonly rankPattern?: { readonly attention?: number; readonly mlp?: number };
  /** Residuals of the conversion, needed by 'svd' (toRecursive's `residuals`, or residualsFrom()). */
  readonly residuals?: ResidualFn;
  /**
   * scaling = alpha / r per module (default alpha = r, scaling 1). SVD init divides B by the
   * scaling, so the effective delta at init is exactly the truncated SVD whatever alpha is.
   */
  readonly alpha?: number;
  /** Dropout on each adapter's input while training (default 0). */
  readonly dropout?: number;
  /** Seed of zero-init A, of the SVD's random test matrices and of dropout (default 0). */
  readonly seed?: number;
  /** Truncated SVD settings (method, oversample, powerIterations, backend). */
  readonly svd?: Omit<SvdOptions, 'seed'>;
  /**
   * SVD init of a projection that reads a block norm (q, k, v read ln1; gate, up read ln2):
   * truncate R'_l = W_l diag(g_l / g_shared) - W_shared instead of W_l - W_shared (default true).
   * The shared block also shares its norm gains g (1 + w for Gemma), which no LoRA on the
   * projections can untie; folding depth l's gain ratio into its residual makes the full-rank
   * init reproduce the original depth exactly. Columns where g_shared is 0 keep ratio 1 (their
   * input is constant, so no weight there can restore the original's). false: the paper's
   * plain residual.
   */
  readonly foldNorms?: boolean;
  /**
   * Relax biases too (default false; the paper relaxes projections only): each depth position
   * gets its own bias vector c_l [rows of the target] on every target projection that has a bias
   * or reads a LayerNorm (gpt_neox, gpt2; none for llama and gemma). SVD init sets c_l so that
   * the input-independent part of the output is the original depth's at any rank
   * (c_l = b_l - b_shared + W_l beta_l - (W_shared + B_l A_l) beta_shared); zero init sets
   * c_l = 0. Counted in paramCount().depthBiases. PEFT adapter files have no place for them.
   */
  readonly biases?: boolean;
}

/**
 * Relaxes a recursive model: one LoRA per depth position on each target projection of the
 * shared block used there (PAPER.md section 2). A fused qkv (gpt_neox, gpt2) gets rank r for
 * each of q, k and v. Ranks are capped at min(in, out) per matrix; rank 0 adds nothing.
 *
 * SVD init: R_l = residuals(l, path) [out, in] (for q, k, v, gate and up with depth l's norm
 * gain ratio folded in, see foldNorms); U S V^T = truncatedSvd(R_l, r); B_l = U diag(S) /
 * scaling [out, r], A_l = V^T [r, in], so at init the model computes W'_{s(l)} x + U_r S_r V_r^T x:
 * at full rank exactly the original model (for families with biases, with biases: true).
 */
export function relax(model: CausalLM, opts: RelaxOptions): RelaxedLora {
  const rank = checkRankValue('rank', opts.rank);
  const attnRank = opts.rankPattern?.attention === undefined ? rank : checkRankValue('rankPattern.attention', opts.rankPattern.attention);
  const mlpRank = opts.rankPattern?.mlp === undefined ? rank : checkRankValue('rankPattern.mlp', opts.rankPattern.mlp);
  if (opts.init !== 'svd' && opts.init !== 'zero') throw new RrtError(`relax: init must be 'svd' or 'zero', got ${JSON.stringify(opts.init)}`);
  if (opts.alpha !== undefined && !(Number.isFinite(opts.alpha) && opts.alpha > 0)) throw new RrtError(`relax: alpha must be a positive number, got ${opts.alpha}`);
  const dropout = checkDropout(opts.dropout ?? 0);
  if (opts.init === 'svd' && typeof opts.residuals !== 'function') {
    throw new RrtError("relax: init 'svd' needs residuals(depth, path) = W_original - W_shared; pass toRecursive(...).residuals, or residualsFrom(original, model)");
  }
  const slots = targetSlots(model, opts.targets);
  for (const [b, block] of model.blocks.entries()) {
    for (const slot of slots) {
      if (hasDepthHook(linearAt(block, slot.linearPath))) {
        throw new RrtError(`relax: blocks.${b}.${slot.linearPath} already has depth-wise LoRA; remove() those adapters first`);
      }
    }
  }
  const seed = opts.seed ?? 0;
  const foldNorms = opts.foldNorms ?? true;
  const withBiases = opts.biases ?? false;
  const rng = new Generator(seed);
  const backend = model.embed.weight.backend;
  const modules: DepthLora[] = [];
  const biases: DepthBias[] = [];
  try {
    for (let depth = 0; depth < model.depth; depth++) {
      const b = model.schedule[depth];
      const block = model.blocks[b];
      const original = opts.init === 'svd' ? new OriginalDepth(model, depth, opts.residuals!) : null;
      for (const slot of slots) {
        const requested = slot.group === 'attention' ? attnRank : mlpRank;
        const r = Math.min(requested, slot.dIn, slot.dOut);
        const lin = linearAt(block, slot.linearPath);
        let pair: LoraPair | null = null;
        if (r > 0) {
          const alpha = opts.alpha ?? r;
          const scaling = alpha / r;
          if (opts.init === 'zero') {
            pair = new LoraPair(slot.dIn, slot.dOut, r, scaling, { backend, rng });
          } else {
            const res = original!.residual(slot, lin, foldNorms);
            const svd = truncatedSvd({ shape: [slot.dOut, slot.dIn], data: res }, r, { ...opts.svd, seed: seed + depth });
            pair = new LoraPair(slot.dIn, slot.dOut, r, scaling, { backend, A: svd.Vt, B: scaledU(svd.U, svd.S, slot.dOut, r, scaling) });
          }
          modules.push(new DepthLora(depth, b, slot.target, slot.linearPath, slot.part, pair, alpha));
        }
        if (withBiases && needsBias(block, slot)) {
          const c = original ? original.biasDelta(slot, lin, pair) : new Float32Array(slot.dOut);
          const bias = fromValues(c, [slot.dOut], backend).requireGrad().keep();
          bias.name = 'lora_bias';
          biases.push(new DepthBias(depth, b, slot.target, slot.linearPath, slot.part, bias));
        }
      }
    }
  } catch (err) {
    for (const m of modules) m.pair.dispose();
    for (const x of biases) x.bias.dispose();
    throw err;
  }
  return attachOrDispose(model, modules, {
    init: opts.init, rank, alpha: opts.alpha, dropout, targets: slots.map((s) => s.target), rankPattern: opts.rankPattern,
    ...(opts.init === 'svd' ? { foldNorms } : {}), biases: withBiases,
  }, seed, biases);
}

function checkRankValue(what: string, r: unknown): number {
  if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 0) throw new RrtError(`relax: ${what} must be a non-negative integer, got ${JSON.stringify(r) ?? String(r)}`);
  return r;
}

/** U diag(S) / scaling: [rows, k]. */
function scaledU(U: Float32Array, S: Float64Array, rows: number, k: number, scaling: number): Float32Array {
  const out = new Float32Array(rows * k);
  for (let i = 0; i < rows; i++) for (let j = 0; j < k; j++) out[i * k + j] = (U[i * k + j] * S[j]) / scaling;
  return out;
}

/** The block norm whose output a target's Linear reads: ln1 for q, k, v; ln2 for gate, up; none for o, down. */
function normOf(target: LoraTarget): 'ln1' | 'ln2' | null {
  if (target === 'q' || target === 'k' || target === 'v') return 'ln1';
  if (target === 'gate' || target === 'up') return 'ln2';
  return null;
}

/** Whether a per-depth bias can matter for a slot: its Linear has a bias, or it reads a LayerNorm (bias beta). */
function needsBias(block: DecoderBlock, slot: TargetSlot): boolean {
  const norm = normOf(slot.target);
  return linearAt(block, slot.linearPath).bias !== null || (norm !== null && block[norm].bias !== null);
}

/**
 * What the original (untied) model runs at one depth position, reconstructed from the shared
 * block and the conversion residuals (W_original = W_shared + residual), for the SVD init.
 */
class OriginalDepth {
  private readonly block: DecoderBlock;
  private readonly cache = new Map<string, ResidualMatrix>();
  private readonly ratios = new Map<string, Float64Array>();

  constructor(private readonly model: CausalLM, private readonly depth: number, private readonly residuals: ResidualFn) {
    this.block = model.blocks[model.schedule[depth]];
  }

  /** residuals(depth, path), checked against the shared parameter's shape. */
  private res(path: string, shape: readonly number[]): ResidualMatrix {
    let r = this.cache.get(path);
    if (!r) {
      try {
        r = this.residuals(this.depth, path);
      } catch (err) {
        if (/\.weight$/.test(path) && /^(attn|mlp)\./.test(path)) throw err;
        // Norm and bias residuals are only needed by foldNorms and biases.
        throw new RrtError(`relax: residuals(${this.depth}, '${path}') failed (${(err as Error).message}); norm folding and bias deltas need the residuals of norm weights and biases too: pass toRecursive(...).residuals or residualsFrom(original, model), or set foldNorms: false (and biases: false)`);
      }
      const where = `residuals(${this.depth}, '${path}')`;
      if (!r || !(r.data instanceof Float32Array) || !Array.isArray(r.shape)) throw new RrtError(`relax: ${where} must return { shape, data: Float32Array }`);
      const size = shape.reduce((a, b) => a * b, 1);
      if (r.shape.length !== shape.length || r.shape.some((v, i) => v !== shape[i]) || r.data.length !== size) {
        throw new ShapeError(`relax: ${where} has shape ${fmtShape([...r.shape])} (${r.data.length} values), expected ${fmtShape([...shape])}`);
      }
      this.cache.set(path, r);
    }
    return r;
  }

  /** Per-column ratio g_original / g_shared of a norm's effective gain (1 + w for Gemma); 1 where g_shared is 0. */
  ratio(norm: 'ln1' | 'ln2'): Float64Array {
    let rho = this.ratios.get(norm);
    if (!rho) {
      const w = this.block[norm].weight;
      const shared = w.dataSync(), res = this.res(`${norm}.weight`, w.shape).data;
      const one = this.block[norm].addOne ? 1 : 0;
      rho = new Float64Array(shared.length);
      for (let j = 0; j < shared.length; j++) {
        const gs = one + shared[j], go = one + shared[j] + res[j];
        rho[j] = gs !== 0 ? go / gs : 1;
      }
      this.ratios.set(norm, rho);
    }
    return rho;
  }

  /** The slot's rows of the SVD target: W_l - W_s, or W_l diag(rho) - W_s when folding a norm: [dOut, dIn]. */
  residual(slot: TargetSlot, lin: Linear, fold: boolean): Float32Array {
    const res = this.res(`${slot.linearPath}.weight`, lin.weight.shape).data;
    const rows = slot.part.kind === 'full' ? null : partRows(slot.part, lin.outFeatures);
    const data = rows ? takeRows(res, lin.inFeatures, rows) : Float32Array.from(res);
    const norm = normOf(slot.target);
    if (!fold || !norm) return data;
    const rho = this.ratio(norm);
    if (rho.every((v) => v === 1)) return data;
    const ws = lin.weight.dataSync();
    const shared = rows ? takeRows(ws, lin.inFeatures, rows) : ws;
    const n = lin.inFeatures;
    for (let i = 0; i < slot.dOut; i++) {
      for (let j = 0; j < n; j++) {
        const k = i * n + j;
        // (W_s + R) rho - W_s, in float64.
        data[k] = (shared[k] + data[k]) * rho[j] - shared[k];
      }
    }
    return data;
  }

  /**
   * The slot's bias delta c [dOut] making the input-independent part of the output the
   * original's: c = b_l - b_s + W_l beta_l - (W_s + delta) beta_s, where beta is the LayerNorm
   * bias read (none: 0) and delta = the pair's B A (scaled).
   */
  biasDelta(slot: TargetSlot, lin: Linear, pair: LoraPair | null): Float32Array {
    const rows = partRows(slot.part, lin.outFeatures);
    const c = new Float64Array(slot.dOut);
    if (lin.bias) {
      const db = this.res(`${slot.linearPath}.bias`, lin.bias.shape).data;
      for (let i = 0; i < rows.length; i++) c[i] = db[rows[i]];
    }
    const norm = normOf(slot.target);
    const beta = norm ? this.block[norm].bias : null;
    if (norm && beta) {
      const bs = beta.dataSync(), dbeta = this.res(`${norm}.bias`, beta.shape).data;
      const ws = lin.weight.dataSync(), dw = this.res(`${slot.linearPath}.weight`, lin.weight.shape).data;
      const delta = pair ? noGrad(() => tidy(() => pair.deltaWeight().dataSync())) : null;
      const n = lin.inFeatures;
      for (let i = 0; i < rows.length; i++) {
        const o = rows[i] * n;
        let acc = 0;
        for (let j = 0; j < n; j++) {
          const wl = ws[o + j] + dw[o + j];
          acc += wl * (bs[j] + dbeta[j]) - (ws[o + j] + (delta ? delta[i * n + j] : 0)) * bs[j];
        }
        c[i] += acc;
      }
    }
    return Float32Array.from(c);
  }
}

/** Rows `rows` of a [out, in] matrix -> [rows.length, in]. */
function takeRows(data: Float32Array, inFeatures: number, rows: Int32Array): Float32Array {
  const out = new Float32Array(rows.length * inFeatures);
  for (let i = 0; i < rows.length; i++) out.set(data.subarray(rows[i] * inFeatures, (rows[i] + 1) * inFeatures), i * inFeatures);
  return out;
}

/**
 * Residuals of a conversion computed from the two models: the original (untied, one block per
 * depth position) and the recursive one. residuals(l, path) = original blocks.l.path -
 * recursive blocks.schedule[l].path, each [out, in].
 */
export function residualsFrom(original: CausalLM, recursive: CausalLM): ResidualFn {
  if (original.depth !== recursive.depth) {
    throw new RrtError(`residualsFrom: the original runs ${original.depth} depth positions, the recursive model ${recursive.depth}`);
  }
  const orig = original.namedParameters(), rec = recursive.namedParameters();
  return (depth, path) => {
    const a = orig.get(`blocks.${original.schedule[depth]}.${path}`);
    const b = rec.get(`blocks.${recursive.schedule[depth]}.${path}`);
    if (!a || !b) throw new RrtError(`residualsFrom: no parameter "${path}" at depth ${depth}`);
    if (a.shape.join() !== b.shape.join()) throw new ShapeError(`residualsFrom: "${path}" at depth ${depth} is ${fmtShape(a.shape)} in the original, ${fmtShape(b.shape)} in the recursive model`);
    const x = a.dataSync(), y = b.dataSync();
    const data = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) data[i] = x[i] - y[i];
    return { shape: a.shape.slice(), data };
  };
}
