/**
 * GPT-2's pre-tokenisation pattern: contractions, optional-space-prefixed letter runs,
 * digit runs, punctuation runs, and whitespace (trailing whitespace stays apart from the
 * next word). `\s` is spelled \p{White_Space} to match the Unicode meaning that the
 * Rust tokenizers use (JavaScript's `\s` also takes U+FEFF and misses U+0085).
 */
export const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+";

/** A fresh global regex (callers own lastIndex). */
export function gpt2Regex(): RegExp {
  return new RegExp(GPT2_PATTERN, 'gu');
}

/** Calls fn for each pre-tokenised chunk of text. */
export function forEachChunk(re: RegExp, text: string, fn: (chunk: string) => void): void {
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    // Every alternative consumes at least one character, so the loop always advances.
    fn(m[0]);
  }
}
