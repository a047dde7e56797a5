import { FormatError } from '@rrt/tensor';
import { tokenizerFromJSON } from './json.js';
import type { Tokenizer } from './types.js';

/** Writes tok.toJSON() as a tokenizer.json file (Node only). */
export async function saveTokenizer(tok: Tokenizer, path: string): Promise<void> {
  const { writeFile } = await import('node:fs/promises');
  await writeFile(path, JSON.stringify(tok.toJSON(), null, 2) + '\n', 'utf8');
}

/** Reads a tokenizer.json file (ours or an existing Hugging Face one; Node only). */
export async function loadTokenizer(path: string): Promise<Tokenizer> {
  const { readFile } = await import('node:fs/promises');
  const text = await readFile(path, 'utf8');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new FormatError(`${path}: expected a JSON tokenizer.json document, parsing failed: ${(e as Error).message}`);
  }
  try {
    return tokenizerFromJSON(doc);
  } catch (e) {
    if (e instanceof FormatError) throw new FormatError(`${path}: ${e.message}`);
    throw e;
  }
}
