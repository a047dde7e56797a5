// Reading and writing Hugging Face config.json for the decoder-only families rrt supports:
// one field spec per ModelConfig field and family (its keys, aliases, defaults and checks).
//
// Parsing follows transformers' semantics for each family (its defaults for absent keys, its
// aliases), but is stricter about sizes: the core sizes are required and must be positive
// integers. Writing back is a minimal diff against the config that was read, so
// parseHfConfig(toHfConfig(cfg)) is identical to cfg, raw included.

import { FormatError, RrtError } from '@rrt/tensor';
import type { Activation, ModelConfig, ModelFamily } from './model-config.js';
import { parseRopeScaling } from './rope.js';

/** The fields of ModelConfig that parseHfConfig derives (everything but raw). */
export type ModelFields = Omit<ModelConfig, 'raw'>;
type FieldName = keyof ModelFields;
type Raw = Record<string, unknown>;

/** The transformers architectures each family accepts. */
export const SUPPORTED_ARCHITECTURES: Readonly<Record<ModelFamily, readonly string[]>> = {
  llama: ['LlamaForCausalLM'],
  gemma: ['GemmaForCausalLM'],
  gpt_neox: ['GPTNeoXForCausalLM'],
  gpt2: ['GPT2LMHeadModel'],
};

export const MODEL_FAMILIES: readonly ModelFamily[] = ['llama', 'gemma', 'gpt_neox', 'gpt2'];

// ---------------------------------------------------------------------------------------------
// Reading and writing keys

/** Where a parse is happening, for error messages. */
interface Ctx {
  readonly source: string;
}

function getPath(raw: Raw, path: string): unknown {
  let cur: unknown = raw;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined;
    cur = (cur as Raw)[part];
  }
  return cur;
}

function setPath(raw: Raw, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur = raw;
  for (const part of parts.slice(0, -1)) {
    const next = cur[part];
    if (next === null || typeof next !== 'object' || Array.isArray(next)) cur[part] = {};
    cur = cur[part] as Raw;
  }
  cur[parts[parts.length - 1]!] = value;
}

/** Present means neither absent nor null: transformers treats null as "use the default". */
function isPresent(v: unknown): boolean {
  return v !== undefined && v !== null;
}

function firstPresentKey(raw: Raw, keys: readonly string[]): string | undefined {
  return keys.find((k) => isPresent(getPath(raw, k)));
}

export function show(v: unknown): string {
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  if (typeof v === 'string') return JSON.stringify(v);
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
  } catch {
    return String(v);
  }
}

function badKey(ctx: Ctx, key: string, expected: string, found: unknown, field?: FieldName): FormatError {
  const what = field === undefined ? `key "${key}"` : `key "${key}" (${field})`;
  return new FormatError(`${ctx.source}: ${what}: expected ${expected}, found ${show(found)}`);
}

type Kind = 'posInt' | 'posNum' | 'fraction' | 'bool';

function checkKind(ctx: Ctx, key: string, kind: Kind, v: unknown, field?: FieldName): number | boolean {
  const bad = (expected: string) => badKey(ctx, key, expected, v, field);
  switch (kind) {
    case 'posInt':
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw bad('a positive integer');
      return v;
    case 'posNum':
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad('a positive finite number');
      return v;
    case 'fraction':
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > 1) throw bad('a number in (0, 1]');
      return v;
    case 'bool':
      if (typeof v !== 'boolean') throw bad('true or false');
      return v;
  }
}

/**
 * How one ModelConfig field is read from and written to a family's config.json.
 * `read` sees the fields read before it (specs are ordered so dependencies come first).
 * `write` must leave `out` such that `read(out)` returns `value`.
 */
interface FieldSpec {
  readonly field: FieldName;
  /** The top-level config.json keys it reads (none for a fixed field). */
  readonly keys: readonly string[];
  read(raw: Raw, acc: Partial<ModelFields>, ctx: Ctx): unknown;
  write(out: Raw, value: unknown, cfg: ModelFields, complete: boolean): void;
}

/**
 * A field stored under `keys` (first present wins; dotted keys reach into nested objects).
 * Absent or null: `fallback(acc)`, or a missing-key error when there is none.
 * Writes go to the first key present in the file (so reading it back gives the value), else to
 * `writeKey` (default keys[0]).
 */
function keyed(
  field: FieldName,
  keys: readonly string[],
  kind: Kind,
  fallback?: (acc: Partial<ModelFields>, ctx: Ctx) => unknown,
  writeKey: string = keys[0]!,
): FieldSpec {
  return {
    field,
    keys: [...new Set(keys.map((k) => k.split('.')[0]!))],
    read(raw, acc, ctx) {
      const key = firstPresentKey(raw, keys);
      if (key !== undefined) {
        const value = checkKind(ctx, key, kind, getPath(raw, key), field);
        // Aliases (v4 and v5 names) that disagree: neither can be dropped silently.
        for (const other of keys) {
          const v = getPath(raw, other);
          if (other !== key && isPresent(v) && !Object.is(v, value)) {
            throw new FormatError(`${ctx.source}: keys "${key}" (${show(value)}) and "${other}" (${show(v)}) both give ${field} and disagree`);
          }
        }
        return value;
      }
      if (fallback) return fallback(acc, ctx);
      throw new FormatError(`${ctx.source}: missing required key "${keys[0]}" (${field}); expected ${kindText(kind)}`);
    },
    write(out, value) {
      // Every alias present gets the value, so none is left disagreeing.
      const present = keys.filter((k) => isPresent(getPath(out, k)));
      for (const k of present.length > 0 ? present : [writeKey]) setPath(out, k, value);
    },
  };
}

function kindText(kind: Kind): string {
  return { posInt: 'a positive integer', posNum: 'a positive finite number', fraction: 'a number in (0, 1]', bool: 'true or false' }[kind];
}

/** A field the family's config.json has no key for: always `value(acc)`, a constant or derived from other fields. */
function fixed(field: FieldName, value: (acc: Partial<ModelFields>, ctx: Ctx) => unknown): FieldSpec {
  const derived = value.length > 0;
  return {
    field,
    keys: [],
    read: (_raw, acc, ctx) => value(acc, ctx),
    write(_out, v, cfg) {
      const expected = value(cfg, { source: 'toHfConfig' });
      if (!sameValue(v, expected)) {
        const rule = derived ? `it follows from the other fields: ${show(expected)}` : `it is always ${show(expected)}`;
        throw new RrtError(`toHfConfig: a ${cfg.family} config.json cannot express ${field} = ${show(v)}; for ${cfg.family} ${rule}`);
      }
    },
  };
}

const ACTIVATION_NAMES: Readonly<Record<string, Activation>> = {
  gelu: 'gelu',
  gelu_new: 'gelu_tanh',
  gelu_pytorch_tanh: 'gelu_tanh',
  gelu_fast: 'gelu_tanh',
  silu: 'silu',
  swish: 'silu',
  relu: 'relu',
};

function parseActivation(ctx: Ctx, key: string, v: unknown): Activation {
  const act = typeof v === 'string' ? ACTIVATION_NAMES[v] : undefined;
  if (act === undefined) throw badKey(ctx, key, `one of ${Object.keys(ACTIVATION_NAMES).map((n) => `"${n}"`).join(', ')}`, v);
  return act;
}

function activationName(act: Activation, family: ModelFamily): string {
  if (act === 'gelu_tanh') return family === 'gpt2' ? 'gelu_new' : 'gelu_pytorch_tanh';
  return act;
}

/** The MLP activation under one key (llama, gpt_neox: hidden_act; gpt2: activation_function). */
function activationKey(key: string, fallback: Activation): FieldSpec {
  return {
    field: 'activation',
    keys: [key],
    read(raw, _acc, ctx) {
      const v = raw[key];
      return isPresent(v) ? parseActivation(ctx, key, v) : fallback;
    },
    write(out, value, cfg) {
      out[key] = activationName(value as Activation, cfg.family);
    },
  };
}

// Gemma checkpoints were trained with tanh-approximated GeLU, but google/gemma-2b's config.json
// says hidden_act "gelu". transformers (>= 4.38) reads `hidden_activation` and, when it is
// absent, uses gelu_pytorch_tanh whatever hidden_act says; we follow that, and still honour a
// hidden_act that is neither "gelu" nor absent.
const gemmaActivation: FieldSpec = {
  field: 'activation',
  keys: ['hidden_activation', 'hidden_act'],
  read(raw, _acc, ctx) {
    if (isPresent(raw.hidden_activation)) return parseActivation(ctx, 'hidden_activation', raw.hidden_activation);
    if (!isPresent(raw.hidden_act) || raw.hidden_act === 'gelu') return 'gelu_tanh';
    return parseActivation(ctx, 'hidden_act', raw.hidden_act);
  },
  write(out, value, cfg) {
    // Both keys, so readers that know only one of them agree.
    const name = activationName(value as Activation, cfg.family);
    out.hidden_activation = name;
    out.hidden_act = name;
  },
};

// RoPE base: transformers v5 writes rope_parameters.rope_theta; v4 files use rope_theta
// (gpt_neox: rotary_emb_base).
// New files are written in the v4 layout, which both major versions read.
function ropeThetaKeyed(v4Key: string): FieldSpec {
  return keyed('ropeTheta', ['rope_parameters.rope_theta', v4Key], 'posNum', () => 10000, v4Key);
}

const ropeScalingSpec: FieldSpec = {
  field: 'ropeScaling',
  keys: ['rope_scaling', 'rope_parameters'],
  // Kept as the file gives it (so it round-trips), but validated here: a type rrt does not
  // implement, or a missing parameter, is refused when the config is read, not at the first forward.
  read(raw, acc, ctx) {
    const s = raw.rope_scaling;
    if (isPresent(s)) {
      if (typeof s !== 'object' || Array.isArray(s)) throw badKey(ctx, 'rope_scaling', 'an object or null', s);
      parseRopeScaling(s, acc.maxPositions!, `${ctx.source}: rope_scaling`);
      return s;
    }
    // v5 folds scaling into rope_parameters; a rope_type other than 'default' is scaling.
    const p = raw.rope_parameters;
    if (p !== null && typeof p === 'object' && !Array.isArray(p)) {
      const type = (p as Raw).rope_type;
      if (isPresent(type) && type !== 'default') {
        parseRopeScaling(p, acc.maxPositions!, `${ctx.source}: rope_parameters`);
        return p;
      }
    }
    return null;
  },
  write(out, value) {
    out.rope_scaling = value === null ? null : structuredClone(value);
    const p = out.rope_parameters;
    if (value === null && p !== null && typeof p === 'object' && !Array.isArray(p)) (p as Raw).rope_type = 'default';
  },
};

/** headDim = hidden / heads, which must divide exactly. */
function derivedHeadDim(acc: Partial<ModelFields>, ctx: Ctx, keys: { hidden: string; heads: string }): number {
  const hidden = acc.hiddenSize!;
  const heads = acc.numHeads!;
  if (hidden % heads !== 0) {
    throw new FormatError(
      `${ctx.source}: "${keys.hidden}" (${hidden}) must be divisible by "${keys.heads}" (${heads}) to give a whole head size`,
    );
  }
  return hidden / heads;
}

// ---------------------------------------------------------------------------------------------
// The families

interface FamilySpec {
  readonly family: ModelFamily;
  readonly fields: readonly FieldSpec[];
  /** Keys a written config names the sizes under (for cross-field error messages). */
  readonly keyNames: { hidden: string; heads: string; kvHeads: string };
}

const LLAMA_KEYS = { hidden: 'hidden_size', heads: 'num_attention_heads', kvHeads: 'num_key_value_heads' };

function llamaLike(family: 'llama' | 'gemma'): FamilySpec {
  const gemma = family === 'gemma';
  return {
    family,
    keyNames: LLAMA_KEYS,
    fields: [
      keyed('vocabSize', ['vocab_size'], 'posInt'),
      keyed('hiddenSize', ['hidden_size'], 'posInt'),
      keyed('numLayers', ['num_hidden_layers'], 'posInt'),
      keyed('numHeads', ['num_attention_heads'], 'posInt'),
      keyed('numKvHeads', ['num_key_value_heads'], 'posInt', (acc) => acc.numHeads),
      // transformers' GemmaConfig defaults head_dim to 256; LlamaConfig derives it.
      keyed('headDim', ['head_dim'], 'posInt', gemma ? () => 256 : (acc, ctx) => derivedHeadDim(acc, ctx, LLAMA_KEYS)),
      keyed('intermediateSize', ['intermediate_size'], 'posInt'),
      keyed('maxPositions', ['max_position_embeddings'], 'posInt', () => (gemma ? 8192 : 2048)),
      fixed('norm', () => 'rmsnorm'),
      keyed('normEps', ['rms_norm_eps'], 'posNum', () => 1e-6),
      fixed('rmsNormAddOne', () => gemma),
      gemma ? gemmaActivation : activationKey('hidden_act', 'silu'),
      fixed('gatedMlp', () => true),
      fixed('positions', () => 'rope'),
      ropeThetaKeyed('rope_theta'),
      fixed('rotaryPct', () => 1),
      ropeScalingSpec,
      fixed('parallelResidual', () => false),
      keyed('qkvBias', ['attention_bias'], 'bool', () => false),
      // One flag covers q, k, v and o in both families.
      fixed('attentionBias', (acc) => acc.qkvBias),
      gemma ? fixed('mlpBias', () => false) : keyed('mlpBias', ['mlp_bias'], 'bool', () => false),
      keyed('tieWordEmbeddings', ['tie_word_embeddings'], 'bool', () => gemma),
      gemma ? fixed('embeddingScale', (acc) => Math.sqrt(acc.hiddenSize!)) : fixed('embeddingScale', () => 1),
    ],
  };
}

const NEOX_KEYS = { hidden: 'hidden_size', heads: 'num_attention_heads', kvHeads: 'num_attention_heads' };

const GPT_NEOX: FamilySpec = {
  family: 'gpt_neox',
  keyNames: NEOX_KEYS,
  fields: [
    keyed('vocabSize', ['vocab_size'], 'posInt'),
    keyed('hiddenSize', ['hidden_size'], 'posInt'),
    keyed('numLayers', ['num_hidden_layers'], 'posInt'),
    keyed('numHeads', ['num_attention_heads'], 'posInt'),
    fixed('numKvHeads', (acc) => acc.numHeads),
    fixed('headDim', (acc, ctx) => derivedHeadDim(acc, ctx, NEOX_KEYS)),
    keyed('intermediateSize', ['intermediate_size'], 'posInt'),
    keyed('maxPositions', ['max_position_embeddings'], 'posInt', () => 2048),
    fixed('norm', () => 'layernorm'),
    keyed('normEps', ['layer_norm_eps'], 'posNum', () => 1e-5),
    fixed('rmsNormAddOne', () => false),
    activationKey('hidden_act', 'gelu'),
    fixed('gatedMlp', () => false),
    fixed('positions', () => 'rope'),
    ropeThetaKeyed('rotary_emb_base'),
    keyed('rotaryPct', ['rope_parameters.partial_rotary_factor', 'rotary_pct'], 'fraction', () => 0.25, 'rotary_pct'),
    ropeScalingSpec,
    keyed('parallelResidual', ['use_parallel_residual'], 'bool', () => true),
    // Newer transformers has attention_bias (default true) for query_key_value and dense.
    keyed('qkvBias', ['attention_bias'], 'bool', () => true),
    fixed('attentionBias', (acc) => acc.qkvBias),
    fixed('mlpBias', () => true),
    keyed('tieWordEmbeddings', ['tie_word_embeddings'], 'bool', () => false),
    fixed('embeddingScale', () => 1),
  ],
};

const GPT2_KEYS = { hidden: 'n_embd', heads: 'n_head', kvHeads: 'n_head' };

const GPT2: FamilySpec = {
  family: 'gpt2',
  keyNames: GPT2_KEYS,
  fields: [
    keyed('vocabSize', ['vocab_size'], 'posInt'),
    // GPT2Config's attribute_map lets hidden_size etc. stand for the n_* names.
    keyed('hiddenSize', ['n_embd', 'hidden_size'], 'posInt'),
    keyed('numLayers', ['n_layer', 'num_hidden_layers'], 'posInt'),
    keyed('numHeads', ['n_head', 'num_attention_heads'], 'posInt'),
    fixed('numKvHeads', (acc) => acc.numHeads),
    fixed('headDim', (acc, ctx) => derivedHeadDim(acc, ctx, GPT2_KEYS)),
    // n_inner null (the usual value) means 4 * n_embd.
    keyed('intermediateSize', ['n_inner'], 'posInt', (acc) => 4 * acc.hiddenSize!),
    keyed('maxPositions', ['n_positions', 'max_position_embeddings'], 'posInt', () => 1024),
    fixed('norm', () => 'layernorm'),
    keyed('normEps', ['layer_norm_epsilon'], 'posNum', () => 1e-5),
    fixed('rmsNormAddOne', () => false),
    activationKey('activation_function', 'gelu_tanh'),
    fixed('gatedMlp', () => false),
    fixed('positions', () => 'learned'),
    fixed('ropeTheta', () => 0),
    fixed('rotaryPct', () => 0),
    fixed('ropeScaling', () => null),
    fixed('parallelResidual', () => false),
    fixed('qkvBias', () => true),
    fixed('attentionBias', () => true),
    fixed('mlpBias', () => true),
    keyed('tieWordEmbeddings', ['tie_word_embeddings'], 'bool', () => true),
    fixed('embeddingScale', () => 1),
  ],
};

const FAMILIES: Readonly<Record<ModelFamily, FamilySpec>> = {
  llama: llamaLike('llama'),
  gemma: llamaLike('gemma'),
  gpt_neox: GPT_NEOX,
  gpt2: GPT2,
};

// ---------------------------------------------------------------------------------------------
// Keys no field spec reads

/**
 * What rrt does with a config.json key that no field spec of the family reads: `ignore` keys do
 * not change what the model computes (the reason says why); `require` keys are honoured only
 * at the value(s) rrt implements and refused by name otherwise. A key a field spec reads is
 * honoured by that spec. Keys in none of these lists are ones transformers' config class for
 * the family does not define either (so transformers ignores them too); parseHfConfig keeps
 * them in raw and unrecognizedHfConfigKeys lists them.
 */
type KeyRule =
  | { readonly ignore: string }
  | { readonly require: (v: unknown, cfg: ModelFields) => boolean; readonly expected: (cfg: ModelFields) => string; readonly why: string };

const ignore = (why: string): KeyRule => ({ ignore: why });
const mustBe = (allowed: unknown, why: string): KeyRule => ({
  require: (v) => Object.is(v, allowed) || (typeof allowed === 'object' && JSON.stringify(v) === JSON.stringify(allowed)),
  expected: () => show(allowed),
  why,
});
/** Honoured when it says what the family's fixed field already is (e.g. head_dim of gpt_neox). */
const sameAs = (field: FieldName, why: string): KeyRule => ({
  require: (v, cfg) => sameValue(v, cfg[field]),
  expected: (cfg) => `${show(cfg[field])} (${field})`,
  why,
});

const METADATA = 'metadata: does not change what the model computes';
const DROPOUT = 'dropout: rrt trains and runs without dropout (inference is unaffected)';
const GENERATION = 'generation default: rrt generate takes its own options';
const DTYPES = ['float32', 'float16', 'bfloat16'];
const dtypeRule: KeyRule = {
  require: (v) => typeof v === 'string' && DTYPES.includes(v),
  expected: () => `one of ${DTYPES.map((d) => `"${d}"`).join(', ')}`,
  why: 'rrt reads F32, F16 and BF16 tensors, computes in float32 and writes float32 (savePretrained sets torch_dtype "float32")',
};

/** Keys every family may carry (transformers' PretrainedConfig and hub conventions). */
const COMMON_KEYS: Readonly<Record<string, KeyRule>> = {
  _name_or_path: ignore(METADATA),
  transformers_version: ignore(METADATA),
  torch_dtype: dtypeRule,
  dtype: dtypeRule,
  use_cache: ignore('rrt always caches keys and values when generating'),
  bos_token_id: ignore('special tokens come from tokenizer.json'),
  eos_token_id: ignore('special tokens come from tokenizer.json'),
  pad_token_id: ignore('special tokens come from tokenizer.json'),
  sep_token_id: ignore('special tokens come from tokenizer.json'),
  initializer_range: ignore('init of new weights only; loaded weights are used as they are'),
  auto_map: ignore('custom modeling code is not run (transformers without trust_remote_code does the same)'),
  tokenizer_class: ignore(METADATA),
  id2label: ignore('classification heads are not loaded'),
  label2id: ignore('classification heads are not loaded'),
  task_specific_params: ignore(GENERATION),
  output_attentions: ignore(METADATA),
  output_hidden_states: ignore(METADATA),
  return_dict: ignore(METADATA),
  torchscript: ignore(METADATA),
  use_bfloat16: ignore(METADATA),
  _attn_implementation: ignore('attention kernel choice: same result'),
  attn_implementation: ignore('attention kernel choice: same result'),
  max_length: ignore(GENERATION),
  temperature: ignore(GENERATION),
  top_k: ignore(GENERATION),
  top_p: ignore(GENERATION),
  do_sample: ignore(GENERATION),
  num_beams: ignore(GENERATION),
  is_encoder_decoder: mustBe(false, 'rrt implements decoder-only models'),
  add_cross_attention: mustBe(false, 'rrt implements decoder-only models without cross-attention'),
  is_decoder: ignore(METADATA),
  pruned_heads: mustBe({}, 'pruned attention heads change the projection shapes'),
  quantization_config: { require: () => false, expected: () => 'no quantization_config', why: 'quantized checkpoints (GPTQ, AWQ, bitsandbytes, ...) are not supported; use unquantized weights' },
  sliding_window: mustBe(null, 'rrt implements full causal attention (no sliding window)'),
  use_sliding_window: mustBe(false, 'rrt implements full causal attention (no sliding window)'),
  attn_logit_softcapping: mustBe(null, 'rrt does not soft-cap attention logits (a Gemma 2 feature)'),
  final_logit_softcapping: mustBe(null, 'rrt does not soft-cap output logits (a Gemma 2 feature)'),
  rope_interleaved: mustBe(false, "rrt's RoPE rotates halves (the transformers convention), not interleaved pairs"),
  qk_layernorm: mustBe(false, 'rrt has no query/key norm'),
  use_qk_norm: mustBe(false, 'rrt has no query/key norm'),
};

const ROPE_FAMILY_KEYS: Readonly<Record<string, KeyRule>> = {
  attention_dropout: ignore(DROPOUT),
  pretraining_tp: ignore('tensor-parallel slices of a projection give the same product'),
};

/** Keys transformers reads for one family and that rrt fixes there: honoured when they agree. */
const FAMILY_KEYS: Readonly<Record<ModelFamily, Readonly<Record<string, KeyRule>>>> = {
  llama: {
    ...ROPE_FAMILY_KEYS,
    is_llama_config: ignore('marker written by nanotron (SmolLM): metadata'),
    // transformers' llama rotates whole heads: its apply_rotary_pos_emb cannot run a partial one.
    partial_rotary_factor: mustBe(1, "llama rotates every head dim (transformers' llama cannot run partial rotary either)"),
  },
  gemma: {
    ...ROPE_FAMILY_KEYS,
    partial_rotary_factor: mustBe(1, "gemma rotates every head dim (transformers' gemma cannot run partial rotary either)"),
    mlp_bias: mustBe(false, 'gemma has no MLP biases'),
    query_pre_attn_scalar: sameAs('headDim', 'gemma scales attention logits by 1 / sqrt(head_dim)'),
  },
  gpt_neox: {
    attention_dropout: ignore(DROPOUT),
    hidden_dropout: ignore(DROPOUT),
    classifier_dropout: ignore(DROPOUT),
    // Newer GPTNeoXConfig also stores rope_theta / partial_rotary_factor / head_dim beside the old keys.
    rope_theta: sameAs('ropeTheta', 'it duplicates rotary_emb_base'),
    partial_rotary_factor: sameAs('rotaryPct', 'it duplicates rotary_pct'),
    head_dim: sameAs('headDim', 'gpt_neox head size is hidden_size / num_attention_heads'),
    num_key_value_heads: sameAs('numKvHeads', 'gpt_neox has one key/value head per query head'),
    mlp_bias: mustBe(true, 'gpt_neox MLPs have biases'),
  },
  gpt2: {
    n_ctx: ignore('legacy copy of n_positions that transformers does not read'),
    resid_pdrop: ignore(DROPOUT),
    embd_pdrop: ignore(DROPOUT),
    attn_pdrop: ignore(DROPOUT),
    summary_type: ignore('sequence-summary head of GPT2DoubleHeadsModel: not loaded'),
    summary_use_proj: ignore('sequence-summary head of GPT2DoubleHeadsModel: not loaded'),
    summary_activation: ignore('sequence-summary head of GPT2DoubleHeadsModel: not loaded'),
    summary_proj_to_labels: ignore('sequence-summary head of GPT2DoubleHeadsModel: not loaded'),
    summary_first_dropout: ignore('sequence-summary head of GPT2DoubleHeadsModel: not loaded'),
    reorder_and_upcast_attn: ignore('numerics only: rrt computes attention in float32 already'),
    scale_attn_weights: mustBe(true, 'rrt scales attention logits by 1 / sqrt(head_dim)'),
    scale_attn_by_inverse_layer_idx: mustBe(false, 'rrt does not scale attention by 1 / (layer index + 1)'),
    rope_scaling: mustBe(null, 'gpt2 has learned positions, not RoPE'),
    rope_theta: mustBe(null, 'gpt2 has learned positions, not RoPE'),
    head_dim: sameAs('headDim', 'gpt2 head size is n_embd / n_head'),
    num_key_value_heads: sameAs('numKvHeads', 'gpt2 has one key/value head per query head'),
  },
};

/** Top-level keys the family's field specs read, plus the identity keys. */
function readKeys(spec: FamilySpec): Set<string> {
  return new Set(['model_type', 'architectures', ...spec.fields.flatMap((f) => f.keys)]);
}

function keyRule(family: ModelFamily, key: string): KeyRule | undefined {
  return Object.hasOwn(FAMILY_KEYS[family], key) ? FAMILY_KEYS[family][key] : Object.hasOwn(COMMON_KEYS, key) ? COMMON_KEYS[key] : undefined;
}

/** Refuses, by name, a key whose value rrt cannot honour (see KeyRule). Absent or null keys pass unless null itself is refused. */
function checkOtherKeys(raw: Raw, spec: FamilySpec, cfg: ModelFields, ctx: Ctx): void {
  const read = readKeys(spec);
  for (const key of Object.keys(raw)) {
    if (read.has(key)) continue;
    const rule = keyRule(spec.family, key);
    if (rule === undefined || 'ignore' in rule) continue;
    const v = raw[key];
    // null is transformers' "default", which is what rrt implements, except where a key must be absent.
    if (v === null && key !== 'quantization_config') continue;
    if (v === null || !rule.require(v, cfg)) {
      throw new FormatError(`${ctx.source}: key "${key}" is ${show(v)}, expected ${rule.expected(cfg)}: ${rule.why}`);
    }
  }
  // The v5 layout nests the rotary fraction; llama and gemma cannot honour one below 1.
  const nested = getPath(raw, 'rope_parameters.partial_rotary_factor');
  if ((spec.family === 'llama' || spec.family === 'gemma') && isPresent(nested) && nested !== 1) {
    throw new FormatError(`${ctx.source}: key "rope_parameters.partial_rotary_factor" is ${show(nested)}, expected 1: ${spec.family} rotates every head dim`);
  }
}

/**
 * The top-level keys of a config.json (as parsed into cfg.raw) that rrt neither reads nor
 * knows to be safe to ignore: keys transformers' config class for the family does not define
 * (transformers ignores them too). Callers may show them to the user.
 */
export function unrecognizedHfConfigKeys(cfg: ModelConfig): string[] {
  const spec = FAMILIES[cfg.family];
  const read = readKeys(spec);
  return Object.keys(cfg.raw).filter((k) => !read.has(k) && keyRule(cfg.family, k) === undefined);
}

// Every family's spec covers every field, dependencies first; defineConfig's read-back check
// (exercised for all families in the tests) catches a spec that misses one.
export const FIELD_ORDER: readonly FieldName[] = FAMILIES.llama.fields.map((f) => f.field);

// ---------------------------------------------------------------------------------------------
// Parse

export function isFamily(v: unknown): v is ModelFamily {
  return typeof v === 'string' && (MODEL_FAMILIES as readonly string[]).includes(v);
}

function supportedList(): string {
  return MODEL_FAMILIES.map((f) => `${f} (${SUPPORTED_ARCHITECTURES[f].join(', ')})`).join(', ');
}

function familyOfArchitecture(arch: string): ModelFamily | undefined {
  return MODEL_FAMILIES.find((f) => SUPPORTED_ARCHITECTURES[f].includes(arch));
}

/** Family and architecture from model_type and architectures. */
function readIdentity(raw: Raw, ctx: Ctx): { family: ModelFamily; architecture: string } {
  const archs = raw.architectures;
  if (isPresent(archs) && (!Array.isArray(archs) || archs.some((a) => typeof a !== 'string'))) {
    throw badKey(ctx, 'architectures', 'an array of class names', archs);
  }
  const archList = (archs as string[] | undefined | null) ?? [];
  const mt = raw.model_type;
  let family: ModelFamily;
  if (isPresent(mt)) {
    if (!isFamily(mt)) {
      throw new FormatError(`${ctx.source}: key "model_type": unsupported model type ${show(mt)}; supported: ${supportedList()}`);
    }
    family = mt;
  } else {
    // Old files may lack model_type; the class name is then the only clue.
    const inferred = archList.map(familyOfArchitecture).find((f) => f !== undefined);
    if (inferred === undefined) {
      throw new FormatError(
        `${ctx.source}: missing key "model_type" and no supported class in "architectures" (${show(archList)}); supported: ${supportedList()}`,
      );
    }
    family = inferred;
  }
  if (archList.length === 0) return { family, architecture: SUPPORTED_ARCHITECTURES[family][0]! };
  const architecture = archList.find((a) => SUPPORTED_ARCHITECTURES[family].includes(a));
  if (architecture === undefined) {
    throw new FormatError(
      `${ctx.source}: key "architectures": expected one of ${SUPPORTED_ARCHITECTURES[family].join(', ')} for model_type "${family}", found ${show(archList)}; supported: ${supportedList()}`,
    );
  }
  return { family, architecture };
}

function readFields(raw: Raw, spec: FamilySpec, ctx: Ctx, identity: { family: ModelFamily; architecture: string }): ModelFields {
  const acc: Partial<Record<FieldName, unknown>> = { ...identity };
  for (const f of spec.fields) {
    if (f.field === 'family' || f.field === 'architecture') continue;
    acc[f.field] = f.read(raw, acc as Partial<ModelFields>, ctx);
  }
  const cfg = acc as ModelFields;
  checkCrossFields(cfg, spec, ctx);
  checkOtherKeys(raw, spec, cfg, ctx);
  return cfg;
}

function checkCrossFields(cfg: ModelFields, spec: FamilySpec, ctx: Ctx): void {
  const k = spec.keyNames;
  if (cfg.numHeads % cfg.numKvHeads !== 0) {
    throw new FormatError(
      `${ctx.source}: "${k.heads}" (${cfg.numHeads}) must be a multiple of "${k.kvHeads}" (${cfg.numKvHeads}) so each key/value head serves a whole group of query heads`,
    );
  }
  if (cfg.positions === 'rope') {
    // transformers rotates int(head_dim * rotary_pct) dims, in pairs.
    const dims = Math.floor(cfg.headDim * cfg.rotaryPct);
    if (dims < 2 || dims % 2 !== 0) {
      throw new FormatError(
        `${ctx.source}: RoPE would rotate ${dims} of ${cfg.headDim} head dims (rotary fraction ${cfg.rotaryPct}); expected an even number >= 2`,
      );
    }
  }
}

/**
 * Reads a Hugging Face config.json (already JSON-parsed) into a ModelConfig.
 * Throws FormatError naming `source` and the offending key when the family is unsupported, a
 * required size is missing, or a value has the wrong type or range.
 * Position embeddings of gpt2 are learned; rope families report ropeTheta/rotaryPct.
 */
export function parseHfConfig(json: unknown, source = 'config.json'): ModelConfig {
  const ctx: Ctx = { source };
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new FormatError(`${source}: expected a JSON object at the top level, found ${show(json)}`);
  }
  const raw = structuredClone(json) as Raw;
  const identity = readIdentity(raw, ctx);
  const fields = readFields(raw, FAMILIES[identity.family], ctx, identity);
  return { ...fields, raw };
}

// ---------------------------------------------------------------------------------------------
// Write

export function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  return JSON.stringify(a) === JSON.stringify(b);
}

export function writeConfig(cfg: ModelFields, base: Raw, complete: boolean): Raw {
  const spec = FAMILIES[cfg.family];
  if (!spec) throw new RrtError(`toHfConfig: unknown family ${show(cfg.family)}; supported: ${MODEL_FAMILIES.join(', ')}`);
  const out = structuredClone(base);
  const ctx: Ctx = { source: 'toHfConfig' };
  if (out.model_type !== cfg.family) out.model_type = cfg.family;
  const archs = out.architectures;
  if (!Array.isArray(archs) || !archs.includes(cfg.architecture)) {
    if (!SUPPORTED_ARCHITECTURES[cfg.family].includes(cfg.architecture)) {
      throw new RrtError(
        `toHfConfig: architecture ${show(cfg.architecture)} is not a ${cfg.family} class; expected one of ${SUPPORTED_ARCHITECTURES[cfg.family].join(', ')}`,
      );
    }
    out.architectures = [cfg.architecture];
  }
  const acc: Partial<Record<FieldName, unknown>> = { family: cfg.family, architecture: cfg.architecture };
  for (const f of spec.fields) {
    if (f.field === 'family' || f.field === 'architecture') continue;
    const value = cfg[f.field];
    let current: unknown;
    try {
      current = f.read(out, acc as Partial<ModelFields>, ctx);
    } catch {
      current = undefined;
    }
    // Minimal diff: leave a key alone when it already reads as the value we hold.
    if (complete || !sameValue(current, value)) f.write(out, value, cfg, complete);
    acc[f.field] = value;
  }
  return out;
}

/**
 * Writes `cfg` as its family's config.json. Keys of cfg.raw are kept; a key is rewritten only
 * where its value would read differently from cfg, so parseHfConfig(toHfConfig(cfg)) deep-equals
 * cfg. Throws RrtError when cfg holds a value the family's file cannot express (e.g. a gpt2
 * config without biases).
 */
export function toHfConfig(cfg: ModelConfig): Record<string, unknown> {
  // A raw of another family says nothing about this one: start afresh.
  const base = cfg.raw && cfg.raw.model_type === cfg.family ? (cfg.raw as Raw) : null;
  return base ? writeConfig(cfg, base, false) : writeConfig(cfg, {}, true);
}

/**
 * toHfConfig for a checkpoint written in float32 (what rrt writes): a torch_dtype or dtype key
 * the file carries (e.g. "bfloat16" from the hub) is rewritten to "float32", so the file says
 * what its weights are. A file without either key keeps none (transformers then assumes float32).
 */
export function toHfConfigFloat32(cfg: ModelConfig): Record<string, unknown> {
  const out = toHfConfig(cfg);
  for (const key of ['torch_dtype', 'dtype']) if (isPresent(out[key])) out[key] = 'float32';
  return out;
}
