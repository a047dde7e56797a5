import { FormatError, RrtError } from '@rrt/tensor';
import { BpeTokenizer, MAX_VOCAB, defineOwn, type AddedToken } from './bpe.js';
import { BYTE_TO_CHAR, symbolsToBytes } from './bytes.js';
import { ByteTokenizer } from './byte.js';
import { HfTokenizer } from './hf.js';
import { checkRegex } from './regex-guard.js';
import type { Tokenizer } from './types.js';

const MAX_ADDED = 1 << 16;
const MAX_TOKEN_LENGTH = 1 << 12;
const MAX_COMPONENT_DEPTH = 8;
const MAX_SEQUENCE = 64;

type Json = Record<string, unknown>;

/**
 * Builds a tokenizer from a parsed Hugging Face tokenizer.json document (no fs).
 *
 * Byte-level BPE documents (GPT-2 shape: no normalizer, ByteLevel pre-tokenizer and decoder,
 * all 256 byte tokens) load into our BpeTokenizer, which is what saveTokenizer writes. Other
 * BPE documents (Llama/TinyLlama/Gemma: metaspace normalizers, byte fallback, Pythia's NFC,
 * Llama 3's Split regex) run on @huggingface/tokenizers after being validated here; the library
 * only ever sees a copy rebuilt from checked fields. Anything malformed or outside that scope
 * throws FormatError naming the field; nothing in the document is evaluated, and regexes must pass
 * checkRegex before they are compiled.
 */
export function tokenizerFromJSON(doc: unknown): Tokenizer {
  try {
    return load(doc);
  } catch (e) {
    if (e instanceof RrtError) throw e;
    // Last line of defence: an input shape this validator did not foresee (or a throwing getter).
    throw new FormatError(`tokenizer.json: expected a valid document, reading it failed with ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
}

interface Model {
  vocab: Map<string, number>;
  merges: [string, string][];
  legacyMerges: boolean;
  unkToken: string | null;
  fuseUnk: boolean;
  byteFallback: boolean;
  ignoreMerges: boolean;
}

interface Added extends AddedToken {
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
}

function load(doc: unknown): Tokenizer {
  const root = obj(doc, 'tokenizer.json');
  const model = parseModel(root.model);
  const added = parseAdded(root.added_tokens);
  const normalizer = parseNormalizer(root.normalizer, 'normalizer', 0);
  const preTokenizer = parsePreTokenizer(root.pre_tokenizer, 'pre_tokenizer', 0);
  const decoder = parseDecoder(root.decoder, 'decoder', 0);
  const postProcessor = parsePostProcessor(root.post_processor);

  for (const t of added) {
    if (t.singleWord) throw new FormatError(`added_tokens: token ${JSON.stringify(t.content)} has single_word: true, which is not supported`);
  }

  const own = byteLevelShape(model, added, normalizer, preTokenizer, decoder);
  if (own !== null) {
    const isBytes =
      model.merges.length === 0 &&
      model.vocab.size === 256 &&
      BYTE_TO_CHAR.every((c, b) => model.vocab.get(c) === b) &&
      added.every((t, i) => t.special && t.id === 256 + i) &&
      !own.addPrefixSpace;
    if (isBytes) return new ByteTokenizer(added.map((t) => t.content));
    return new BpeTokenizer({ vocab: model.vocab, merges: model.merges, addedTokens: added, ...own });
  }

  // The model looks unk up in its own vocabulary (added tokens do not count), as in the Rust reader.
  if (model.unkToken !== null && !model.vocab.has(model.unkToken)) {
    fail('model.unk_token', 'a token of model.vocab', new Found(`${JSON.stringify(model.unkToken)}, which is not in it`));
  }
  checkMetaspaceSplit(preTokenizer, model);

  const vocab: Record<string, number> = {};
  for (const [tok, id] of model.vocab) defineOwn(vocab, tok, id);
  const sanitized = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added.map((t) => ({
      id: t.id,
      content: t.content,
      single_word: false,
      lstrip: t.lstrip,
      rstrip: t.rstrip,
      normalized: t.normalized,
      special: t.special,
    })),
    normalizer,
    pre_tokenizer: preTokenizer,
    post_processor: null as unknown,
    decoder,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: model.unkToken,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: model.fuseUnk,
      byte_fallback: model.byteFallback,
      ignore_merges: model.ignoreMerges,
      vocab,
      merges: model.merges.map(([a, b]) => [a, b]),
    },
  };
  const forFile = {
    ...sanitized,
    post_processor: postProcessor,
    model: { ...sanitized.model, merges: model.legacyMerges ? model.merges.map(([a, b]) => `${a} ${b}`) : sanitized.model.merges },
  };
  return new HfTokenizer(sanitized, forFile, added);
}

/** ByteLevel options when the document is plain byte-level BPE that BpeTokenizer runs exactly, else null. */
function byteLevelShape(
  model: Model,
  added: readonly Added[],
  normalizer: Json | null,
  pre: Json | null,
  decoder: Json | null,
): { addPrefixSpace: boolean; useRegex: boolean } | null {
  if (normalizer !== null || pre === null || pre.type !== 'ByteLevel' || decoder === null || decoder.type !== 'ByteLevel') return null;
  if (model.unkToken !== null || model.byteFallback || model.ignoreMerges) return null;
  if (added.some((t) => t.lstrip || t.rstrip)) return null;
  for (const c of BYTE_TO_CHAR) if (!model.vocab.has(c)) return null;
  for (const tok of model.vocab.keys()) if (tok.length === 0 || symbolsToBytes(tok) === null) return null;
  return { addPrefixSpace: pre.add_prefix_space === true, useRegex: pre.use_regex !== false };
}

/**
 * Metaspace with split: true cuts words before each '▁'; the JS library does not, which only
 * matters when some merge can join across a '▁'.
 */
function checkMetaspaceSplit(pre: Json | null, model: Model): void {
  const splitting: string[] = [];
  const visit = (p: Json | null) => {
    if (p === null) return;
    if (p.type === 'Sequence') (p.pretokenizers as Json[]).forEach(visit);
    if (p.type === 'Metaspace' && p.split === true) splitting.push(p.replacement as string);
  };
  visit(pre);
  for (const r of splitting) {
    for (const tok of model.vocab.keys()) {
      if (tok.indexOf(r, 1) > 0) {
        throw new FormatError(`pre_tokenizer: Metaspace with split: true and vocabulary token ${JSON.stringify(tok)} that has ${JSON.stringify(r)} after its start is not supported`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Field readers: each says what was expected, what was found, and where.

/** A found-clause given as words rather than as a value. */
class Found {
  constructor(readonly text: string) {}
}

function describe(v: unknown): string {
  if (v instanceof Found) return v.text;
  if (v === null) return 'null';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'number' || typeof v === 'boolean') return `${typeof v} ${String(v)}`;
  return `a ${typeof v}`;
}

function fail(where: string, expected: string, found: unknown): never {
  throw new FormatError(`tokenizer.json ${where}: expected ${expected}, found ${describe(found)}`);
}

function obj(v: unknown, where: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'an object', v);
  return v as Json;
}

function optObj(v: unknown, where: string): Json | null {
  return v === null || v === undefined ? null : obj(v, where);
}

function str(v: unknown, where: string, maxLength = MAX_TOKEN_LENGTH): string {
  if (typeof v !== 'string') fail(where, 'a string', v);
  if (v.length > maxLength) fail(where, `a string of at most ${maxLength} characters`, new Found(`${v.length} characters`));
  return v;
}

function optStr(v: unknown, where: string): string | null {
  return v === null || v === undefined ? null : str(v, where);
}

function bool(v: unknown, where: string, dflt: boolean): boolean {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') fail(where, 'true or false', v);
  return v;
}

function int(v: unknown, where: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) fail(where, `an integer in ${lo}..${hi}`, v);
  return v;
}

function arr(v: unknown, where: string, maxLength: number): unknown[] {
  if (!Array.isArray(v)) fail(where, 'an array', v);
  if (v.length > maxLength) fail(where, `at most ${maxLength} entries`, v);
  return v;
}

function oneOf<T extends string>(v: unknown, where: string, options: readonly T[]): T {
  if (typeof v !== 'string' || !options.includes(v as T)) fail(where, `one of ${options.join(', ')}`, v);
  return v as T;
}

/** A single character (one code point). */
function char(v: unknown, where: string): string {
  const s = str(v, where);
  if ([...s].length !== 1) fail(where, 'a single character', s);
  return s;
}

function parseModel(v: unknown): Model {
  const m = obj(v, 'model');
  const type = m.type;
  if (type !== undefined && type !== 'BPE') fail('model.type', '"BPE" (the only model supported)', type);
  const vocabObj = obj(m.vocab, 'model.vocab');
  const vocab = new Map<string, number>();
  const seen = new Map<number, string>();
  const entries = Object.entries(vocabObj);
  if (entries.length > MAX_VOCAB) fail('model.vocab', `at most ${MAX_VOCAB} entries`, new Found(`${entries.length} entries`));
  for (const [tok, id] of entries) {
    const where = `model.vocab[${JSON.stringify(tok.slice(0, 40))}]`;
    str(tok, where);
    int(id, where, 0, MAX_VOCAB - 1);
    const other = seen.get(id as number);
    if (other !== undefined) fail(where, `a distinct id (${JSON.stringify(other)} already has it)`, id);
    seen.set(id as number, tok);
    vocab.set(tok, id as number);
  }
  const rawMerges = arr(m.merges ?? [], 'model.merges', MAX_VOCAB);
  const merges: [string, string][] = [];
  let legacyMerges = rawMerges.length > 0;
  rawMerges.forEach((x, i) => {
    const where = `model.merges[${i}]`;
    let pair: [string, string];
    if (typeof x === 'string') {
      const parts = x.split(' ');
      if (parts.length !== 2 || parts[0] === '' || parts[1] === '') fail(where, 'two tokens separated by one space', x);
      pair = [parts[0]!, parts[1]!];
    } else if (Array.isArray(x)) {
      legacyMerges = false;
      if (x.length !== 2) fail(where, 'a pair of token strings', x);
      pair = [str(x[0], `${where}[0]`), str(x[1], `${where}[1]`)];
    } else {
      fail(where, 'a "a b" string or a [a, b] pair', x);
    }
    for (const t of [pair[0], pair[1], pair[0] + pair[1]]) {
      if (!vocab.has(t)) fail(where, `tokens of model.vocab (merging ${JSON.stringify(pair[0])} and ${JSON.stringify(pair[1])})`, new Found(`${JSON.stringify(t)} missing from it`));
    }
    merges.push(pair);
  });
  const dropout = m.dropout;
  if (dropout !== undefined && dropout !== null && dropout !== 0) fail('model.dropout', 'null (BPE dropout is not supported)', dropout);
  for (const field of ['continuing_subword_prefix', 'end_of_word_suffix']) {
    const s = optStr(m[field], `model.${field}`);
    if (s !== null && s !== '') fail(`model.${field}`, 'null or "" (affixes are not supported)', s);
  }
  return {
    vocab,
    merges,
    legacyMerges,
    unkToken: optStr(m.unk_token, 'model.unk_token'),
    fuseUnk: bool(m.fuse_unk, 'model.fuse_unk', false),
    byteFallback: bool(m.byte_fallback, 'model.byte_fallback', false),
    ignoreMerges: bool(m.ignore_merges, 'model.ignore_merges', false),
  };
}

function parseAdded(v: unknown): Added[] {
  if (v === undefined || v === null) return [];
  const list = arr(v, 'added_tokens', MAX_ADDED);
  const byContent = new Map<string, number>();
  return list.map((x, i) => {
    const where = `added_tokens[${i}]`;
    const t = obj(x, where);
    const content = str(t.content, `${where}.content`);
    if (content.length === 0) fail(`${where}.content`, 'a non-empty string', content);
    const id = int(t.id, `${where}.id`, 0, MAX_VOCAB - 1);
    const prior = byContent.get(content);
    if (prior !== undefined && prior !== id) fail(`${where}.id`, `${prior}, the id given earlier for ${JSON.stringify(content)}`, id);
    byContent.set(content, id);
    const special = bool(t.special, `${where}.special`, false);
    return {
      id,
      content,
      special,
      singleWord: bool(t.single_word, `${where}.single_word`, false),
      lstrip: bool(t.lstrip, `${where}.lstrip`, false),
      rstrip: bool(t.rstrip, `${where}.rstrip`, false),
      normalized: bool(t.normalized, `${where}.normalized`, !special),
    };
  });
}

/** {String: s} or {Regex: r}; regexes must pass checkRegex. */
function parsePattern(v: unknown, where: string): Json {
  const p = obj(v, where);
  if (typeof p.String === 'string' && p.Regex === undefined) {
    if (p.String.length === 0) fail(`${where}.String`, 'a non-empty string', p.String);
    return { String: str(p.String, `${where}.String`) };
  }
  if (typeof p.Regex === 'string' && p.String === undefined) {
    checkRegex(p.Regex, `tokenizer.json ${where}.Regex`);
    return { Regex: p.Regex };
  }
  fail(where, 'an object with one string field, String or Regex', v);
}

function sequence(v: unknown, where: string): unknown[] {
  return arr(v, where, MAX_SEQUENCE);
}

function depthCheck(depth: number, where: string): void {
  if (depth > MAX_COMPONENT_DEPTH) throw new FormatError(`tokenizer.json ${where}: expected Sequence nesting of at most ${MAX_COMPONENT_DEPTH}, found deeper`);
}

const NORMALIZERS = ['NFC', 'NFD', 'NFKC', 'NFKD', 'Lowercase', 'StripAccents', 'Strip', 'Replace', 'Prepend', 'Sequence'] as const;

function parseNormalizer(v: unknown, where: string, depth: number): Json | null {
  depthCheck(depth, where);
  const n = optObj(v, where);
  if (n === null) return null;
  const type = oneOf(n.type, `${where}.type`, NORMALIZERS);
  switch (type) {
    case 'Strip':
      return { type, strip_left: bool(n.strip_left, `${where}.strip_left`, false), strip_right: bool(n.strip_right, `${where}.strip_right`, false) };
    case 'Replace':
      return { type, pattern: parsePattern(n.pattern, `${where}.pattern`), content: str(n.content, `${where}.content`) };
    case 'Prepend':
      return { type, prepend: str(n.prepend, `${where}.prepend`) };
    case 'Sequence':
      return {
        type,
        normalizers: sequence(n.normalizers, `${where}.normalizers`).map((x, i) => {
          const inner = parseNormalizer(x, `${where}.normalizers[${i}]`, depth + 1);
          if (inner === null) fail(`${where}.normalizers[${i}]`, 'a normalizer', x);
          return inner;
        }),
      };
    default:
      return { type };
  }
}

const PRE_TOKENIZERS = ['ByteLevel', 'Metaspace', 'Split', 'Sequence'] as const;

function parsePreTokenizer(v: unknown, where: string, depth: number): Json | null {
  depthCheck(depth, where);
  const p = optObj(v, where);
  if (p === null) return null;
  const type = oneOf(p.type, `${where}.type`, PRE_TOKENIZERS);
  switch (type) {
    case 'ByteLevel':
      return {
        type,
        add_prefix_space: bool(p.add_prefix_space, `${where}.add_prefix_space`, true),
        trim_offsets: bool(p.trim_offsets, `${where}.trim_offsets`, true),
        use_regex: bool(p.use_regex, `${where}.use_regex`, true),
      };
    case 'Metaspace':
      return { type, ...metaspace(p, where) };
    case 'Split': {
      const behavior = str(p.behavior ?? 'Isolated', `${where}.behavior`);
      // The JS library implements Isolated faithfully; the other behaviours differ from the Rust ones.
      if (behavior !== 'Isolated') fail(`${where}.behavior`, '"Isolated" (the only Split behaviour supported)', behavior);
      if (bool(p.invert, `${where}.invert`, false)) fail(`${where}.invert`, 'false (inverted Split is not supported)', true);
      return { type, pattern: parsePattern(p.pattern, `${where}.pattern`), behavior, invert: false };
    }
    case 'Sequence':
      return {
        type,
        pretokenizers: sequence(p.pretokenizers, `${where}.pretokenizers`).map((x, i) => {
          const inner = parsePreTokenizer(x, `${where}.pretokenizers[${i}]`, depth + 1);
          if (inner === null) fail(`${where}.pretokenizers[${i}]`, 'a pre-tokenizer', x);
          return inner;
        }),
      };
  }
}

/** Metaspace fields, with the legacy add_prefix_space folded into prepend_scheme as the Rust reader does. */
function metaspace(p: Json, where: string): { replacement: string; prepend_scheme: string; split: boolean } {
  const replacement = p.replacement === undefined ? '\u2581' : char(p.replacement, `${where}.replacement`);
  if (replacement.length !== 1) fail(`${where}.replacement`, 'a character of the basic multilingual plane', replacement);
  let scheme: string;
  if (p.prepend_scheme !== undefined && p.prepend_scheme !== null) {
    scheme = oneOf(p.prepend_scheme, `${where}.prepend_scheme`, ['always', 'first', 'never'] as const);
  } else {
    scheme = bool(p.add_prefix_space, `${where}.add_prefix_space`, true) ? 'always' : 'never';
  }
  return { replacement, prepend_scheme: scheme, split: bool(p.split, `${where}.split`, true) };
}

const DECODERS = ['ByteLevel', 'Metaspace', 'Replace', 'ByteFallback', 'Fuse', 'Strip', 'Sequence'] as const;

function parseDecoder(v: unknown, where: string, depth: number): Json | null {
  depthCheck(depth, where);
  const d = optObj(v, where);
  if (d === null) return null;
  const type = oneOf(d.type, `${where}.type`, DECODERS);
  switch (type) {
    case 'ByteLevel':
      return { type, add_prefix_space: true, trim_offsets: true, use_regex: true };
    case 'Metaspace': {
      const m = metaspace(d, where);
      // The library's Metaspace decoder always drops the first leading space; with 'never' that is a plain replace.
      if (m.prepend_scheme === 'never') return { type: 'Replace', pattern: { String: m.replacement }, content: ' ' };
      return { type, ...m };
    }
    case 'Replace':
      return { type, pattern: parsePattern(d.pattern, `${where}.pattern`), content: str(d.content, `${where}.content`) };
    case 'Strip': {
      const content = char(d.content ?? ' ', `${where}.content`);
      if (content.length !== 1) fail(`${where}.content`, 'a character of the basic multilingual plane', content);
      return { type, content, start: int(d.start ?? 0, `${where}.start`, 0, 1 << 16), stop: int(d.stop ?? 0, `${where}.stop`, 0, 1 << 16) };
    }
    case 'Sequence':
      return {
        type,
        decoders: sequence(d.decoders, `${where}.decoders`).map((x, i) => {
          const inner = parseDecoder(x, `${where}.decoders[${i}]`, depth + 1);
          if (inner === null) fail(`${where}.decoders[${i}]`, 'a decoder', x);
          return inner;
        }),
      };
    default:
      return { type };
  }
}

/** Not run (encode adds no BOS/EOS); kept as plain JSON so toJSON writes it back. */
function parsePostProcessor(v: unknown): unknown {
  const p = optObj(v, 'post_processor');
  if (p === null) return null;
  str(p.type, 'post_processor.type');
  const text = JSON.stringify(p);
  if (text.length > 1 << 20) fail('post_processor', 'at most 1 MiB of JSON', new Found(`${text.length} characters`));
  return JSON.parse(text);
}
