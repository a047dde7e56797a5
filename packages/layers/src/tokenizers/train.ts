import { RrtError } from '@rrt/tensor';
import { BpeTokenizer, MAX_VOCAB, MinHeap, byteLevelForm, type AddedToken } from './bpe.js';
import { BYTE_TO_CHAR, utf8Encode } from './bytes.js';
import { forEachChunk, gpt2Regex } from './pretokenize.js';
import { AddedTokenSplitter } from './special.js';

export interface TrainBpeOptions {
  /** Target vocabulary size: 256 byte tokens + special tokens + merges. */
  vocabSize: number;
  /** Special tokens, given ids right after the 256 bytes. Default ['<|endoftext|>']. */
  specialTokens?: readonly string[];
  /** A pair seen fewer times than this is never merged, so training may stop short of vocabSize. Default 2. */
  minFrequency?: number;
}

const PAIR_SHIFT = MAX_VOCAB;

/**
 * Trains a byte-level BPE (GPT-2 style) on text.
 *
 * Words (pre-tokenised chunks) are counted once; each merge then only revisits the words that
 * contain the merged pair, updating pair counts by difference. The best pair comes from a
 * lazily-updated max-heap: highest count first, ties broken by the smaller (left id, right id).
 * Layout: ids 0..255 are the bytes, then the special tokens, then one id per merge.
 */
export function trainBpe(text: string, opts: TrainBpeOptions): BpeTokenizer {
  const specials = [...(opts.specialTokens ?? ['<|endoftext|>'])];
  const minFrequency = opts.minFrequency ?? 2;
  const { vocabSize } = opts;
  if (!Number.isInteger(vocabSize) || vocabSize < 256 + specials.length || vocabSize > MAX_VOCAB) {
    throw new RrtError(`trainBpe: expected an integer vocabSize in ${256 + specials.length}..${MAX_VOCAB} (256 bytes + ${specials.length} special tokens), found ${vocabSize}`);
  }
  if (!Number.isFinite(minFrequency) || minFrequency < 1) {
    throw new RrtError(`trainBpe: expected minFrequency >= 1, found ${minFrequency}`);
  }
  if (new Set(specials).size !== specials.length || specials.some((s) => s.length === 0)) {
    throw new RrtError(`trainBpe: expected distinct non-empty special tokens, found ${JSON.stringify(specials)}`);
  }

  // 1. Word counts. Special-token strings in the text are cut out and never merged across.
  const counts = new Map<string, number>();
  const re = gpt2Regex();
  const added: AddedToken[] = specials.map((content, i) => ({ id: 256 + i, content, special: true }));
  new AddedTokenSplitter(added).split(
    text,
    (piece) => forEachChunk(re, piece, (w) => counts.set(w, (counts.get(w) ?? 0) + 1)),
    () => {},
  );

  // 2. Words as symbol arrays (byte ids), with their frequency.
  const nWords = counts.size;
  const words: Int32Array[] = new Array(nWords);
  const lens = new Int32Array(nWords);
  const freq = new Float64Array(nWords);
  let w = 0;
  for (const [word, c] of counts) {
    const bytes = utf8Encode(word);
    words[w] = Int32Array.from(bytes);
    lens[w] = bytes.length;
    freq[w] = c;
    w++;
  }
  counts.clear();

  // 3. Initial pair counts and where each pair occurs.
  const pairCount = new Map<number, number>();
  const where = new Map<number, Set<number>>();
  for (let i = 0; i < nWords; i++) {
    const s = words[i]!;
    for (let j = 0; j + 1 < lens[i]!; j++) {
      const key = s[j]! * PAIR_SHIFT + s[j + 1]!;
      pairCount.set(key, (pairCount.get(key) ?? 0) + freq[i]!);
      let set = where.get(key);
      if (set === undefined) where.set(key, (set = new Set()));
      set.add(i);
    }
  }
  const heap = new MaxPairHeap();
  for (const [key, c] of pairCount) heap.push(c, key);

  // Vocabulary as byte-level strings; specials sit in model.vocab too so ids stay contiguous.
  const vocab = new Map<string, number>();
  const idStr: string[] = [];
  for (let b = 0; b < 256; b++) {
    vocab.set(BYTE_TO_CHAR[b]!, b);
    idStr.push(BYTE_TO_CHAR[b]!);
  }
  for (const t of added) {
    const form = byteLevelForm(t.content);
    // A one-byte special shares its byte's entry; added_tokens still gives it its own id.
    if (!vocab.has(form)) vocab.set(form, t.id);
    idStr.push(form);
  }
  const merges: [string, string][] = [];
  const delta = new Map<number, number>();

  // 4. Merge until the vocabulary is full or no pair is frequent enough.
  while (vocab.size < vocabSize) {
    const best = popBest(heap, pairCount);
    if (best === null || best.count < minFrequency) break;
    const a = Math.floor(best.key / PAIR_SHIFT);
    const b = best.key - a * PAIR_SHIFT;
    const str = idStr[a]! + idStr[b]!;
    // Two merge paths can spell the same token ("ab"+"c", "a"+"bc"): they share one id, as in HF's trainer.
    let id = vocab.get(str);
    if (id === undefined) {
      id = idStr.length;
      vocab.set(str, id);
      idStr.push(str);
    }
    merges.push([idStr[a]!, idStr[b]!]);

    delta.clear();
    for (const wi of where.get(best.key)!) {
      const s = words[wi]!;
      const n = lens[wi]!;
      let found = false;
      for (let j = 0; j + 1 < n; j++) if (s[j] === a && s[j + 1] === b) { found = true; break; }
      if (!found) continue; // stale: an earlier merge consumed the pair in this word
      const f = freq[wi]!;
      for (let j = 0; j + 1 < n; j++) addDelta(delta, s[j]! * PAIR_SHIFT + s[j + 1]!, -f);
      let m = 0;
      for (let j = 0; j < n; j++) {
        if (j + 1 < n && s[j] === a && s[j + 1] === b) {
          s[m++] = id;
          j++;
        } else {
          s[m++] = s[j]!;
        }
      }
      lens[wi] = m;
      for (let j = 0; j + 1 < m; j++) {
        const key = s[j]! * PAIR_SHIFT + s[j + 1]!;
        addDelta(delta, key, f);
        let set = where.get(key);
        if (set === undefined) where.set(key, (set = new Set()));
        set.add(wi);
      }
    }
    for (const [key, d] of delta) {
      if (d === 0) continue;
      const c = (pairCount.get(key) ?? 0) + d;
      if (c > 0) pairCount.set(key, c);
      else pairCount.delete(key);
      // Decreases leave a too-high heap entry that popBest refreshes; increases need a new entry.
      if (d > 0) heap.push(c, key);
    }
    pairCount.delete(best.key);
    where.delete(best.key);
  }

  return new BpeTokenizer({ vocab, merges, addedTokens: added });
}

/** trainBpe on a UTF-8 text file (Node only). */
export async function trainBpeOnFile(path: string, opts: TrainBpeOptions): Promise<BpeTokenizer> {
  const { readFile } = await import('node:fs/promises');
  return trainBpe(await readFile(path, 'utf8'), opts);
}

function addDelta(delta: Map<number, number>, key: number, d: number): void {
  delta.set(key, (delta.get(key) ?? 0) + d);
}

function popBest(heap: MaxPairHeap, pairCount: Map<number, number>): { count: number; key: number } | null {
  while (heap.size > 0) {
    const top = heap.pop();
    const current = pairCount.get(top.key);
    if (current === top.count) return top;
    if (current !== undefined && current < top.count) heap.push(current, top.key);
    // current > top.count cannot be fresh: a newer entry with the right count is in the heap.
  }
  return null;
}

/** Max-heap of (count, pair key): higher count first, then smaller key. */
class MaxPairHeap {
  private counts: number[] = [];
  private keys: number[] = [];
  get size(): number {
    return this.counts.length;
  }
  private better(c1: number, k1: number, c2: number, k2: number): boolean {
    return c1 > c2 || (c1 === c2 && k1 < k2);
  }
  push(count: number, key: number): void {
    const c = this.counts;
    const k = this.keys;
    let i = c.length;
    c.push(count);
    k.push(key);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.better(count, key, c[p]!, k[p]!)) break;
      c[i] = c[p]!;
      k[i] = k[p]!;
      i = p;
    }
    c[i] = count;
    k[i] = key;
  }
  pop(): { count: number; key: number } {
    const c = this.counts;
    const k = this.keys;
    const top = { count: c[0]!, key: k[0]! };
    const lc = c.pop()!;
    const lk = k.pop()!;
    const n = c.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const ch = r < n && this.better(c[r]!, k[r]!, c[l]!, k[l]!) ? r : l;
        if (!this.better(c[ch]!, k[ch]!, lc, lk)) break;
        c[i] = c[ch]!;
        k[i] = k[ch]!;
        i = ch;
      }
      c[i] = lc;
      k[i] = lk;
    }
    return top;
  }
}
