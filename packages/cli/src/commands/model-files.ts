// Finding and loading what the model commands read and write: a model folder (config.json +
// model.safetensors [+ recursive.json] [+ tokenizer.json]), a tokenizer choice, a text corpus.

import { copyFileSync, existsSync, mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ByteTokenizer, defaultCorpusPath, defaultModelPath, loadPretrained, loadTokenizer, savePretrained, trainBpe, type CausalLM, type Tokenizer } from '@rrt/layers';
import type { Tensor } from '@rrt/tensor';
import type { CommandContext } from '../context.js';
import { UsageError } from '../errors.js';

/** PEFT adapter config file name (as @rrt/lora writes it). */
export const ADAPTER_CONFIG = 'adapter_config.json';

/** The teacher folder `given` loaded as a plain model, refused unless its vocabulary is the student's. */
export function loadTeacher(ctx: CommandContext, given: string, student: CausalLM): CausalLM {
  const teacher = loadPretrained(modelDir(ctx, given, '--teacher'));
  if (teacher.cfg.vocabSize !== student.cfg.vocabSize) {
    teacher.dispose();
    throw new UsageError(`--teacher has a vocabulary of ${teacher.cfg.vocabSize} tokens and the student ${student.cfg.vocabSize}; distillation needs the same vocabulary`);
  }
  return teacher.eval();
}

/**
 * A model folder as given on the command line (`flag` names the option in errors), or the model
 * shipped with @rrt/layers. `pretrained` folders need config.json; other model folders may hold
 * recursive.json instead. Errors say what is wrong with the path in the style of every command:
 * "<flag> <path>: no such folder; ...".
 */
export function modelDir(ctx: CommandContext, given: string | undefined, flag = '--model', kind: 'model' | 'pretrained' = 'model'): string {
  if (given !== undefined) {
    const dir = ctx.resolvePath(given);
    const expected =
      kind === 'pretrained'
        ? 'expected a pretrained model folder (config.json and model.safetensors)'
        : 'expected a model folder (config.json or recursive.json, and model.safetensors), e.g. the --out folder of rrt train';
    if (!existsSync(dir)) throw new UsageError(`${flag} ${given}: no such folder; ${expected}`);
    if (!statSync(dir).isDirectory()) throw new UsageError(`${flag} ${given}: is a file, not a folder; ${expected}`);
    const has = (f: string) => existsSync(join(dir, f));
    if (!has('config.json') && (kind === 'pretrained' || !has('recursive.json'))) {
      throw new UsageError(`${flag} ${given}: the folder has no ${kind === 'pretrained' ? 'config.json' : 'config.json or recursive.json'}; ${expected}`);
    }
    return dir;
  }
  const dir = defaultModelPath();
  if (!existsSync(join(dir, 'config.json'))) {
    throw new UsageError(`no ${flag} given and the default model is not built; pass ${flag} <folder> (e.g. the --out folder of rrt train)`);
  }
  return dir;
}

/** What a model folder held. */
export interface LoadedModel {
  model: CausalLM;
  kind: 'recursive' | 'relaxed' | 'pretrained';
  /** The depth-wise LoRA attached from adapter_config.json, for relaxed folders. */
  adapters: { parameters(): Tensor[]; readonly numParameters: number; mergeDepths(): void; remove(): void } | null;
}

/**
 * Loads a model folder: a recursive checkpoint when it has recursive.json (plus its LoRA
 * adapters when it has adapter_config.json, as `rrt relax` writes), else a Hugging Face one.
 */
export async function loadModel(dir: string): Promise<LoadedModel> {
  const { RECURSIVE_JSON, loadRecursive } = await import('@rrt/recursive');
  if (!existsSync(join(dir, RECURSIVE_JSON))) return { model: loadPretrained(dir), kind: 'pretrained', adapters: null };
  const model = loadRecursive(dir);
  if (!existsSync(join(dir, ADAPTER_CONFIG))) return { model, kind: 'recursive', adapters: null };
  const { loadAdapters } = await import('@rrt/lora');
  return { model, kind: 'relaxed', adapters: loadAdapters(dir, model) };
}

/** A loaded model and its LoRA pairs as one model for the Trainer (the adapters train too). */
export function trainableOf({ model, adapters }: LoadedModel): {
  parameters(): Tensor[];
  namedParameters(): Map<string, Tensor>;
  train(flag?: boolean): unknown;
} {
  const adapterParams: Tensor[] = adapters?.parameters() ?? [];
  return {
    parameters: () => [...model.parameters(), ...adapterParams],
    namedParameters: () => new Map([...model.namedParameters(), ...adapterParams.map((t, i) => [`lora.${i}`, t] as [string, Tensor])]),
    train: (flag?: boolean) => model.train(flag),
  };
}

/**
 * Writes a loaded model to `out` in its own kind (recursive checkpoint or Hugging Face folder,
 * plus its PEFT adapters), with the tokenizer of the folder it came from. Returns whether
 * adapters were written.
 */
export async function saveLoadedModel(loaded: LoadedModel, fromDir: string, out: string): Promise<boolean> {
  const { RecursiveLM, saveRecursive } = await import('@rrt/recursive');
  if (loaded.model instanceof RecursiveLM) saveRecursive(loaded.model, out);
  else savePretrained(loaded.model, out);
  if (loaded.adapters) {
    const { saveAdapters } = await import('@rrt/lora');
    saveAdapters(loaded.adapters as Parameters<typeof saveAdapters>[0], out, { baseModel: out });
  }
  if (existsSync(join(fromDir, 'tokenizer.json')) && fromDir !== out) copyFileSync(join(fromDir, 'tokenizer.json'), join(out, 'tokenizer.json'));
  return loaded.adapters ? existsSync(join(out, ADAPTER_CONFIG)) : false;
}

/** Frees a loaded model and its adapters. */
export function disposeModel(loaded: LoadedModel): void {
  loaded.adapters?.remove();
  loaded.model.dispose();
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
  if (!existsSync(path)) throw new UsageError(`${dir}: the folder has no tokenizer.json; pass --tokenizer <tokenizer.json> or --tokenizer byte`);
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
  if (!existsSync(path)) throw new UsageError(`--tokenizer ${choice}: no such file; expected "byte", "bpe" or a tokenizer.json path`);
  return loadTokenizer(path);
}

/** A corpus path from the command line, or the shipped one (the King James Bible). */
export function corpusPath(ctx: CommandContext, given: string | undefined): string {
  if (given === undefined) return defaultCorpusPath();
  const path = ctx.resolvePath(given);
  if (!existsSync(path)) throw new UsageError(`--data ${given}: no such file; expected a UTF-8 text file`);
  return path;
}

/** Writes JSON through a temporary file and rename, so a crash never leaves half a file. */
export function writeJsonFile(path: string, value: unknown): void {
  mkdirSync(join(path, '..'), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, path);
}
