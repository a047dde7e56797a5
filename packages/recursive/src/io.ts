// Files. A compact recursive checkpoint stores each shared tensor once (model.safetensors, our
// parameter paths) plus recursive.json (scheme, init, loops, depth map, source layers, configs).
// An unrolled export is a plain Hugging Face checkpoint of the original family: every depth
// position's weights under its own layer index, loadable by tools that know nothing of tying.

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, RrtError, type Backend, type F32Tensor, type Tensor } from '@rrt/tensor';
import { SafetensorsFile, writeSafetensorsFile } from '@rrt/tensor/node';
import { hfName, isTransposedInCheckpoint, parseHfConfig, toHfConfig, toHfConfigFloat32, type CausalLM } from '@rrt/layers';
import { RecursiveLM, writeValues, type RecursionInfo } from './model.js';
import type { NormInit } from './init.js';

/** File name of the recursive metadata. */
export const RECURSIVE_JSON = 'recursive.json';
const FORMAT = 'rrt-recursive';
const VERSION = 1;

/** recursive.json as written. */
export interface RecursiveJson {
  format: typeof FORMAT;
  version: number;
  scheme: string;
  init: string;
  norms: NormInit;
  loops: number;
  seed: number;
  depthMap: number[];
  sourceLayers: number[];
  untiedPaths: string[];
  /** Hugging Face config.json of the recursive model's depth (num_hidden_layers = L). */
  config: Record<string, unknown>;
  /** Hugging Face config.json of the model it was converted from. */
  sourceConfig: Record<string, unknown>;
}

function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  renameSync(tmp, path);
}

function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return out;
}

/** Each distinct tensor of a model with the first path it appears under. */
function uniqueNamed(model: CausalLM): [string, Tensor][] {
  const seen = new Set<Tensor>();
  const out: [string, Tensor][] = [];
  for (const [path, t] of model.namedParameters()) {
    if (seen.has(t)) continue;
    seen.add(t);
    out.push([path, t]);
  }
  return out;
}

/**
 * Writes a compact recursive checkpoint to dir: model.safetensors (each shared tensor once, under
 * our parameter paths, F32) and recursive.json. No config.json, so Hugging Face loaders do not
 * mistake it for a plain checkpoint; use exportUnrolled for that.
 */
export function saveRecursive(model: RecursiveLM, dir: string): void {
  mkdirSync(dir, { recursive: true });
  const r = model.recursion;
  const tensors = function* (): Generator<[string, F32Tensor]> {
    for (const [path, t] of uniqueNamed(model)) yield [path, { shape: t.shape.slice(), data: t.dataSync() }];
  };
  writeSafetensorsFile(join(dir, 'model.safetensors'), tensors(), { format: FORMAT });
  const json: RecursiveJson = {
    format: FORMAT,
    version: VERSION,
    scheme: r.scheme,
    init: r.init,
    norms: r.norms,
    loops: r.loops,
    seed: r.seed,
    depthMap: [...r.depthMap],
    sourceLayers: [...r.sourceLayers],
    untiedPaths: [...r.untiedPaths],
    config: toHfConfig(model.cfg),
    sourceConfig: toHfConfig(r.sourceConfig),
  };
  writeJsonAtomic(join(dir, RECURSIVE_JSON), json);
}

function readRecursiveJson(dir: string): RecursiveJson {
  const path = join(dir, RECURSIVE_JSON);
  if (!existsSync(path)) {
    const hint = existsSync(join(dir, 'config.json')) ? ' (it has a config.json: load it with loadPretrained from @rrt/layers)' : '';
    throw new RrtError(`${dir}: no ${RECURSIVE_JSON}; not a recursive checkpoint${hint}`);
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new FormatError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  if (json?.format !== FORMAT) throw new FormatError(`${path}: "format" must be "${FORMAT}", found ${JSON.stringify(json?.format)}`);
  if (json.version !== VERSION) throw new FormatError(`${path}: version ${JSON.stringify(json.version)} is not supported (expected ${VERSION})`);
  const intArray = (k: string) => {
    const v = json[k];
    if (!Array.isArray(v) || v.some((x) => !Number.isSafeInteger(x) || x < 0)) throw new FormatError(`${path}: "${k}" must be an array of non-negative integers`);
  };
  intArray('depthMap');
  intArray('sourceLayers');
  if (!Number.isSafeInteger(json.loops) || (json.loops as number) < 1) throw new FormatError(`${path}: "loops" must be a positive integer, found ${JSON.stringify(json.loops)}`);
  if (!Array.isArray(json.untiedPaths) || json.untiedPaths.some((p) => typeof p !== 'string')) throw new FormatError(`${path}: "untiedPaths" must be an array of strings`);
  for (const k of ['scheme', 'init', 'norms']) if (typeof json[k] !== 'string') throw new FormatError(`${path}: "${k}" must be a string`);
  for (const k of ['config', 'sourceConfig']) if (!json[k] || typeof json[k] !== 'object') throw new FormatError(`${path}: "${k}" must be a config.json object`);
  return json as unknown as RecursiveJson;
}

/** Reads what saveRecursive wrote: a RecursiveLM with the same blocks, ties and weights. */
export function loadRecursive(dir: string, opts: { backend?: Backend } = {}): RecursiveLM {
  const json = readRecursiveJson(dir);
  const source = join(dir, RECURSIVE_JSON);
  const cfg = parseHfConfig(json.config, `${source} "config"`);
  const info: RecursionInfo = {
    scheme: json.scheme,
    init: json.init,
    norms: json.norms,
    loops: json.loops,
    seed: typeof json.seed === 'number' ? json.seed : 0,
    depthMap: json.depthMap,
    sourceLayers: json.sourceLayers,
    untiedPaths: json.untiedPaths,
    sourceConfig: parseHfConfig(json.sourceConfig, `${source} "sourceConfig"`),
  };
  const model = new RecursiveLM(cfg, info, { backend: opts.backend, std: 0 });
  const file = SafetensorsFile.open(join(dir, 'model.safetensors'));
  try {
    const names = new Set(file.names());
    for (const [path, t] of uniqueNamed(model)) {
      if (!names.has(path)) throw new RrtError(`${join(dir, 'model.safetensors')}: tensor "${path}" is missing`);
      const v = file.read(path);
      if (v.shape.join() !== t.shape.join()) throw new RrtError(`${join(dir, 'model.safetensors')}: tensor "${path}" has shape [${v.shape}], expected [${t.shape}]`);
      writeValues(t, v.data);
    }
  } catch (err) {
    model.dispose();
    throw err;
  } finally {
    file.close();
  }
  return model;
}

/**
 * Writes model (any CausalLM, tied or not) as a plain Hugging Face checkpoint of its family:
 * config.json with num_hidden_layers = its depth L and model.safetensors where layer l holds the
 * weights of the block run at depth position l. Tensors are written one at a time.
 */
export function exportUnrolled(model: CausalLM, dir: string): void {
  mkdirSync(dir, { recursive: true });
  const family = model.cfg.family;
  const tensors = function* (): Generator<[string, F32Tensor]> {
    const emit = (path: string, t: Tensor): [string, F32Tensor] => {
      const data = t.dataSync();
      if (isTransposedInCheckpoint(family, path)) return [hfName(family, path), { shape: [t.shape[1], t.shape[0]], data: transpose2d(data, t.shape[0], t.shape[1]) }];
      return [hfName(family, path), { shape: t.shape.slice(), data }];
    };
    for (const [path, t] of model.namedParameters()) if (!path.startsWith('blocks.')) yield emit(path, t);
    for (let d = 0; d < model.depth; d++) {
      for (const [path, t] of model.blockAt(d).namedParameters()) yield emit(`blocks.${d}.${path}`, t);
    }
  };
  writeSafetensorsFile(join(dir, 'model.safetensors'), tensors(), { format: 'pt' });
  const cfg = model.cfg.numLayers === model.depth ? model.cfg : { ...model.cfg, numLayers: model.depth };
  writeJsonAtomic(join(dir, 'config.json'), toHfConfigFloat32(cfg));
}
