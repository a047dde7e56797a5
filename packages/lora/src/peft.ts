// Adapter files in Hugging Face PEFT's LoRA format, for the UNROLLED model: depth position l is
// layer l of the plain checkpoint exportUnrolled (@rrt/recursive) writes, so PEFT can load the
// pair with AutoModelForCausalLM + PeftModel.
//
// adapter_config.json: peft_type "LORA", r, lora_alpha, target_modules (the family's module
// names: q_proj, ..., query_key_value, c_attn), layers_to_transform, rank_pattern / alpha_pattern
// for modules whose rank or alpha differs, fan_in_fan_out for GPT-2's Conv1D layers.
// adapter_model.safetensors: base_model.model.<module>.lora_A.weight [r, in] and
// .lora_B.weight [out, r]. A fused qkv holds q, k and v as one LoRA of rank r_q + r_k + r_v
// whose B is block-structured; the split is kept in the file's metadata so it loads back as
// three pairs.

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, RrtError, ShapeError, type F32Tensor, fmtShape } from '@rrt/tensor';
import { SafetensorsFile, writeSafetensorsFile } from '@rrt/tensor/node';
import { type CausalLM, checkRegex, hfName } from '@rrt/layers';
import { LoraPair, type LoraSet } from './adapter.js';
import { DepthLora } from './depth-hook.js';
import type { LoraTarget } from './params.js';
import { RelaxedLora, attachOrDispose } from './relaxed.js';
import { type OutputPart, availableTargets, linearAt, partRows, targetSlots } from './targets.js';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
const SPLIT_KEY = 'rrt.fused_parts';

/** One LoRA as a file holds it: on one Linear of one layer. */
interface FileModule {
  depth: number;
  linearPath: string;
  /** The module's Hugging Face name, without "base_model.model.". */
  name: string;
  /** Name relative to the layer ("self_attn.q_proj"). */
  rel: string;
  rank: number;
  alpha: number;
  A: F32Tensor;
  B: F32Tensor;
  /** For a fused qkv: the parts in column order of B (q, k, v ranks). */
  split?: { target: LoraTarget; rank: number }[];
}

/** Block-relative Linear paths of this model's blocks, and each one's name in the checkpoint. */
function linearNames(model: CausalLM): { path: string; prefix: string; rel: string }[] {
  const family = model.cfg.family;
  const paths = model.blocks[0].attn.layout === 'separate' ? ['attn.q', 'attn.k', 'attn.v'] : ['attn.qkv'];
  paths.push('attn.o');
  if (model.cfg.gatedMlp) paths.push('mlp.gate');
  paths.push('mlp.up', 'mlp.down');
  return paths.map((path) => {
    const full = hfName(family, `blocks.0.${path}.weight`);
    const m = /^(.*)\.0\.(.+)\.weight$/.exec(full);
    if (!m) throw new RrtError(`PEFT names: unexpected checkpoint name "${full}" for ${family} ${path}`);
    return { path, prefix: m[1], rel: m[2] };
  });
}

/** The shortest suffix of each layer-relative name that no other projection of the family shares. */
function targetModuleNames(rels: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const rel of rels) {
    const parts = rel.split('.');
    for (let n = 1; n <= parts.length; n++) {
      const suffix = parts.slice(-n).join('.');
      if (rels.filter((o) => o === suffix || o.endsWith(`.${suffix}`)).length === 1) {
        out.set(rel, suffix);
        break;
      }
    }
  }
  return out;
}

function mode(values: readonly number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best = values[0], n = 0;
  for (const [v, c] of counts) if (c > n || (c === n && v > best)) [best, n] = [v, c];
  return best;
}

interface ExportPart {
  depth: number;
  linearPath: string;
  target: LoraTarget;
  part: OutputPart;
  pair: LoraPair;
}

/** Per-depth pairs of a handle; a LoraSet's shared adapters are repeated at each depth running their block. */
function exportParts(handle: RelaxedLora | LoraSet): ExportPart[] {
  if (handle instanceof RelaxedLora) {
    if (handle.modules.some((m) => m.merged)) throw new RrtError('saveAdapters: some adapters are merged into the weights; unmerge() first');
    return handle.modules.map((m) => ({ depth: m.depth, linearPath: m.linearPath, target: m.target, part: m.part, pair: m.pair }));
  }
  if (handle.adapters.some((a) => a.adapter.merged)) throw new RrtError('saveAdapters: some adapters are merged into the weights; unmerge() first');
  const out: ExportPart[] = [];
  handle.model.schedule.forEach((b, depth) => {
    for (const a of handle.adapters) {
      if (a.block === b) out.push({ depth, linearPath: a.linearPath, target: a.target, part: a.adapter.part, pair: a.adapter.pair });
    }
  });
  return out;
}

function groupModules(model: CausalLM, parts: ExportPart[]): FileModule[] {
  const names = new Map(linearNames(model).map((n) => [n.path, n]));
  const byKey = new Map<string, ExportPart[]>();
  for (const p of parts) {
    const key = `${p.depth}:${p.linearPath}`;
    byKey.set(key, [...(byKey.get(key) ?? []), p]);
  }
  const modules: FileModule[] = [];
  for (const group of byKey.values()) {
    const { depth, linearPath } = group[0];
    const n = names.get(linearPath)!;
    const lin = linearAt(model.blockAt(depth), linearPath);
    const inF = lin.inFeatures, outF = lin.outFeatures;
    // Fused parts in storage order q, k, v; all share the first part's scaling (B absorbs the rest).
    const order: LoraTarget[] = ['q', 'k', 'v'];
    group.sort((a, b) => order.indexOf(a.target) - order.indexOf(b.target));
    const scaling = group[0].pair.scaling;
    const rank = group.reduce((s, p) => s + p.pair.rank, 0);
    const A = new Float32Array(rank * inF);
    const B = new Float32Array(outF * rank);
    let col = 0;
    for (const p of group) {
      const a = p.pair.A.dataSync(), b = p.pair.B.dataSync();
      A.set(a, col * inF);
      const rows = partRows(p.part, outF);
      const ratio = p.pair.scaling / scaling;
      const r = p.pair.rank;
      for (let i = 0; i < rows.length; i++) for (let j = 0; j < r; j++) B[rows[i] * rank + col + j] = ratio === 1 ? b[i * r + j] : b[i * r + j] * ratio;
      col += r;
    }
    const fused = group[0].part.kind !== 'full';
    modules.push({
      depth, linearPath, name: `${n.prefix}.${depth}.${n.rel}`, rel: n.rel, rank, alpha: scaling * rank,
      A: { shape: [rank, inF], data: A }, B: { shape: [outF, rank], data: B },
      split: fused ? group.map((p) => ({ target: p.target, rank: p.pair.rank })) : undefined,
    });
  }
  return modules.sort((a, b) => a.depth - b.depth || a.linearPath.localeCompare(b.linearPath));
}

/** rank_pattern / alpha_pattern: per short name where all layers agree, else per layer. */
function patternFor(modules: FileModule[], value: (m: FileModule) => number, common: number, shortName: Map<string, string>, layersPattern: string): Record<string, number> {
  const out: Record<string, number> = {};
  const byRel = new Map<string, FileModule[]>();
  for (const m of modules) byRel.set(m.rel, [...(byRel.get(m.rel) ?? []), m]);
  for (const [rel, ms] of byRel) {
    const values = new Set(ms.map(value));
    if (values.size === 1) {
      const v = value(ms[0]);
      if (v !== common) out[shortName.get(rel)!] = v;
    } else {
      for (const m of ms) if (value(m) !== common) out[`${layersPattern}.${m.depth}.${rel}`] = value(m);
    }
  }
  return out;
}

export interface SaveAdaptersOptions {
  /** base_model_name_or_path (default: `dir`, where exportUnrolled is expected to put the base). */
  readonly baseModel?: string;
}

/**
 * Writes the adapters of a relaxed (or addLora) model as a PEFT LoRA adapter for the unrolled
 * model: dir/adapter_config.json and dir/adapter_model.safetensors (F32). Write the base next to
 * it with exportUnrolled(model, dir) (@rrt/recursive). Merged adapters must be unmerged first.
 */
export function saveAdapters(handle: RelaxedLora | LoraSet, dir: string, opts: SaveAdaptersOptions = {}): void {
  const model = handle.model;
  const parts = exportParts(handle);
  if (parts.length === 0) throw new RrtError('saveAdapters: the handle has no adapters (rank 0?); there is nothing to save');
  // PEFT's LoRA layout has no per-depth bias deltas: refuse rather than drop trained values.
  if (handle instanceof RelaxedLora && handle.biases.some((b) => !b.merged)) {
    throw new RrtError(
      `saveAdapters: this relaxation has ${handle.biases.length} per-depth bias deltas (relax(..., { biases: true })), which the PEFT adapter format cannot hold; ` +
        'save the merged unrolled model instead (savePretrained(lora.mergeUnrolled(), dir)), or relax without biases',
    );
  }
  const modules = groupModules(model, parts);
  const names = linearNames(model);
  const shortName = targetModuleNames(names.map((n) => n.rel));
  const layersPattern = names[0].prefix.split('.').pop()!;
  const r = mode(modules.map((m) => m.rank));
  const alpha = mode(modules.map((m) => m.alpha));
  const dropout = handle instanceof RelaxedLora ? handle.info.dropout : handle.options.dropout;
  const usedRels = [...new Set(modules.map((m) => m.rel))];
  const layers = [...new Set(modules.map((m) => m.depth))].sort((a, b) => a - b);
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: opts.baseModel ?? dir,
    r,
    lora_alpha: alpha,
    lora_dropout: dropout,
    target_modules: names.filter((n) => usedRels.includes(n.rel)).map((n) => shortName.get(n.rel)!),
    layers_to_transform: layers,
    layers_pattern: layersPattern,
    rank_pattern: patternFor(modules, (m) => m.rank, r, shortName, layersPattern),
    alpha_pattern: patternFor(modules, (m) => m.alpha, alpha, shortName, layersPattern),
    fan_in_fan_out: model.cfg.family === 'gpt2',
    bias: 'none',
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    init_lora_weights: true,
    inference_mode: true,
    revision: null,
  };
  const split: Record<string, string> = {};
  for (const m of modules) if (m.split) split[m.name] = m.split.map((s) => `${s.target}:${s.rank}`).join(',');
  const metadata: Record<string, string> = { format: 'pt' };
  if (Object.keys(split).length > 0) metadata[SPLIT_KEY] = JSON.stringify(split);
  if (handle instanceof RelaxedLora) metadata['rrt.init'] = handle.info.init;
  mkdirSync(dir, { recursive: true });
  function* tensors(): Generator<[string, F32Tensor]> {
    for (const m of modules) {
      yield [`base_model.model.${m.name}.lora_A.weight`, m.A];
      yield [`base_model.model.${m.name}.lora_B.weight`, m.B];
    }
  }
  writeSafetensorsFile(join(dir, ADAPTER_WEIGHTS), tensors(), metadata);
  const tmp = join(dir, `.${ADAPTER_CONFIG}.${process.pid}.tmp`);
  writeFileSync(tmp, JSON.stringify(config, null, 2) + '\n');
  renameSync(tmp, join(dir, ADAPTER_CONFIG));
}

// ---------------------------------------------------------------------------------------------
// Loading

export interface LoadAdaptersOptions {
  /** Seed of the dropout stream (default 0). */
  readonly seed?: number;
}

type Json = Record<string, unknown>;

function fail(path: string, msg: string): never {
  throw new FormatError(`${path}: ${msg}`);
}

function readConfig(path: string): Json {
  if (!existsSync(path)) throw new RrtError(`${path}: no adapter config (expected a PEFT adapter folder with ${ADAPTER_CONFIG})`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    fail(path, `not valid JSON (${(err as Error).message})`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) fail(path, 'expected a JSON object');
  return json as Json;
}

function posInt(path: string, key: string, v: unknown, dflt?: number): number {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) fail(path, `"${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function posNumber(path: string, key: string, v: unknown, dflt?: number): number {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(path, `"${key}" must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

function numberMap(path: string, key: string, v: unknown, check: (k: string, x: unknown) => number): Map<string, number> {
  if (v === undefined || v === null) return new Map();
  if (typeof v !== 'object' || Array.isArray(v)) fail(path, `"${key}" must be an object of module name -> number, got ${JSON.stringify(v)}`);
  return new Map(Object.entries(v as Json).map(([k, x]) => [k, check(`${key}.${k}`, x)]));
}

/** A rank_pattern / alpha_pattern key: PEFT matches it as a regex against a dotted suffix of the module name. */
interface Pattern {
  key: string;
  value: number;
  re: RegExp | null;
}

/**
 * Compiles the keys of a pattern map. A key that is a valid regex must pass checkRegex (no nested
 * or ambiguous repeats, so matching cannot hang); one that is not a regex matches literally only.
 */
function compilePatterns(path: string, what: string, patterns: Map<string, number>): Pattern[] {
  return [...patterns].map(([key, value]) => {
    try {
      new RegExp(key);
    } catch {
      return { key, value, re: null };
    }
    checkRegex(key, `${path}: "${what}" key ${JSON.stringify(key.length > 60 ? `${key.slice(0, 60)}...` : key)}`);
    // Unanchored at the start: "start or a dot, then the key, then the end" is PEFT's ^(.*\.)?key$.
    return { key, value, re: new RegExp(`(?:^|\\.)(?:${key})$`) };
  });
}

/** PEFT's pattern lookup: the first key that is the whole name or a dot-separated suffix of it. */
function lookupPattern(patterns: Pattern[], name: string): number | undefined {
  for (const { key, value, re } of patterns) {
    if (name === key || name.endsWith(`.${key}`)) return value;
    if (re && re.test(name)) return value;
  }
  return undefined;
}

/**
 * Reads a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) onto `model`:
 * layer l of the file becomes depth position l, attached to the block model.schedule[l] runs, so
 * the same files load onto the unrolled model and onto the recursive one. Throws FormatError for
 * a malformed or unsupported file and ShapeError for a tensor of the wrong shape, naming the key.
 */
export function loadAdapters(dir: string, model: CausalLM, opts: LoadAdaptersOptions = {}): RelaxedLora {
  const cfgPath = join(dir, ADAPTER_CONFIG);
  const cfg = readConfig(cfgPath);
  if (cfg.peft_type !== 'LORA') fail(cfgPath, `"peft_type" must be "LORA", got ${JSON.stringify(cfg.peft_type)}`);
  for (const key of ['use_dora'] as const) if (cfg[key] === true) fail(cfgPath, `"${key}": true is not supported (plain LoRA only)`);
  if (cfg.bias !== undefined && cfg.bias !== 'none') fail(cfgPath, `"bias" must be "none" (LoRA bias terms are not supported), got ${JSON.stringify(cfg.bias)}`);
  if (cfg.modules_to_save !== undefined && cfg.modules_to_save !== null && !(Array.isArray(cfg.modules_to_save) && cfg.modules_to_save.length === 0)) {
    fail(cfgPath, `"modules_to_save" is not supported, got ${JSON.stringify(cfg.modules_to_save)}`);
  }
  const r = posInt(cfgPath, 'r', cfg.r, 8);
  const loraAlpha = posNumber(cfgPath, 'lora_alpha', cfg.lora_alpha, 8);
  const rslora = cfg.use_rslora === true;
  const dropout = cfg.lora_dropout === undefined ? 0 : cfg.lora_dropout;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) fail(cfgPath, `"lora_dropout" must be in [0, 1), got ${JSON.stringify(dropout)}`);
  const rankPattern = compilePatterns(cfgPath, 'rank_pattern', numberMap(cfgPath, 'rank_pattern', cfg.rank_pattern, (k, x) => posInt(cfgPath, k, x)));
  const alphaPattern = compilePatterns(cfgPath, 'alpha_pattern', numberMap(cfgPath, 'alpha_pattern', cfg.alpha_pattern, (k, x) => posNumber(cfgPath, k, x)));
  const tm = cfg.target_modules;
  let targeted: (name: string) => boolean;
  if (typeof tm === 'string') {
    // A regex from a file must not be able to hang the loader: same checks as tokenizer regexes.
    checkRegex(tm, `${cfgPath}: "target_modules"`);
    let re: RegExp;
    try {
      re = new RegExp(`^(?:${tm})$`);
    } catch (err) {
      fail(cfgPath, `"target_modules" is not a valid regular expression (${(err as Error).message})`);
    }
    targeted = (name) => re.test(name);
  } else if (Array.isArray(tm) && tm.length > 0 && tm.every((t) => typeof t === 'string')) {
    targeted = (name) => (tm as string[]).some((t) => name === t || name.endsWith(`.${t}`));
  } else {
    fail(cfgPath, `"target_modules" must be a non-empty list of module names or a regular expression, got ${JSON.stringify(tm)}`);
  }
  const ltt = cfg.layers_to_transform;
  let layerSet: Set<number> | null = null;
  if (ltt !== undefined && ltt !== null) {
    const list = typeof ltt === 'number' ? [ltt] : ltt;
    if (!Array.isArray(list) || list.some((l) => typeof l !== 'number' || !Number.isSafeInteger(l) || l < 0)) {
      fail(cfgPath, `"layers_to_transform" must be a layer index or a list of them, got ${JSON.stringify(ltt)}`);
    }
    const bad = (list as number[]).filter((l) => l >= model.depth);
    if (bad.length > 0) fail(cfgPath, `"layers_to_transform" names layer(s) ${bad.join(', ')}, but the model has ${model.depth} depth positions`);
    layerSet = new Set(list as number[]);
  }

  const weightsPath = join(dir, ADAPTER_WEIGHTS);
  if (!existsSync(weightsPath)) {
    const bin = existsSync(join(dir, 'adapter_model.bin'));
    throw new RrtError(`${dir}: no ${ADAPTER_WEIGHTS}${bin ? ' (adapter_model.bin is a PyTorch pickle; convert it to safetensors)' : ''}`);
  }
  // Every projection of every depth position, by its module name.
  const names = linearNames(model);
  const byName = new Map<string, { depth: number; path: string }>();
  for (let d = 0; d < model.depth; d++) for (const n of names) byName.set(`${n.prefix}.${d}.${n.rel}`, { depth: d, path: n.path });

  const file = SafetensorsFile.open(weightsPath);
  const found = new Map<string, { A?: F32Tensor; B?: F32Tensor; keyA?: string; keyB?: string }>();
  let split: Record<string, string> = {};
  try {
    const meta = file.header.metadata[SPLIT_KEY];
    if (meta !== undefined) {
      try {
        split = JSON.parse(meta) as Record<string, string>;
      } catch {
        fail(weightsPath, `metadata "${SPLIT_KEY}" is not valid JSON`);
      }
      if (!split || typeof split !== 'object' || Array.isArray(split) || Object.values(split).some((v) => typeof v !== 'string')) {
        fail(weightsPath, `metadata "${SPLIT_KEY}" must map module names to "q:r,k:r,v:r" strings`);
      }
    }
    for (const key of file.names()) {
      const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(key);
      if (!m) fail(weightsPath, `tensor "${key}" is not a LoRA weight (expected base_model.model.<module>.lora_A.weight / lora_B.weight)`);
      const where = byName.get(m[1]);
      if (!where) {
        fail(weightsPath, `tensor "${key}": "${m[1]}" is not a projection of this ${model.cfg.family} model with ${model.depth} depth positions`);
      }
      if (!targeted(m[1]) || (layerSet && !layerSet.has(where.depth))) {
        fail(weightsPath, `tensor "${key}" is not selected by target_modules / layers_to_transform of ${ADAPTER_CONFIG}`);
      }
      const t = file.read(key);
      const entry = found.get(m[1]) ?? {};
      if (m[2] === 'A') Object.assign(entry, { A: t, keyA: key });
      else Object.assign(entry, { B: t, keyB: key });
      found.set(m[1], entry);
    }
  } finally {
    file.close();
  }
  if (found.size === 0) fail(weightsPath, 'holds no LoRA weights');
  // Every module PEFT would create from the config must be in the file.
  for (const [name, where] of byName) {
    if (targeted(name) && (!layerSet || layerSet.has(where.depth)) && !found.has(name)) {
      fail(weightsPath, `no LoRA weights for "${name}", which target_modules / layers_to_transform select`);
    }
  }

  const slots = targetSlots(model);
  const backend = model.embed.weight.backend;
  const modules: DepthLora[] = [];
  for (const [name, t] of found) {
    const where = byName.get(name)!;
    if (!t.A || !t.B) fail(weightsPath, `"${name}" has lora_${t.A ? 'A' : 'B'} but no lora_${t.A ? 'B' : 'A'}`);
    const lin = linearAt(model.blockAt(where.depth), where.path);
    const [A, B] = [t.A, t.B];
    if (A.shape.length !== 2 || A.shape[1] !== lin.inFeatures || A.shape[0] < 1) {
      throw new ShapeError(`${weightsPath}: tensor "${t.keyA}" has shape ${fmtShape(A.shape)}, expected [r,${lin.inFeatures}]`);
    }
    const rank = A.shape[0];
    if (B.shape.length !== 2 || B.shape[0] !== lin.outFeatures || B.shape[1] !== rank) {
      throw new ShapeError(`${weightsPath}: tensor "${t.keyB}" has shape ${fmtShape(B.shape)}, expected ${fmtShape([lin.outFeatures, rank])} (lora_A has rank ${rank})`);
    }
    const expectedRank = lookupPattern(rankPattern, name) ?? r;
    if (rank !== expectedRank) fail(weightsPath, `tensor "${t.keyA}" has rank ${rank}, but ${ADAPTER_CONFIG} gives "${name}" rank ${expectedRank}`);
    const alpha = lookupPattern(alphaPattern, name) ?? loraAlpha;
    const scaling = rslora ? alpha / Math.sqrt(rank) : alpha / rank;
    const block = model.schedule[where.depth];
    const own = slots.filter((s) => s.linearPath === where.path);
    if (own.length === 1 && own[0].part.kind === 'full') {
      const s = own[0];
      modules.push(new DepthLora(where.depth, block, s.target, s.linearPath, s.part, new LoraPair(lin.inFeatures, lin.outFeatures, rank, scaling, { backend, A: A.data, B: B.data }), scaling * rank));
      continue;
    }
    for (const part of splitFused(name, A, B, rank, own.map((s) => ({ target: s.target, part: s.part })), split[name], lin.outFeatures, weightsPath)) {
      const pair = new LoraPair(lin.inFeatures, part.rows, part.rank, scaling, { backend, A: part.A, B: part.B });
      modules.push(new DepthLora(where.depth, block, part.target, where.path, part.part, pair, scaling * part.rank));
    }
  }
  modules.sort((a, b) => a.depth - b.depth || availableTargets(model).indexOf(a.target) - availableTargets(model).indexOf(b.target));
  const targets = availableTargets(model).filter((t) => modules.some((m) => m.target === t));
  return attachOrDispose(model, modules, { init: 'loaded', rank: r, alpha: loraAlpha, dropout, targets }, opts.seed ?? 0);
}

/**
 * Splits a fused qkv LoRA (A [R, in], B [out, R]) into q, k and v pairs. With the split this
 * package records (ranks per part, B zero outside each part's block) each part gets its own
 * columns; otherwise (e.g. an adapter trained by PEFT itself) every part keeps all R columns:
 * (A, B[part rows, :]), which is exact too.
 */
function splitFused(
  name: string, A: F32Tensor, B: F32Tensor, R: number, parts: { target: LoraTarget; part: OutputPart }[], recorded: string | undefined, outF: number, path: string,
): { target: LoraTarget; part: OutputPart; rank: number; rows: number; A: Float32Array; B: Float32Array }[] {
  const inF = A.shape[1];
  const rowsOf = new Map(parts.map((p) => [p.target, partRows(p.part, outF)]));
  const full = parts.map((p) => {
    const rows = rowsOf.get(p.target)!;
    const b = new Float32Array(rows.length * R);
    for (let i = 0; i < rows.length; i++) b.set(B.data.subarray(rows[i] * R, (rows[i] + 1) * R), i * R);
    return { target: p.target, part: p.part, rank: R, rows: rows.length, A: A.data, B: b };
  });
  if (recorded === undefined) return full;
  const spec = recorded.split(',').map((s) => {
    const m = /^([qkv]):(\d+)$/.exec(s);
    if (!m) fail(path, `metadata "${SPLIT_KEY}" for "${name}" must look like "q:8,k:8,v:8", got ${JSON.stringify(recorded)}`);
    return { target: m[1] as LoraTarget, rank: Number(m[2]) };
  });
  if (spec.reduce((s, p) => s + p.rank, 0) !== R || spec.some((p) => !rowsOf.has(p.target) || p.rank < 1) || new Set(spec.map((p) => p.target)).size !== spec.length) {
    fail(path, `metadata "${SPLIT_KEY}" for "${name}" (${recorded}) does not split its rank ${R} among q, k, v`);
  }
  const out: typeof full = [];
  let col = 0;
  const inBlock = new Uint8Array(outF * R);
  for (const s of spec) {
    const rows = rowsOf.get(s.target)!;
    const part = parts.find((p) => p.target === s.target)!.part;
    const a = A.data.slice(col * inF, (col + s.rank) * inF);
    const b = new Float32Array(rows.length * s.rank);
    for (let i = 0; i < rows.length; i++) {
      for (let j = 0; j < s.rank; j++) {
        b[i * s.rank + j] = B.data[rows[i] * R + col + j];
        inBlock[rows[i] * R + col + j] = 1;
      }
    }
    out.push({ target: s.target, part, rank: s.rank, rows: rows.length, A: a, B: b });
    col += s.rank;
  }
  // Weights outside the recorded blocks (edited or retrained by other tools): keep them all.
  for (let i = 0; i < inBlock.length; i++) if (!inBlock[i] && B.data[i] !== 0) return full;
  return out;
}
