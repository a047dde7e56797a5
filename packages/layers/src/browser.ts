// @rrt/layers in a browser bundle (the "browser" export condition): the Node entry (index.ts)
// without what reads or writes files. A page fetches config.json, model.safetensors and
// tokenizer.json itself and builds the model with loadPretrainedFromBytes() and
// tokenizerFromJSON(). Node-only, so not here: checkpoint folders (loadPretrained,
// savePretrained, CheckpointReader), the shipped model and corpus paths, token caches, file data
// loaders and the corpus split (data.ts, corpus.ts), the Trainer (checkpoints to disk), tokenizer
// files (loadTokenizer, saveTokenizer) and BPE training (its module also reads files).

export * from './config.js';
export * from './module.js';
export * from './nn.js';
export * from './attention.js';
export * from './block.js';
export * from './lm.js';
export { hfName, isTransposedInCheckpoint, hfNamedParameters, loadWeights, type TensorSource } from './checkpoint-core.js';
export * from './load-bytes.js';
export type { Tokenizer, AddedTokenJSON } from './tokenizers/types.js';
export { ByteTokenizer } from './tokenizers/byte.js';
export { BpeTokenizer, type BpeInit, type AddedToken } from './tokenizers/bpe.js';
export { tokenizerFromJSON } from './tokenizers/json.js';
export { HfTokenizer } from './tokenizers/hf.js';
export { checkRegex } from './tokenizers/regex-guard.js';
export { GPT2_PATTERN } from './tokenizers/pretokenize.js';
export { BYTE_TO_CHAR } from './tokenizers/bytes.js';
export type { Batch, DataSource } from './data.js';
export type { Trainable, ScheduleSpec, StepInfo } from './train.js';
export * from './losses.js';
export * from './evaluate.js';
export * from './generate.js';
