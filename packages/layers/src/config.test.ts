import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FormatError, RrtError } from '@rrt/tensor';
import {
  countParams,
  defineConfig,
  layerProjections,
  MODEL_FAMILIES,
  parseHfConfig,
  toHfConfig,
  type ModelConfig,
  type ModelFamily,
} from './config.js';

// Published config.json values (google/gemma-2b, TinyLlama-1.1B, EleutherAI/pythia-1b,
// openai-community/gpt2, HuggingFaceTB/SmolLM-135M), trimmed of keys rrt does not read.
const GEMMA_2B = {
  architectures: ['GemmaForCausalLM'],
  attention_bias: false,
  head_dim: 256,
  hidden_act: 'gelu',
  hidden_size: 2048,
  intermediate_size: 16384,
  max_position_embeddings: 8192,
  model_type: 'gemma',
  num_attention_heads: 8,
  num_hidden_layers: 18,
  num_key_value_heads: 1,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 10000.0,
  vocab_size: 256000,
};
const TINYLLAMA = {
  architectures: ['LlamaForCausalLM'],
  hidden_act: 'silu',
  hidden_size: 2048,
  intermediate_size: 5632,
  max_position_embeddings: 2048,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 22,
  num_key_value_heads: 4,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  vocab_size: 32000,
};
const PYTHIA_1B = {
  architectures: ['GPTNeoXForCausalLM'],
  hidden_act: 'gelu',
  hidden_size: 2048,
  intermediate_size: 8192,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 2048,
  model_type: 'gpt_neox',
  num_attention_heads: 8,
  num_hidden_layers: 16,
  rotary_emb_base: 10000,
  rotary_pct: 0.25,
  tie_word_embeddings: false,
  use_parallel_residual: true,
  vocab_size: 50304,
};
const GPT2_124M = {
  activation_function: 'gelu_new',
  architectures: ['GPT2LMHeadModel'],
  layer_norm_epsilon: 1e-5,
  model_type: 'gpt2',
  n_ctx: 1024,
  n_embd: 768,
  n_head: 12,
  n_inner: null,
  n_layer: 12,
  n_positions: 1024,
  vocab_size: 50257,
};
const SMOLLM_135M = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  hidden_act: 'silu',
  hidden_size: 576,
  intermediate_size: 1536,
  max_position_embeddings: 2048,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 9,
  num_hidden_layers: 30,
  num_key_value_heads: 3,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  tie_word_embeddings: true,
  vocab_size: 49152,
};

const REAL: Record<string, Record<string, unknown>> = {
  'gemma-2b': GEMMA_2B,
  tinyllama: TINYLLAMA,
  'pythia-1b': PYTHIA_1B,
  gpt2: GPT2_124M,
  'smollm-135m': SMOLLM_135M,
};

/** A copy of `base` with `key` set (or deleted when value is undefined). */
function withKey(base: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  const out = { ...base };
  if (value === undefined) delete out[key];
  else out[key] = value;
  return out;
}

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a throw');
}

describe('parseHfConfig', () => {
  it('reads gemma-2b with the family quirks', () => {
    const c = parseHfConfig(GEMMA_2B, 'gemma-2b/config.json');
    expect(c).toMatchObject({
      family: 'gemma',
      architecture: 'GemmaForCausalLM',
      vocabSize: 256000,
      hiddenSize: 2048,
      numLayers: 18,
      numHeads: 8,
      numKvHeads: 1,
      headDim: 256,
      intermediateSize: 16384,
      maxPositions: 8192,
      norm: 'rmsnorm',
      normEps: 1e-6,
      rmsNormAddOne: true,
      // hidden_act "gelu" without hidden_activation means the tanh approximation for Gemma.
      activation: 'gelu_tanh',
      gatedMlp: true,
      positions: 'rope',
      ropeTheta: 10000,
      rotaryPct: 1,
      ropeScaling: null,
      parallelResidual: false,
      qkvBias: false,
      attentionBias: false,
      mlpBias: false,
      tieWordEmbeddings: true,
      embeddingScale: Math.sqrt(2048),
    });
    expect(c.raw).toEqual(GEMMA_2B);
  });

  it('reads TinyLlama (GQA, untied) and SmolLM (tied)', () => {
    const t = parseHfConfig(TINYLLAMA);
    expect(t).toMatchObject({ family: 'llama', numKvHeads: 4, headDim: 64, activation: 'silu', tieWordEmbeddings: false, normEps: 1e-5 });
    expect(t).toMatchObject({ qkvBias: false, attentionBias: false, mlpBias: false, embeddingScale: 1, rmsNormAddOne: false });
    const s = parseHfConfig(SMOLLM_135M);
    expect(s).toMatchObject({ numHeads: 9, numKvHeads: 3, headDim: 64, tieWordEmbeddings: true });
  });

  it('reads Pythia (partial rotary, parallel residual, biases)', () => {
    const c = parseHfConfig(PYTHIA_1B);
    expect(c).toMatchObject({
      family: 'gpt_neox',
      numKvHeads: 8,
      headDim: 256,
      norm: 'layernorm',
      normEps: 1e-5,
      activation: 'gelu',
      gatedMlp: false,
      positions: 'rope',
      ropeTheta: 10000,
      rotaryPct: 0.25,
      parallelResidual: true,
      qkvBias: true,
      attentionBias: true,
      mlpBias: true,
      tieWordEmbeddings: false,
    });
  });

  it('reads GPT-2 aliases (n_*, n_inner null, gelu_new)', () => {
    const c = parseHfConfig(GPT2_124M);
    expect(c).toMatchObject({
      family: 'gpt2',
      architecture: 'GPT2LMHeadModel',
      hiddenSize: 768,
      numLayers: 12,
      numHeads: 12,
      numKvHeads: 12,
      headDim: 64,
      intermediateSize: 3072,
      maxPositions: 1024,
      activation: 'gelu_tanh',
      positions: 'learned',
      ropeTheta: 0,
      rotaryPct: 0,
      tieWordEmbeddings: true,
    });
    expect(parseHfConfig({ ...GPT2_124M, n_inner: 1000 }).intermediateSize).toBe(1000);
    // attribute_map aliases
    const alias = { model_type: 'gpt2', vocab_size: 10, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4 };
    expect(parseHfConfig(alias)).toMatchObject({ hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 1024 });
  });

  it('honours hidden_activation and other gemma activations', () => {
    expect(parseHfConfig({ ...GEMMA_2B, hidden_activation: 'gelu' }).activation).toBe('gelu');
    expect(parseHfConfig({ ...GEMMA_2B, hidden_act: 'gelu_pytorch_tanh' }).activation).toBe('gelu_tanh');
    expect(parseHfConfig(withKey(GEMMA_2B, 'hidden_act', undefined)).activation).toBe('gelu_tanh');
  });

  it('fills transformers defaults for absent optional keys', () => {
    const minimal = { model_type: 'llama', vocab_size: 100, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 128 };
    expect(parseHfConfig(minimal)).toMatchObject({
      architecture: 'LlamaForCausalLM',
      numKvHeads: 4,
      headDim: 16,
      maxPositions: 2048,
      normEps: 1e-6,
      activation: 'silu',
      ropeTheta: 10000,
      tieWordEmbeddings: false,
    });
    const neox = parseHfConfig({ model_type: 'gpt_neox', vocab_size: 100, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 256 });
    expect(neox).toMatchObject({ rotaryPct: 0.25, parallelResidual: true, qkvBias: true, activation: 'gelu' });
    // null means "default" as in transformers
    expect(parseHfConfig({ ...minimal, num_key_value_heads: null }).numKvHeads).toBe(4);
  });

  it('reads the transformers v5 rope_parameters layout', () => {
    const v5 = withKey(
      withKey({ ...PYTHIA_1B, rope_parameters: { rope_type: 'default', rope_theta: 500, partial_rotary_factor: 0.5 } }, 'rotary_pct', undefined),
      'rotary_emb_base',
      undefined,
    );
    expect(parseHfConfig(v5)).toMatchObject({ ropeTheta: 500, rotaryPct: 0.5, ropeScaling: null });
    // Both layouts present: honoured where they agree, refused by name where they do not.
    expect(parseHfConfig({ ...v5, rotary_emb_base: 500 }).ropeTheta).toBe(500);
    expect(() => parseHfConfig({ ...v5, rotary_emb_base: 10000 })).toThrow(
      'config.json: keys "rope_parameters.rope_theta" (500) and "rotary_emb_base" (10000) both give ropeTheta and disagree',
    );
    const llama3 = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    expect(parseHfConfig({ ...TINYLLAMA, rope_scaling: llama3 }).ropeScaling).toEqual(llama3);
  });

  it('infers the family from architectures when model_type is absent', () => {
    expect(parseHfConfig(withKey(GPT2_124M, 'model_type', undefined)).family).toBe('gpt2');
  });

  it('keeps a deep copy of the input as raw', () => {
    const input = structuredClone(TINYLLAMA) as Record<string, unknown>;
    const c = parseHfConfig(input);
    input.hidden_size = 1;
    expect(c.raw.hidden_size).toBe(2048);
  });
});

describe('parseHfConfig errors', () => {
  it('rejects unknown model types, naming file, key and the supported ones', () => {
    const e = errorOf(() => parseHfConfig({ ...TINYLLAMA, model_type: 'mistral' }, 'models/x/config.json'));
    expect(e).toBeInstanceOf(FormatError);
    expect(e.message).toContain('models/x/config.json');
    expect(e.message).toContain('"model_type"');
    expect(e.message).toContain('"mistral"');
    for (const f of MODEL_FAMILIES) expect(e.message).toContain(f);
    expect(e.message).toContain('GPT2LMHeadModel');
  });

  it('rejects an architecture that does not match the model type', () => {
    const e = errorOf(() => parseHfConfig({ ...TINYLLAMA, architectures: ['MistralForCausalLM'] }, 'c.json'));
    expect(e).toBeInstanceOf(FormatError);
    expect(e.message).toMatch(/c\.json: key "architectures": expected one of LlamaForCausalLM for model_type "llama", found \["MistralForCausalLM"\]/);
    expect(() => parseHfConfig({ ...TINYLLAMA, architectures: 'LlamaForCausalLM' })).toThrow(/"architectures": expected an array/);
  });

  it('rejects a config with neither model_type nor a supported class', () => {
    expect(() => parseHfConfig({ vocab_size: 3 }, 'a.json')).toThrow(/a\.json: missing key "model_type"/);
    expect(() => parseHfConfig([1, 2])).toThrow(FormatError);
    expect(() => parseHfConfig(null)).toThrow(/expected a JSON object/);
  });

  it('names a missing required key', () => {
    const e = errorOf(() => parseHfConfig(withKey(TINYLLAMA, 'hidden_size', undefined), 'tiny.json'));
    expect(e).toBeInstanceOf(FormatError);
    expect(e.message).toBe('tiny.json: missing required key "hidden_size" (hiddenSize); expected a positive integer');
    expect(() => parseHfConfig(withKey(GPT2_124M, 'n_embd', undefined))).toThrow(/missing required key "n_embd"/);
    expect(() => parseHfConfig(withKey(PYTHIA_1B, 'intermediate_size', undefined))).toThrow(/"intermediate_size"/);
  });

  it.each([
    ['a string', '2048'],
    ['NaN', Number.NaN],
    ['negative', -2048],
    ['zero', 0],
    ['non-integer', 2048.5],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['null for a required key', null],
  ])('rejects hidden_size as %s', (_what, value) => {
    const e = errorOf(() => parseHfConfig({ ...TINYLLAMA, hidden_size: value }, 'tiny.json'));
    expect(e).toBeInstanceOf(FormatError);
    expect(e.message).toContain('tiny.json');
    expect(e.message).toContain('hidden_size');
  });

  it('rejects wrongly typed optional keys', () => {
    expect(() => parseHfConfig({ ...TINYLLAMA, tie_word_embeddings: 'false' })).toThrow(/"tie_word_embeddings" \(tieWordEmbeddings\): expected true or false, found "false"/);
    expect(() => parseHfConfig({ ...TINYLLAMA, rms_norm_eps: -1 })).toThrow(/"rms_norm_eps"/);
    expect(() => parseHfConfig({ ...PYTHIA_1B, rotary_pct: 1.5 })).toThrow(/"rotary_pct" \(rotaryPct\): expected a number in \(0, 1\]/);
    expect(() => parseHfConfig({ ...TINYLLAMA, hidden_act: 'quick_gelu' })).toThrow(/"hidden_act": expected one of .*"silu".*found "quick_gelu"/);
    expect(() => parseHfConfig({ ...TINYLLAMA, rope_scaling: 3 })).toThrow(/"rope_scaling": expected an object or null/);
    expect(() => parseHfConfig({ ...GPT2_124M, n_inner: 10.5 })).toThrow(/"n_inner"/);
  });

  it('rejects a hidden size not divisible by the heads where head_dim is derived', () => {
    expect(() => parseHfConfig({ ...GPT2_124M, n_head: 7 }, 'g.json')).toThrow(/g\.json: "n_embd" \(768\) must be divisible by "n_head" \(7\)/);
    expect(() => parseHfConfig({ ...PYTHIA_1B, num_attention_heads: 3 })).toThrow(/"hidden_size" \(2048\) must be divisible by "num_attention_heads" \(3\)/);
    expect(() => parseHfConfig({ ...TINYLLAMA, num_attention_heads: 30, num_key_value_heads: 30 })).toThrow(/divisible/);
    // An explicit head_dim does not need hidden = heads * head_dim (Gemma 7B: 3072 = 16 x 192, head_dim 256).
    expect(parseHfConfig({ ...GEMMA_2B, hidden_size: 3072, num_attention_heads: 16, num_key_value_heads: 16 }).headDim).toBe(256);
  });

  it('rejects query heads that key/value heads do not divide', () => {
    expect(() => parseHfConfig({ ...TINYLLAMA, num_key_value_heads: 5 })).toThrow(
      /"num_attention_heads" \(32\) must be a multiple of "num_key_value_heads" \(5\)/,
    );
  });

  it('rejects a rotary fraction that leaves an odd number of dims', () => {
    expect(() => parseHfConfig({ ...PYTHIA_1B, rotary_pct: 0.001 })).toThrow(/RoPE would rotate 0 of 256/);
  });
});

describe('toHfConfig', () => {
  it.each(Object.entries(REAL))('writes %s back unchanged and round-trips exactly', (_name, json) => {
    const cfg = parseHfConfig(json);
    expect(toHfConfig(cfg)).toEqual(json);
    expect(parseHfConfig(toHfConfig(cfg))).toEqual(cfg);
  });

  it('rewrites only the keys whose values changed, in the key the file used', () => {
    const cfg = parseHfConfig(GPT2_124M);
    const out = toHfConfig({ ...cfg, numLayers: 6, intermediateSize: 1024, tieWordEmbeddings: false });
    expect(out).toEqual({ ...GPT2_124M, n_layer: 6, n_inner: 1024, tie_word_embeddings: false });
    const pythia = toHfConfig({ ...parseHfConfig(PYTHIA_1B), ropeTheta: 20000, rotaryPct: 0.5 });
    expect(pythia).toEqual({ ...PYTHIA_1B, rotary_emb_base: 20000, rotary_pct: 0.5 });
    const gemma = toHfConfig({ ...parseHfConfig(GEMMA_2B), activation: 'gelu' });
    expect(gemma).toMatchObject({ hidden_act: 'gelu', hidden_activation: 'gelu' });
    expect(parseHfConfig(gemma).activation).toBe('gelu');
  });

  it('updates the fields a change derives (gpt2 head size from n_embd)', () => {
    const cfg = parseHfConfig(GPT2_124M);
    const back = parseHfConfig(toHfConfig({ ...cfg, hiddenSize: 384, headDim: 32, intermediateSize: 1536 }));
    expect(back).toMatchObject({ hiddenSize: 384, headDim: 32, intermediateSize: 1536 });
  });

  it('refuses values the family cannot express', () => {
    const gpt2 = parseHfConfig(GPT2_124M);
    const e = errorOf(() => toHfConfig({ ...gpt2, mlpBias: false }));
    expect(e).toBeInstanceOf(RrtError);
    expect(e.message).toBe('toHfConfig: a gpt2 config.json cannot express mlpBias = false; for gpt2 it is always true');
    expect(() => toHfConfig({ ...parseHfConfig(TINYLLAMA), norm: 'layernorm' })).toThrow(/cannot express norm/);
    expect(() => toHfConfig({ ...parseHfConfig(PYTHIA_1B), numKvHeads: 1 })).toThrow(/cannot express numKvHeads = 1/);
    expect(() => toHfConfig({ ...parseHfConfig(GEMMA_2B), embeddingScale: 1 })).toThrow(/embeddingScale/);
    expect(() => toHfConfig({ ...gpt2, architecture: 'LlamaForCausalLM' })).toThrow(/not a gpt2 class/);
  });

  it('writes a complete config when the family changes', () => {
    const llama = defineConfig('llama');
    const asGemma = { ...llama, family: 'gemma' as const, architecture: 'GemmaForCausalLM', rmsNormAddOne: true, embeddingScale: 8, tieWordEmbeddings: true, activation: 'gelu_tanh' as const };
    const out = toHfConfig(asGemma);
    expect(out.model_type).toBe('gemma');
    expect(parseHfConfig(out)).toMatchObject({ family: 'gemma', hiddenSize: 64, numKvHeads: 4 });
  });
});

describe('defineConfig', () => {
  it('gives small per-family defaults', () => {
    const l = defineConfig('llama');
    expect(l).toMatchObject({ family: 'llama', vocabSize: 256, hiddenSize: 64, numLayers: 4, numHeads: 4, numKvHeads: 4, headDim: 16, intermediateSize: 256 });
    expect(defineConfig('gemma')).toMatchObject({ numKvHeads: 1, intermediateSize: 512, embeddingScale: 8, rmsNormAddOne: true, tieWordEmbeddings: true });
    expect(defineConfig('gpt_neox')).toMatchObject({ rotaryPct: 0.25, parallelResidual: true, norm: 'layernorm', gatedMlp: false });
    expect(defineConfig('gpt2')).toMatchObject({ positions: 'learned', intermediateSize: 256, activation: 'gelu_tanh' });
  });

  it('derives dependent fields from the overrides', () => {
    const c = defineConfig('gemma', { hiddenSize: 128, numHeads: 2 });
    expect(c).toMatchObject({ headDim: 64, intermediateSize: 1024, embeddingScale: Math.sqrt(128), numKvHeads: 1 });
    expect(defineConfig('llama', { qkvBias: true })).toMatchObject({ qkvBias: true, attentionBias: true });
    expect(defineConfig('llama', { hiddenSize: undefined })).toMatchObject({ hiddenSize: 64 });
  });

  it('stores a complete config.json as raw and round-trips', () => {
    for (const family of MODEL_FAMILIES) {
      const c = defineConfig(family, { numLayers: 3 });
      expect(c.raw.model_type).toBe(family);
      expect(toHfConfig(c)).toEqual(c.raw);
      expect(parseHfConfig(toHfConfig(c))).toEqual(c);
    }
    expect(defineConfig('llama').raw).toMatchObject({ hidden_size: 64, head_dim: 16, attention_bias: false, mlp_bias: false, rope_theta: 10000 });
    expect(defineConfig('gpt2').raw).toMatchObject({ n_embd: 64, n_inner: 256, activation_function: 'gelu_new' });
  });

  it('validates like a file and refuses what the family cannot express', () => {
    expect(() => defineConfig('llama', { hiddenSize: 65 })).toThrow(/hiddenSize \(65\) is not divisible by numHeads \(4\)/);
    expect(() => defineConfig('llama', { numLayers: -1 })).toThrow(/"num_hidden_layers" \(numLayers\): expected a positive integer, found -1/);
    expect(() => defineConfig('gpt2', { norm: 'rmsnorm' })).toThrow(RrtError);
    expect(() => defineConfig('gemma', { mlpBias: true })).toThrow(/cannot express mlpBias/);
    expect(() => defineConfig('llama', { numKvHeads: 3 })).toThrow(/multiple of "num_key_value_heads"/);
    expect(() => defineConfig('bert' as ModelFamily)).toThrow(/unknown family "bert"/);
  });

  it('round-trips random valid configs (property)', () => {
    const arb = fc.record({
      family: fc.constantFrom<ModelFamily>(...MODEL_FAMILIES),
      headDim: fc.constantFrom(8, 16, 32),
      numKvHeads: fc.integer({ min: 1, max: 4 }),
      group: fc.integer({ min: 1, max: 3 }),
      numLayers: fc.integer({ min: 1, max: 40 }),
      vocabSize: fc.integer({ min: 1, max: 70000 }),
      intermediateSize: fc.integer({ min: 1, max: 5000 }),
      tie: fc.boolean(),
      bias: fc.boolean(),
      eps: fc.double({ min: 1e-8, max: 1e-2, noNaN: true }),
    });
    fc.assert(
      fc.property(arb, (a) => {
        const mha = a.family === 'gpt_neox' || a.family === 'gpt2';
        const kv = mha ? a.numKvHeads * a.group : a.numKvHeads;
        const heads = a.numKvHeads * a.group;
        const partial: Partial<ModelConfig> = {
          numHeads: heads,
          numKvHeads: kv,
          hiddenSize: heads * a.headDim,
          numLayers: a.numLayers,
          vocabSize: a.vocabSize,
          intermediateSize: a.intermediateSize,
          tieWordEmbeddings: a.tie,
          normEps: a.eps,
          ...(a.family === 'llama' || a.family === 'gpt_neox' ? { qkvBias: a.bias } : {}),
        };
        const c = defineConfig(a.family, partial);
        expect(parseHfConfig(JSON.parse(JSON.stringify(toHfConfig(c))))).toEqual(c);
        const p = countParams(c);
        expect(p.total).toBe(p.embedding + p.nonEmbedding);
        expect(p.nonEmbedding).toBe(c.numLayers * p.perLayer.total + p.breakdown.finalNorm);
      }),
      { numRuns: 200 },
    );
  });
});

describe('countParams', () => {
  // Totals as transformers reports them (num_parameters) for the published checkpoints.
  it.each([
    ['gemma-2b', GEMMA_2B, 2_506_172_416, 524_288_000],
    ['tinyllama', TINYLLAMA, 1_100_048_384, 131_072_000],
    ['pythia-1b', PYTHIA_1B, 1_011_781_632, 206_045_184],
    ['smollm-135m', SMOLLM_135M, 134_515_008, 28_311_552],
    // GPT-2 small: 124,439,808 incl. the 1024 x 768 position table, head tied.
    ['gpt2', GPT2_124M, 124_439_808, 38_597_376 + 786_432],
  ])('%s: total and embedding are exact', (_name, json, total, embedding) => {
    const p = countParams(parseHfConfig(json));
    expect(p.total).toBe(total);
    expect(p.embedding).toBe(embedding);
    expect(p.nonEmbedding).toBe(total - embedding);
  });

  it('gemma-2b non-embedding is 1,981,884,416 (the Gemma report\'s figure)', () => {
    expect(countParams(parseHfConfig(GEMMA_2B)).nonEmbedding).toBe(1_981_884_416);
  });

  it('breaks one block down by component', () => {
    const p = countParams(parseHfConfig(TINYLLAMA)).perLayer;
    expect(p).toEqual({
      attnNorm: 2048,
      q: 2048 * 2048,
      k: 2048 * 256,
      v: 2048 * 256,
      o: 2048 * 2048,
      mlpNorm: 2048,
      gate: 2048 * 5632,
      up: 2048 * 5632,
      down: 5632 * 2048,
      total: 44_044_288,
    });
    const neox = countParams(parseHfConfig(PYTHIA_1B)).perLayer;
    // Fused query_key_value split into its q, k, v thirds, each with its bias.
    expect(neox).toMatchObject({ attnNorm: 4096, q: 2048 * 2048 + 2048, k: 2048 * 2048 + 2048, o: 2048 * 2048 + 2048, gate: 0, up: 2048 * 8192 + 8192, down: 8192 * 2048 + 2048 });
  });

  it('counts an untied head and learned positions as embedding', () => {
    const tied = countParams(defineConfig('gpt2'));
    expect(tied.breakdown).toMatchObject({ tokenEmbedding: 256 * 64, positionEmbedding: 256 * 64, lmHead: 0, finalNorm: 128 });
    const untied = countParams(defineConfig('gpt2', { tieWordEmbeddings: false }));
    expect(untied.embedding - tied.embedding).toBe(256 * 64);
    expect(untied.nonEmbedding).toBe(tied.nonEmbedding);
  });

  it('counts biases where the flags say', () => {
    const plain = countParams(defineConfig('llama')).perLayer;
    const biased = countParams(defineConfig('llama', { qkvBias: true, mlpBias: true })).perLayer;
    // q 64 + k 64 + v 64 + o 64 + gate 256 + up 256 + down 64
    expect(biased.total - plain.total).toBe(64 * 4 + 256 * 2 + 64);
  });

  it('layerProjections lists the shapes behind the counts', () => {
    const shapes = layerProjections(parseHfConfig(GEMMA_2B));
    expect(shapes.map((s) => [s.name, s.dIn, s.dOut, s.group])).toEqual([
      ['q', 2048, 2048, 'attention'],
      ['k', 2048, 256, 'attention'],
      ['v', 2048, 256, 'attention'],
      ['o', 2048, 2048, 'attention'],
      ['gate', 2048, 16384, 'mlp'],
      ['up', 2048, 16384, 'mlp'],
      ['down', 16384, 2048, 'mlp'],
    ]);
    expect(layerProjections(parseHfConfig(PYTHIA_1B)).map((s) => s.fusedIn)).toEqual(['query_key_value', 'query_key_value', 'query_key_value', null, null, null]);
  });
});
