// Every key that real hub checkpoints of the four families carry is honoured or refused by
// name: none is dropped silently.

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FormatError } from '@rrt/tensor';
import { parseHfConfig, toHfConfigFloat32, unrecognizedHfConfigKeys } from './config.js';

// Complete config.json files as published on the hub.
const GPT2 = {
  activation_function: 'gelu_new', architectures: ['GPT2LMHeadModel'], attn_pdrop: 0.1, bos_token_id: 50256, embd_pdrop: 0.1, eos_token_id: 50256,
  initializer_range: 0.02, layer_norm_epsilon: 1e-5, model_type: 'gpt2', n_ctx: 1024, n_embd: 768, n_head: 12, n_layer: 12, n_positions: 1024,
  resid_pdrop: 0.1, summary_activation: null, summary_first_dropout: 0.1, summary_proj_to_labels: true, summary_type: 'cls_index',
  summary_use_proj: true, task_specific_params: { 'text-generation': { do_sample: true, max_length: 50 } }, vocab_size: 50257,
};
const SMOLLM_135M = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 0, eos_token_id: 0, hidden_act: 'silu',
  hidden_size: 576, initializer_range: 0.02, intermediate_size: 1536, is_llama_config: true, max_position_embeddings: 2048, model_type: 'llama',
  num_attention_heads: 9, num_hidden_layers: 30, num_key_value_heads: 3, pretraining_tp: 1, rms_norm_eps: 1e-5, rope_interleaved: false,
  rope_scaling: null, rope_theta: 10000.0, tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.40.1', use_cache: true,
  vocab_size: 49152,
};
const LLAMA_31_8B = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 128000, eos_token_id: 128001,
  hidden_act: 'silu', hidden_size: 4096, initializer_range: 0.02, intermediate_size: 14336, max_position_embeddings: 131072, mlp_bias: false,
  model_type: 'llama', num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 8, pretraining_tp: 1, rms_norm_eps: 1e-5,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0, tie_word_embeddings: false, torch_dtype: 'bfloat16', transformers_version: '4.43.0.dev0', use_cache: true, vocab_size: 128256,
};

const CONFIG_DIR = join(import.meta.dirname, '../../../examples/configs');
const shipped = Object.fromEntries(
  readdirSync(CONFIG_DIR).filter((f) => f.endsWith('.json')).map((f) => [f, JSON.parse(readFileSync(join(CONFIG_DIR, f), 'utf8')) as Record<string, unknown>]),
);

describe('config.json keys of real checkpoints', () => {
  it('reads every shipped example config and the hub configs, knowing every key they carry', () => {
    expect(Object.keys(shipped).sort()).toEqual(['gemma-2b.config.json', 'pythia-1b.config.json', 'tinyllama-1.1b.config.json']);
    for (const [name, json] of [...Object.entries(shipped), ['gpt2', GPT2], ['smollm', SMOLLM_135M], ['llama-3.1', LLAMA_31_8B]] as const) {
      const cfg = parseHfConfig(json, name);
      expect(unrecognizedHfConfigKeys(cfg), name).toEqual([]);
    }
    expect(parseHfConfig(shipped['gemma-2b.config.json']!)).toMatchObject({ headDim: 256, numKvHeads: 1, activation: 'gelu_tanh', tieWordEmbeddings: true });
    expect(parseHfConfig(shipped['pythia-1b.config.json']!)).toMatchObject({ rotaryPct: 0.25, parallelResidual: true, tieWordEmbeddings: false });
    expect(parseHfConfig(LLAMA_31_8B).ropeScaling).toEqual(LLAMA_31_8B.rope_scaling);
  });

  it('honours the keys that change the model', () => {
    const llama = (extra: Record<string, unknown>) => parseHfConfig({ ...SMOLLM_135M, ...extra });
    expect(llama({ attention_bias: true })).toMatchObject({ qkvBias: true, attentionBias: true });
    expect(llama({ mlp_bias: true }).mlpBias).toBe(true);
    expect(llama({ head_dim: 32 }).headDim).toBe(32);
    expect(llama({ rope_theta: 500000 }).ropeTheta).toBe(500000);
    expect(llama({ tie_word_embeddings: false }).tieWordEmbeddings).toBe(false);
    const neox = (extra: Record<string, unknown>) => parseHfConfig({ ...shipped['pythia-1b.config.json'], ...extra });
    expect(neox({ use_parallel_residual: false }).parallelResidual).toBe(false);
    expect(neox({ rotary_pct: 0.5 }).rotaryPct).toBe(0.5);
    expect(neox({ attention_bias: false })).toMatchObject({ qkvBias: false, attentionBias: false });
    // Newer transformers also write rope_theta / partial_rotary_factor / head_dim for gpt_neox: honoured where they agree.
    expect(neox({ rope_theta: 10000, partial_rotary_factor: 0.25, head_dim: 256 }).ropeTheta).toBe(10000);
  });

  it('refuses, by name, values rrt cannot honour', () => {
    const cases: [Record<string, unknown>, Record<string, unknown>, RegExp][] = [
      [SMOLLM_135M, { sliding_window: 4096 }, /key "sliding_window" is 4096, expected null: rrt implements full causal attention/],
      [SMOLLM_135M, { use_sliding_window: true }, /key "use_sliding_window" is true, expected false/],
      [SMOLLM_135M, { partial_rotary_factor: 0.5 }, /key "partial_rotary_factor" is 0.5, expected 1: llama rotates every head dim/],
      [SMOLLM_135M, { rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.5 } }, /key "rope_parameters.partial_rotary_factor" is 0.5/],
      [SMOLLM_135M, { rope_interleaved: true }, /key "rope_interleaved" is true, expected false/],
      [SMOLLM_135M, { torch_dtype: 'int8' }, /key "torch_dtype" is "int8", expected one of "float32", "float16", "bfloat16"/],
      [SMOLLM_135M, { quantization_config: { quant_method: 'gptq', bits: 4 } }, /key "quantization_config" .*quantized checkpoints .* are not supported/],
      [SMOLLM_135M, { attn_logit_softcapping: 50 }, /key "attn_logit_softcapping" is 50, expected null/],
      [SMOLLM_135M, { is_encoder_decoder: true }, /key "is_encoder_decoder" is true, expected false/],
      [SMOLLM_135M, { pruned_heads: { 0: [1] } }, /key "pruned_heads"/],
      [shipped['gemma-2b.config.json']!, { mlp_bias: true }, /key "mlp_bias" is true, expected false: gemma has no MLP biases/],
      [shipped['gemma-2b.config.json']!, { query_pre_attn_scalar: 144 }, /key "query_pre_attn_scalar" is 144, expected 256 \(headDim\)/],
      [shipped['pythia-1b.config.json']!, { head_dim: 128 }, /key "head_dim" is 128, expected 256 \(headDim\)/],
      [shipped['pythia-1b.config.json']!, { rope_theta: 500 }, /key "rope_theta" is 500, expected 10000 \(ropeTheta\): it duplicates rotary_emb_base/],
      [shipped['pythia-1b.config.json']!, { num_key_value_heads: 2 }, /key "num_key_value_heads" is 2, expected 8 \(numKvHeads\)/],
      [shipped['pythia-1b.config.json']!, { mlp_bias: false }, /key "mlp_bias" is false, expected true/],
      [GPT2, { scale_attn_weights: false }, /key "scale_attn_weights" is false, expected true/],
      [GPT2, { scale_attn_by_inverse_layer_idx: true }, /key "scale_attn_by_inverse_layer_idx" is true, expected false/],
      [GPT2, { rope_scaling: { type: 'linear', factor: 2 } }, /key "rope_scaling" .* gpt2 has learned positions/],
      [GPT2, { sliding_window: 256 }, /key "sliding_window" is 256/],
    ];
    for (const [base, extra, message] of cases) {
      const json = { ...base, ...extra };
      expect(() => parseHfConfig(json, 'm/config.json'), JSON.stringify(extra)).toThrow(FormatError);
      expect(() => parseHfConfig(json, 'm/config.json'), JSON.stringify(extra)).toThrow(message);
    }
    // null is transformers' "default" for these keys, which is what rrt implements.
    expect(() => parseHfConfig({ ...SMOLLM_135M, sliding_window: null, attn_logit_softcapping: null })).not.toThrow();
  });

  it('lists keys nobody reads (transformers ignores them too) instead of refusing them', () => {
    const cfg = parseHfConfig({ ...SMOLLM_135M, my_custom_flag: 3 });
    expect(unrecognizedHfConfigKeys(cfg)).toEqual(['my_custom_flag']);
    // Ignored keys are kept for the round trip.
    expect(cfg.raw.my_custom_flag).toBe(3);
  });

  it('writes torch_dtype "float32" for the float32 weights rrt saves', () => {
    expect(toHfConfigFloat32(parseHfConfig(SMOLLM_135M)).torch_dtype).toBe('float32');
    expect(toHfConfigFloat32(parseHfConfig({ ...SMOLLM_135M, dtype: 'bfloat16' })).dtype).toBe('float32');
    expect(toHfConfigFloat32(parseHfConfig(GPT2))).not.toHaveProperty('torch_dtype');
  });
});
