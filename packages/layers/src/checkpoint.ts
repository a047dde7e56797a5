// Hugging Face checkpoint folders: config.json + model.safetensors (or shards with an index).
// Our modules use one naming scheme for every family; this file maps it to each family's
// Hugging Face names and layouts (GPT-2's Conv1D stores weights [in, out]).

import { readFileSync, existsSync, mkdirSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { FormatError, RrtError, type Backend, type F32Tensor, getBackend } from '@rrt/tensor';
import { SafetensorsFile, writeSafetensorsFile } from '@rrt/tensor/node';
import { countParams, parseHfConfig, toHfConfigFloat32, type ModelConfig } from './config.js';
import { CausalLM } from './lm.js';
import { writeFileAtomic } from './data.js';
import { hfName, isTransposedInCheckpoint, hfNamedParameters, loadWeights, transpose2d } from './checkpoint-core.js';

// The name mapping and weight loading need no file system: they live in checkpoint-core.ts,
// which the browser entry exports too.
export { hfName, isTransposedInCheckpoint, hfNamedParameters, loadWeights, type TensorSource } from './checkpoint-core.js';

/**
 * Reads tensors by name across the files of a checkpoint folder, one at a time.
 *
 * A sharded folder's index (model.safetensors.index.json) only names files: each entry must be a
 * plain file name, and the file it names must resolve (symlinks followed) to a file inside the
 * folder. The one exception is the Hugging Face hub cache layout, where a snapshot folder
 * `<repo>/snapshots/<revision>/` links its files to `<repo>/blobs/`: links into that `blobs`
 * folder are accepted. Anything else is a FormatError before the file is opened.
 */
export class CheckpointReader {
  private readonly files = new Map<string, SafetensorsFile>();
  private readonly where = new Map<string, string>();
  private readonly indexPath: string | null = null;

  constructor(readonly dir: string) {
    const single = join(dir, 'model.safetensors');
    const index = join(dir, 'model.safetensors.index.json');
    if (existsSync(index)) {
      const source = index;
      this.indexPath = index;
      let json: unknown;
      try {
        json = JSON.parse(readFileSync(index, 'utf8'));
      } catch (err) {
        throw new FormatError(`${source}: not valid JSON (${(err as Error).message})`);
      }
      const map = (json as { weight_map?: unknown })?.weight_map;
      if (!map || typeof map !== 'object' || Array.isArray(map)) throw new FormatError(`${source}: missing "weight_map" object`);
      const root = resolve(dir);
      for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
        // The index must not point outside the folder (no "../", no absolute paths, no separators).
        if (
          typeof file !== 'string' || file.length === 0 || file !== basename(file) || file.includes('/') || file.includes('\\') ||
          file.includes('\0') || file === '..' || file === '.' || !resolve(root, file).startsWith(root + sep)
        ) {
          throw new FormatError(`${source}: weight_map entry for "${name}" must be a file name inside the folder, got ${JSON.stringify(file)}`);
        }
        this.where.set(name, file);
      }
      for (const file of new Set(this.where.values())) this.checkInside(file);
    } else if (existsSync(single)) {
      const f = SafetensorsFile.open(single);
      this.files.set('model.safetensors', f);
      for (const name of f.names()) this.where.set(name, 'model.safetensors');
    } else {
      throw new RrtError(`${dir}: no model.safetensors or model.safetensors.index.json`);
    }
  }

  /** Throws FormatError when `file` (named by the index) resolves to a path outside the folder. */
  private checkInside(file: string): void {
    const path = join(this.dir, file);
    let real: string;
    try {
      real = realpathSync(path);
    } catch {
      return; // missing: reported with its path when a tensor in it is read
    }
    const realRoot = realpathSync(this.dir);
    const allowed = [realRoot];
    if (basename(dirname(realRoot)) === 'snapshots') allowed.push(join(dirname(dirname(realRoot)), 'blobs'));
    if (!allowed.some((a) => real.startsWith(a + sep))) {
      throw new FormatError(
        `${this.indexPath}: weight_map names "${file}", which resolves to ${real}, outside the model folder ${realRoot}; ` +
          'a checkpoint may only read files inside its own folder (replace the link by the file itself)',
      );
    }
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  private open(file: string): SafetensorsFile {
    let f = this.files.get(file);
    if (!f) {
      // Checked again at open time, in case the folder changed since the index was read.
      if (this.indexPath) this.checkInside(file);
      f = SafetensorsFile.open(join(this.dir, file));
      this.files.set(file, f);
    }
    return f;
  }

  /** Total number of elements the tensors of every file declare (reads headers only, no tensor data). */
  declaredElements(): number {
    let total = 0;
    for (const file of new Set(this.where.values())) {
      for (const e of this.open(file).header.tensors.values()) total += e.shape.reduce((a, b) => a * b, 1);
    }
    return total;
  }

  read(name: string): F32Tensor & { file: string } {
    const file = this.where.get(name);
    if (!file) throw new RrtError(`${this.dir}: tensor "${name}" is missing from the checkpoint`);
    return { ...this.open(file).read(name), file: join(this.dir, file) };
  }

  close(): void {
    for (const f of this.files.values()) f.close();
    this.files.clear();
  }
}

/**
 * Refuses, before anything is allocated, a config.json that asks for far more memory than its
 * checkpoint justifies: more than twice (plus 2^20) the parameters the checkpoint's tensors hold,
 * or RoPE tables (numLayers x maxPositions x rotaryDim x 2 floats) larger than 8 x the
 * checkpoint's values (at least 2^26). Sizes in a file are claims; the bytes on disk are what
 * bound them. Smaller mismatches are left to loadWeights, whose errors name the tensor.
 */
export function checkConfigAgainstCheckpoint(cfg: ModelConfig, declaredElements: number, source: string): void {
  const need = countParams(cfg).total;
  if (need > 2 * declaredElements + 2 ** 20) {
    throw new FormatError(
      `${source}: config.json describes a model of ${need} parameters but the checkpoint's tensors hold ${declaredElements} values; ` +
        'the config does not match the weights (check vocab_size, hidden_size, num_hidden_layers and intermediate_size)',
    );
  }
  if (cfg.positions === 'rope') {
    const rotaryDim = Math.floor(cfg.headDim * cfg.rotaryPct);
    const table = cfg.numLayers * cfg.maxPositions * rotaryDim * 2;
    const cap = Math.max(2 ** 26, 8 * declaredElements);
    if (table > cap) {
      throw new FormatError(
        `${source}: max_position_embeddings ${cfg.maxPositions} needs RoPE tables of ${table} floats (${cfg.numLayers} layers x ${cfg.maxPositions} positions x ${rotaryDim} dims x 2), ` +
          `over the ${cap} this checkpoint allows; lower max_position_embeddings in config.json`,
      );
    }
  }
}

export interface LoadOptions {
  backend?: Backend;
}

function readConfig(dir: string): ModelConfig {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new RrtError(`${dir}: no config.json`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new FormatError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  return parseHfConfig(json, path);
}

/** Loads a Hugging Face model folder (llama, gemma, gpt_neox, gpt2). */
export function loadPretrained(dir: string, opts: LoadOptions = {}): CausalLM {
  const cfg = readConfig(dir);
  const reader = new CheckpointReader(dir);
  let model: CausalLM | undefined;
  try {
    checkConfigAgainstCheckpoint(cfg, reader.declaredElements(), dir);
    model = new CausalLM(cfg, { backend: opts.backend ?? getBackend(), std: 0 });
    loadWeights(model, reader);
  } catch (err) {
    model?.dispose();
    throw err;
  } finally {
    reader.close();
  }
  return model;
}

/** Writes config.json and model.safetensors (F32, Hugging Face names), each atomically. */
export function savePretrained(model: CausalLM, dir: string, metadata: Record<string, string> = { format: 'pt' }): void {
  mkdirSync(dir, { recursive: true });
  const family = model.cfg.family;
  const named = hfNamedParameters(model);
  const paths = new Map([...model.namedParameters()].map(([p, t]) => [t, p]));
  function* tensors(): Generator<[string, F32Tensor]> {
    for (const [name, t] of named) {
      const data = t.dataSync();
      if (isTransposedInCheckpoint(family, paths.get(t)!)) yield [name, { shape: [t.shape[1], t.shape[0]], data: transpose2d(data, t.shape[0], t.shape[1]) }];
      else yield [name, { shape: t.shape.slice(), data }];
    }
  }
  writeSafetensorsFile(join(dir, 'model.safetensors'), tensors(), metadata);
  writeFileAtomic(join(dir, 'config.json'), new TextEncoder().encode(JSON.stringify(toHfConfigFloat32(model.cfg), null, 2) + '\n'));
}
