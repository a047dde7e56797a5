// The normalised model config and its vocabulary: the types config.ts (defineConfig, parameter
// accounting) and hf-config.ts (config.json parsing and writing) both speak.

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
