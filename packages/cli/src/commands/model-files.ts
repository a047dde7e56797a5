// Finding and loading what the model commands read and write: a model folder (config.json +
// model.safetensors [+ recursive.json] [+ tokenizer.json]), a tokenizer choice, a text corpus.

import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ByteTokenizer, defaultCorpusPath, defaultModelPath, loadPretrained, loadTokenizer, trainBpe, type CausalLM, type Tokenizer } from '@rrt/layers';
import type { CommandContext } from '../context.js';
import { UsageError } from '../errors.js';

/** A model folder as given on the command line, or the model shipped with @rrt/layers. */
export function modelDir(ctx: CommandContext, given: string | undefined): string {
  if (given !== undefined) {
    const dir = ctx.resolvePath(given);
    if (!existsSync(join(dir, 'config.json')) && !existsSync(join(dir, 'recursive.json'))) {
      throw new UsageError(`--model ${given}: no config.json there; expected a model folder (config.json or recursive.json, and model.safetensors)`);
    }
    return dir;
  }
  const dir = defaultModelPath();
  if (!existsSync(join(dir, 'config.json'))) {
    throw new UsageError('no --model given and the default model is not built; pass --model <folder> (e.g. the --out folder of rrt train)');
  }
  return dir;
}

/** Loads a model folder: a recursive checkpoint when it has recursive.json, else a Hugging Face one. */
export async function loadModel(dir: string): Promise<{ model: CausalLM; kind: 'recursive' | 'pretrained' }> {
  const { RECURSIVE_JSON, loadRecursive } = await import('@rrt/recursive');
  if (existsSync(join(dir, RECURSIVE_JSON))) return { model: loadRecursive(dir), kind: 'recursive' };
  return { model: loadPretrained(dir), kind: 'pretrained' };
}

/**
 * The tokenizer of a model folder: --tokenizer (a tokenizer.json path, or "byte") if given,
 * else the folder's tokenizer.json, else an error saying what to pass.
 */
export async function modelTokenizer(ctx: CommandContext, dir: string, given: string | undefined): Promise<Tokenizer> {
  if (given === 'byte') return new ByteTokenizer();
  if (given !== undefined) {
    const path = ctx.resolvePath(given);
    if (!existsSync(path)) throw new UsageError(`--tokenizer ${given}: no such file; expected a tokenizer.json or "byte"`);
    return loadTokenizer(path);
  }
  const path = join(dir, 'tokenizer.json');
  if (!existsSync(path)) throw new UsageError(`${dir} has no tokenizer.json; pass --tokenizer <tokenizer.json> or --tokenizer byte`);
  return loadTokenizer(path);
}

/**
 * A tokenizer for a new model: "byte" (256 bytes + <|endoftext|>), "bpe" (byte-level BPE of
 * `vocabSize` trained on `text`), or a tokenizer.json path.
 */
export async function newTokenizer(ctx: CommandContext, choice: string, vocabSize: number, text: () => string): Promise<Tokenizer> {
  if (choice === 'byte') return new ByteTokenizer();
  if (choice === 'bpe') return trainBpe(text(), { vocabSize });
  const path = ctx.resolvePath(choice);
  if (!existsSync(path)) throw new UsageError(`--tokenizer ${choice}: expected "byte", "bpe" or a tokenizer.json path; no such file`);
  return loadTokenizer(path);
}

/** A corpus path from the command line, or the shipped one (the King James Bible). */
export function corpusPath(ctx: CommandContext, given: string | undefined): string {
  if (given === undefined) return defaultCorpusPath();
  const path = ctx.resolvePath(given);
  if (!existsSync(path)) throw new UsageError(`--data ${given}: no such file`);
  return path;
}

/** Writes JSON through a temporary file and rename, so a crash never leaves half a file. */
export function writeJsonFile(path: string, value: unknown): void {
  mkdirSync(join(path, '..'), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, path);
}
