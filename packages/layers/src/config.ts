// Model configs for the decoder-only families rrt supports, read from and written back to
// Hugging Face config.json, plus exact parameter accounting from a config alone (no weights).
//
// Parsing follows transformers' semantics for each family (its defaults for absent keys, its
// aliases), but is stricter about sizes: the core sizes are required and must be positive
// integers. Writing back is a minimal diff against the config that was read, so
// parseHfConfig(toHfConfig(cfg)) is identical to cfg, raw included.

import { FormatError, RrtError } from '@rrt/tensor';

/** The model families rrt implements (transformers' `model_type` values). */
export type ModelFamily = 'llama' | 'gemma' | 'gpt_neox' | 'gpt2';

/** Activations of the MLP. `gelu_tanh` is the tanh approximation (gelu_new, gelu_pytorch_tanh, gelu_fast). */
export type Activation = 'gelu' | 'gelu_tanh' | 'silu' | 'relu';

export type NormKind = 'layernorm' | 'rmsnorm';

export type PositionKind = 'rope' | 'learned';

/** A normalised decoder-only LM config. Sizes are counts of scalars, not bytes. */
export interface ModelConfig {
  readonly family: ModelFamily;
  /** The transformers class, e.g. 'LlamaForCausalLM'. */
  readonly architecture: string;
  readonly vocabSize: number;
  /** d_model. */
  readonly hiddenSize: number;
  readonly numLayers: number;
  /** Query heads. */
  readonly numHeads: number;
  /** Key/value heads (= numHeads for MHA, 1 for MQA, in between for GQA). */
  readonly numKvHeads: number;
  /** Per-head size; numHeads * headDim may differ from hiddenSize (Gemma 7B). */
  readonly headDim: number;
  /** MLP width (d_ff). */
  readonly intermediateSize: number;
  /** Longest sequence: the size of the learned position table (gpt2) or the RoPE cache limit. */
  readonly maxPositions: number;
  readonly norm: NormKind;
  readonly normEps: number;
  /** Gemma's RMSNorm scales by (1 + w), so its weights are stored zero-centred. */
  readonly rmsNormAddOne: boolean;
  readonly activation: Activation;
  /** Gated MLP: down(act(gate(x)) * up(x)) (SwiGLU / GeGLU); otherwise down(act(up(x))). */
  readonly gatedMlp: boolean;
  readonly positions: PositionKind;
  /** RoPE base; 0 when positions is 'learned'. */
  readonly ropeTheta: number;
  /** Fraction of each head's dims that RoPE rotates (gpt_neox rotary_pct); 1 = all, 0 when positions is 'learned'. */
  readonly rotaryPct: number;
  /** RoPE scaling as the file gives it (e.g. llama3's), or null; models that do not implement it must refuse a non-null one. */
  readonly ropeScaling: Readonly<Record<string, unknown>> | null;
  /** x + attn(ln1(x)) + mlp(ln2(x)) (gpt_neox, GPT-J style) instead of the sequential pre-norm block. */
  readonly parallelResidual: boolean;
  /** Bias on the q, k and v projections. */
  readonly qkvBias: boolean;
  /** Bias on the attention output projection (o / dense / c_proj). */
  readonly attentionBias: boolean;
  /** Bias on the MLP projections. */
  readonly mlpBias: boolean;
  /** LM head shares the token embedding matrix. */
  readonly tieWordEmbeddings: boolean;
  /** Multiplier on token embeddings before the first layer: sqrt(hiddenSize) for gemma, else 1. */
  readonly embeddingScale: number;
  /** The config.json this was read from (a deep copy), kept so unknown keys round-trip. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** The fields of ModelConfig that parseHfConfig derives (everything but raw). */
type ModelFields = Omit<ModelConfig, 'raw'>;
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

function show(v: unknown): string {
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
    read(raw, acc, ctx) {
      const key = firstPresentKey(raw, keys);
      if (key !== undefined) return checkKind(ctx, key, kind, getPath(raw, key), field);
      if (fallback) return fallback(acc, ctx);
      throw new FormatError(`${ctx.source}: missing required key "${keys[0]}" (${field}); expected ${kindText(kind)}`);
    },
    write(out, value) {
      setPath(out, firstPresentKey(out, keys) ?? writeKey, value);
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
  read(raw, _acc, ctx) {
    const s = raw.rope_scaling;
    if (isPresent(s)) {
      if (typeof s !== 'object' || Array.isArray(s)) throw badKey(ctx, 'rope_scaling', 'an object or null', s);
      return s;
    }
    // v5 folds scaling into rope_parameters; a rope_type other than 'default' is scaling.
    const p = raw.rope_parameters;
    if (p !== null && typeof p === 'object' && !Array.isArray(p)) {
      const type = (p as Raw).rope_type;
      if (isPresent(type) && type !== 'default') return p;
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

// Every family's spec covers every field, dependencies first; defineConfig's read-back check
// (exercised for all families in the tests) catches a spec that misses one.
const FIELD_ORDER: readonly FieldName[] = FAMILIES.llama.fields.map((f) => f.field);

// ---------------------------------------------------------------------------------------------
// Parse

function isFamily(v: unknown): v is ModelFamily {
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

function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  return JSON.stringify(a) === JSON.stringify(b);
}

function writeConfig(cfg: ModelFields, base: Raw, complete: boolean): Raw {
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

// ---------------------------------------------------------------------------------------------
// Programmatic configs

type Style = Omit<ModelFields, 'family' | 'architecture' | 'vocabSize' | 'hiddenSize' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'intermediateSize' | 'maxPositions' | 'embeddingScale'>;

const ROPE_STYLE = { positions: 'rope', ropeTheta: 10000, rotaryPct: 1, ropeScaling: null, parallelResidual: false } as const;
const NO_BIAS = { qkvBias: false, attentionBias: false, mlpBias: false } as const;
const ALL_BIAS = { qkvBias: true, attentionBias: true, mlpBias: true } as const;

/** Each family's usual choices (transformers' defaults where it has them). */
const FAMILY_STYLE: Readonly<Record<ModelFamily, Style>> = {
  llama: { ...ROPE_STYLE, ...NO_BIAS, norm: 'rmsnorm', normEps: 1e-5, rmsNormAddOne: false, activation: 'silu', gatedMlp: true, tieWordEmbeddings: false },
  gemma: { ...ROPE_STYLE, ...NO_BIAS, norm: 'rmsnorm', normEps: 1e-6, rmsNormAddOne: true, activation: 'gelu_tanh', gatedMlp: true, tieWordEmbeddings: true },
  gpt_neox: {
    ...ROPE_STYLE,
    ...ALL_BIAS,
    rotaryPct: 0.25,
    parallelResidual: true,
    norm: 'layernorm',
    normEps: 1e-5,
    rmsNormAddOne: false,
    activation: 'gelu',
    gatedMlp: false,
    tieWordEmbeddings: false,
  },
  gpt2: {
    ...ALL_BIAS,
    positions: 'learned',
    ropeTheta: 0,
    rotaryPct: 0,
    ropeScaling: null,
    parallelResidual: false,
    norm: 'layernorm',
    normEps: 1e-5,
    rmsNormAddOne: false,
    activation: 'gelu_tanh',
    gatedMlp: false,
    tieWordEmbeddings: true,
  },
};

/**
 * Builds a ModelConfig from a family and overrides, with small per-family defaults
 * (vocab 256, d 64, 4 layers, 4 heads; gemma MQA) and each family's usual choices (norm,
 * activation, biases, tying, positions). Fields derived from others follow the overrides
 * unless given: headDim = hiddenSize / numHeads, numKvHeads = numHeads (gemma: 1),
 * intermediateSize = 4 * hiddenSize (gemma: 8x), gemma's embeddingScale = sqrt(hiddenSize),
 * attentionBias = qkvBias where the family has one attention-bias flag. The result is
 * validated exactly like a parsed file and its raw is the complete config.json; a combination
 * the family cannot express (e.g. gpt2 with rmsnorm) throws RrtError.
 */
export function defineConfig(family: ModelFamily, partial: Partial<Omit<ModelConfig, 'family' | 'raw'>> = {}): ModelConfig {
  if (!isFamily(family)) throw new RrtError(`defineConfig: unknown family ${show(family)}; supported: ${MODEL_FAMILIES.join(', ')}`);
  const source = `defineConfig('${family}')`;
  // Small sizes by default: a model that builds and trains in seconds.
  // An override given as undefined means "use the default", not "unset".
  const given = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined)) as typeof partial;
  const merged: Record<string, unknown> = {
    architecture: SUPPORTED_ARCHITECTURES[family][0],
    vocabSize: 256,
    hiddenSize: 64,
    numLayers: 4,
    numHeads: 4,
    maxPositions: 256,
    embeddingScale: 1,
    ...FAMILY_STYLE[family],
    ...given,
    family,
  };
  const hidden = merged.hiddenSize as number;
  const heads = merged.numHeads as number;
  if (given.headDim === undefined) {
    if (hidden % heads !== 0) {
      throw new RrtError(`${source}: hiddenSize (${hidden}) is not divisible by numHeads (${heads}); give headDim explicitly or change the sizes`);
    }
    merged.headDim = hidden / heads;
  }
  if (given.numKvHeads === undefined) merged.numKvHeads = family === 'gemma' ? 1 : heads;
  if (given.intermediateSize === undefined) merged.intermediateSize = (family === 'gemma' ? 8 : 4) * hidden;
  if (given.embeddingScale === undefined && family === 'gemma') merged.embeddingScale = Math.sqrt(hidden);
  if (given.attentionBias === undefined && family !== 'gpt2') merged.attentionBias = merged.qkvBias;
  const fields = merged as unknown as ModelFields;
  // Write every key explicitly, then read it back: the same validation as a file gets.
  for (const name of FIELD_ORDER) {
    if (fields[name] === undefined) throw new RrtError(`${source}: ${name} is undefined`);
  }
  const raw = writeConfig(fields, {}, true);
  const parsed = parseHfConfig(raw, source);
  for (const name of FIELD_ORDER) {
    if (!sameValue(parsed[name], fields[name])) {
      throw new RrtError(`${source}: ${name} = ${show(fields[name])} does not survive config.json (reads back as ${show(parsed[name])})`);
    }
  }
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// Parameter accounting

/** The logical projections of one block. gpt_neox and gpt2 store q, k, v fused in one matrix. */
export type ProjectionName = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';

export const PROJECTION_NAMES: readonly ProjectionName[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

/** One linear map of a block: W is [dOut x dIn]. */
export interface ProjectionShape {
  readonly name: ProjectionName;
  readonly dIn: number;
  readonly dOut: number;
  readonly bias: boolean;
  readonly group: 'attention' | 'mlp';
  /** The checkpoint's fused module holding it (gpt_neox query_key_value, gpt2 c_attn), or null. */
  readonly fusedIn: string | null;
}

/**
 * The projections of one block, in order q, k, v, o, [gate,] up, down (gate only for gated MLPs).
 * Shapes: q [H*hd x d], k/v [KV*hd x d], o [d x H*hd], gate/up [ff x d], down [d x ff].
 */
export function layerProjections(cfg: ModelConfig): ProjectionShape[] {
  const d = cfg.hiddenSize;
  const qOut = cfg.numHeads * cfg.headDim;
  const kvOut = cfg.numKvHeads * cfg.headDim;
  const ff = cfg.intermediateSize;
  const fused = cfg.family === 'gpt_neox' ? 'query_key_value' : cfg.family === 'gpt2' ? 'c_attn' : null;
  const out: ProjectionShape[] = [
    { name: 'q', dIn: d, dOut: qOut, bias: cfg.qkvBias, group: 'attention', fusedIn: fused },
    { name: 'k', dIn: d, dOut: kvOut, bias: cfg.qkvBias, group: 'attention', fusedIn: fused },
    { name: 'v', dIn: d, dOut: kvOut, bias: cfg.qkvBias, group: 'attention', fusedIn: fused },
    { name: 'o', dIn: qOut, dOut: d, bias: cfg.attentionBias, group: 'attention', fusedIn: null },
  ];
  if (cfg.gatedMlp) out.push({ name: 'gate', dIn: d, dOut: ff, bias: cfg.mlpBias, group: 'mlp', fusedIn: null });
  out.push({ name: 'up', dIn: d, dOut: ff, bias: cfg.mlpBias, group: 'mlp', fusedIn: null });
  out.push({ name: 'down', dIn: ff, dOut: d, bias: cfg.mlpBias, group: 'mlp', fusedIn: null });
  return out;
}

/** Parameters of one block by component (weights plus biases); gate is 0 without a gated MLP. */
export interface LayerParams {
  readonly attnNorm: number;
  readonly q: number;
  readonly k: number;
  readonly v: number;
  readonly o: number;
  readonly mlpNorm: number;
  readonly gate: number;
  readonly up: number;
  readonly down: number;
  readonly total: number;
}

/** Whole-model parameters by component. Tied heads are counted once, in tokenEmbedding. */
export interface ParamBreakdown {
  readonly tokenEmbedding: number;
  /** Learned position table (gpt2); 0 for RoPE. */
  readonly positionEmbedding: number;
  /** All blocks together. */
  readonly layers: number;
  readonly finalNorm: number;
  /** 0 when tied to the token embedding. */
  readonly lmHead: number;
}

export interface ParamCount {
  readonly total: number;
  /** tokenEmbedding + positionEmbedding + lmHead. */
  readonly embedding: number;
  /** total - embedding: the blocks and the final norm. */
  readonly nonEmbedding: number;
  /** One block. */
  readonly perLayer: LayerParams;
  readonly breakdown: ParamBreakdown;
}

/** Parameters of one norm layer: LayerNorm has weight and bias, RMSNorm a weight only. */
export function normParams(cfg: ModelConfig): number {
  return cfg.norm === 'layernorm' ? 2 * cfg.hiddenSize : cfg.hiddenSize;
}

/** Parameters of one block by component. */
export function countLayerParams(cfg: ModelConfig): LayerParams {
  const byName: Record<ProjectionName, number> = { q: 0, k: 0, v: 0, o: 0, gate: 0, up: 0, down: 0 };
  for (const p of layerProjections(cfg)) byName[p.name] = p.dIn * p.dOut + (p.bias ? p.dOut : 0);
  const norm = normParams(cfg);
  const total = 2 * norm + PROJECTION_NAMES.reduce((s, n) => s + byName[n], 0);
  return { attnNorm: norm, mlpNorm: norm, ...byName, total };
}

/**
 * Exact parameter count of the model `cfg` describes.
 *
 * Convention: "embedding" parameters are the token embedding, the learned position table
 * (gpt2's wpe) and an untied LM head; everything else (blocks, final norm) is non-embedding.
 * This matches the paper's non-embedding counts (token embedding and LM head excluded) and
 * Kaplan et al.'s convention of also excluding position embeddings, which are not part of
 * any block and are never looped.
 */
export function countParams(cfg: ModelConfig): ParamCount {
  const perLayer = countLayerParams(cfg);
  const tokenEmbedding = cfg.vocabSize * cfg.hiddenSize;
  const breakdown: ParamBreakdown = {
    tokenEmbedding,
    positionEmbedding: cfg.positions === 'learned' ? cfg.maxPositions * cfg.hiddenSize : 0,
    layers: cfg.numLayers * perLayer.total,
    finalNorm: normParams(cfg),
    lmHead: cfg.tieWordEmbeddings ? 0 : tokenEmbedding,
  };
  const embedding = breakdown.tokenEmbedding + breakdown.positionEmbedding + breakdown.lmHead;
  const nonEmbedding = breakdown.layers + breakdown.finalNorm;
  return { total: embedding + nonEmbedding, embedding, nonEmbedding, perLayer, breakdown };
}
