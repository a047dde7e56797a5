// Hugging Face checkpoint folders: config.json + model.safetensors (or shards with an index).
// Our modules use one naming scheme for every family; this file maps it to each family's
// Hugging Face names and layouts (GPT-2's Conv1D stores weights [in, out]).

import { readFileSync, existsSync, mkdirSync, writeFileSync, renameSync } from 'node:fs';
import { basename, join, resolve, sep } from 'node:path';
import { FormatError, RrtError, type Backend, type F32Tensor, fromValues, getBackend, noGrad, fmtShape, type Tensor } from '@rrt/tensor';
import { SafetensorsFile, writeSafetensorsFile } from '@rrt/tensor/node';
import { parseHfConfig, toHfConfig, type ModelConfig, type ModelFamily } from './config.js';
import { CausalLM } from './lm.js';

const BLOCK_NAMES: Record<ModelFamily, { prefix: string; parts: Record<string, string> }> = {
  llama: {
    prefix: 'model.layers',
    parts: {
      ln1: 'input_layernorm', ln2: 'post_attention_layernorm', 'attn.q': 'self_attn.q_proj', 'attn.k': 'self_attn.k_proj',
      'attn.v': 'self_attn.v_proj', 'attn.o': 'self_attn.o_proj', 'mlp.gate': 'mlp.gate_proj', 'mlp.up': 'mlp.up_proj', 'mlp.down': 'mlp.down_proj',
    },
  },
  gemma: { prefix: 'model.layers', parts: {} },
  gpt_neox: {
    prefix: 'gpt_neox.layers',
    parts: {
      ln1: 'input_layernorm', ln2: 'post_attention_layernorm', 'attn.qkv': 'attention.query_key_value', 'attn.o': 'attention.dense',
      'mlp.up': 'mlp.dense_h_to_4h', 'mlp.down': 'mlp.dense_4h_to_h',
    },
  },
  gpt2: {
    prefix: 'transformer.h',
    parts: { ln1: 'ln_1', ln2: 'ln_2', 'attn.qkv': 'attn.c_attn', 'attn.o': 'attn.c_proj', 'mlp.up': 'mlp.c_fc', 'mlp.down': 'mlp.c_proj' },
  },
};
BLOCK_NAMES.gemma.parts = BLOCK_NAMES.llama.parts;

const TOP_NAMES: Record<ModelFamily, Record<string, string>> = {
  llama: { 'embed.weight': 'model.embed_tokens.weight', 'norm.weight': 'model.norm.weight', 'head.weight': 'lm_head.weight' },
  gemma: { 'embed.weight': 'model.embed_tokens.weight', 'norm.weight': 'model.norm.weight', 'head.weight': 'lm_head.weight' },
  gpt_neox: {
    'embed.weight': 'gpt_neox.embed_in.weight', 'norm.weight': 'gpt_neox.final_layer_norm.weight',
    'norm.bias': 'gpt_neox.final_layer_norm.bias', 'head.weight': 'embed_out.weight',
  },
  gpt2: {
    'embed.weight': 'transformer.wte.weight', 'pos.weight': 'transformer.wpe.weight', 'norm.weight': 'transformer.ln_f.weight',
    'norm.bias': 'transformer.ln_f.bias', 'head.weight': 'lm_head.weight',
  },
};

/** The Hugging Face name of one of our parameter paths ("blocks.3.attn.q.weight"). */
export function hfName(family: ModelFamily, path: string): string {
  const top = TOP_NAMES[family][path];
  if (top) return top;
  const m = /^blocks\.(\d+)\.(.+)\.(weight|bias)$/.exec(path);
  const part = m && BLOCK_NAMES[family].parts[m[2]];
  if (!m || !part) throw new RrtError(`no ${family} checkpoint name for parameter "${path}"`);
  return `${BLOCK_NAMES[family].prefix}.${m[1]}.${part}.${m[3]}`;
}

/** GPT-2's Conv1D layers store W as [in, out]; we hold [out, in]. */
export function isTransposedInCheckpoint(family: ModelFamily, path: string): boolean {
  return family === 'gpt2' && /^blocks\.\d+\.(attn\.qkv|attn\.o|mlp\.up|mlp\.down)\.weight$/.test(path);
}

/** Parameters of a plain (identity-schedule) model keyed by Hugging Face names. */
export function hfNamedParameters(model: CausalLM): Map<string, Tensor> {
  if (!model.schedule.every((b, i) => b === i) || model.blocks.length !== model.schedule.length) {
    throw new RrtError('hfNamedParameters: the model ties layers; export it unrolled with @rrt/recursive first');
  }
  const out = new Map<string, Tensor>();
  for (const [path, t] of model.namedParameters()) out.set(hfName(model.cfg.family, path), t);
  return out;
}

function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return out;
}

/** Reads tensors by name across the files of a checkpoint folder, one at a time. */
export class CheckpointReader {
  private readonly files = new Map<string, SafetensorsFile>();
  private readonly where = new Map<string, string>();

  constructor(readonly dir: string) {
    const single = join(dir, 'model.safetensors');
    const index = join(dir, 'model.safetensors.index.json');
    if (existsSync(index)) {
      const source = index;
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
        // The index must not point outside the folder (no "../", no absolute paths).
        if (typeof file !== 'string' || file !== basename(file) || file === '..' || file === '.' || !resolve(root, file).startsWith(root + sep)) {
          throw new FormatError(`${source}: weight_map entry for "${name}" must be a file name inside the folder, got ${JSON.stringify(file)}`);
        }
        this.where.set(name, file);
      }
    } else if (existsSync(single)) {
      const f = SafetensorsFile.open(single);
      this.files.set('model.safetensors', f);
      for (const name of f.names()) this.where.set(name, 'model.safetensors');
    } else {
      throw new RrtError(`${dir}: no model.safetensors or model.safetensors.index.json`);
    }
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  read(name: string): F32Tensor & { file: string } {
    const file = this.where.get(name);
    if (!file) throw new RrtError(`${this.dir}: tensor "${name}" is missing from the checkpoint`);
    let f = this.files.get(file);
    if (!f) {
      f = SafetensorsFile.open(join(this.dir, file));
      this.files.set(file, f);
    }
    return { ...f.read(name), file: join(this.dir, file) };
  }

  close(): void {
    for (const f of this.files.values()) f.close();
    this.files.clear();
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

/** Loads weights named the Hugging Face way into an existing model of the same config. */
export function loadWeights(model: CausalLM, reader: CheckpointReader): void {
  const family = model.cfg.family;
  const backend = model.embed.weight.backend;
  noGrad(() => {
    for (const [path, current] of model.namedParameters()) {
      let name = hfName(family, path);
      // GPT-2 checkpoints from the original release have no "transformer." prefix.
      if (!reader.has(name) && family === 'gpt2' && reader.has(name.replace(/^transformer\./, ''))) name = name.replace(/^transformer\./, '');
      if (!reader.has(name) && path === 'head.weight') throw new RrtError(`${reader.dir}: tensor "${name}" is missing (config says tie_word_embeddings is false)`);
      const t = reader.read(name);
      const transposed = isTransposedInCheckpoint(family, path);
      const expected = transposed ? [current.shape[1], current.shape[0]] : current.shape;
      if (t.shape.length !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
        throw new RrtError(`${t.file}: tensor "${name}" has shape ${fmtShape(t.shape)}, expected ${fmtShape(expected)}`);
      }
      const values = transposed ? transpose2d(t.data, t.shape[0], t.shape[1]) : t.data;
      const [owner, local] = model.resolveParam(path);
      current.dispose();
      owner.setParam(local, fromValues(values, current.shape.slice(), backend));
    }
  });
}

/** Loads a Hugging Face model folder (llama, gemma, gpt_neox, gpt2). */
export function loadPretrained(dir: string, opts: LoadOptions = {}): CausalLM {
  const cfg = readConfig(dir);
  const model = new CausalLM(cfg, { backend: opts.backend ?? getBackend(), std: 0 });
  const reader = new CheckpointReader(dir);
  try {
    loadWeights(model, reader);
  } catch (err) {
    model.dispose();
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
  const tmp = join(dir, `.config.json.${process.pid}.tmp`);
  writeFileSync(tmp, JSON.stringify(toHfConfig(model.cfg), null, 2) + '\n');
  renameSync(tmp, join(dir, 'config.json'));
}
