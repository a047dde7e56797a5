// The Hugging Face side of checkpoints that needs no file system: parameter names and layouts of
// each family, and loading weights from any tensor source (a checkpoint folder in Node,
// safetensors bytes fetched by a page).

import { RrtError, type F32Tensor, fromValues, noGrad, fmtShape, type Tensor } from '@rrt/tensor';
import type { ModelFamily } from './config.js';
import type { CausalLM } from './lm.js';

/** Tensors by Hugging Face name: a checkpoint folder (CheckpointReader) or safetensors bytes (bytesTensorSource). */
export interface TensorSource {
  /** Where the tensors come from, for messages. */
  readonly dir: string;
  has(name: string): boolean;
  /** The tensor as float32 values; `file` names its origin in messages. */
  read(name: string): F32Tensor & { file: string };
}

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

/** A [rows, cols] matrix transposed to [cols, rows]. */
export function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return out;
}

/** Loads weights named the Hugging Face way into an existing model of the same config. */
export function loadWeights(model: CausalLM, reader: TensorSource): void {
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

