// @rrt/layers: transformer modules, decoder LMs of four Hugging Face families, checkpoints,
// tokenizers, training and evaluation.

export * from './config.js';
export * from './module.js';
export * from './nn.js';
export * from './rope.js';
export * from './attention.js';
export * from './block.js';
export * from './lm.js';
export * from './checkpoint.js';
export * from './load-bytes.js';
export * from './tokenizers/index.js';
export * from './corpus.js';
export * from './data.js';
export * from './losses.js';
export * from './train.js';
export * from './evaluate.js';
export * from './generate.js';
export * from './default-model.js';
