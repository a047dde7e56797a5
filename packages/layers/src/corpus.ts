// The shipped text corpus (the King James Bible, one verse per line) and a fixed, documented
// split into training and held-out text.

import { fileURLToPath } from 'node:url';
import { RrtError } from '@rrt/tensor';

/**
 * Absolute path of packages/layers/data/kjv.txt. The same relative URL works from src/ (tests,
 * tsx) and from dist/ (the built package ships data/ next to dist/).
 */
export function defaultCorpusPath(): string {
  return fileURLToPath(new URL('../data/kjv.txt', import.meta.url));
}

export interface SplitOptions {
  /** Fraction of sections held out, in [0, 1). Default 0.05 (every 20th chapter of kjv.txt). */
  heldOutFraction?: number;
}

export interface CorpusSplit {
  /** The training sections joined with blank lines. */
  train: string;
  /** The held-out sections joined with blank lines ('' when heldOutFraction is 0). */
  validation: string;
  /** Number of sections in each part. */
  trainSections: number;
  validationSections: number;
  /** 0-based indices (in file order) of the held-out sections. */
  validationIndices: number[];
}

/**
 * Splits a text into whole sections and holds out an evenly spaced, deterministic subset.
 *
 * A section is a run of non-blank lines; sections are separated by one or more blank lines.
 * In kjv.txt a section is one chapter (a heading such as "Genesis 2" followed by its verses),
 * so train and validation never share a verse. Section i (0-based) is held out when
 * floor((i + 1) * f) > floor(i * f) for f = heldOutFraction: with f = 0.05 that is sections
 * 19, 39, 59, ... (every 20th chapter; 59 of kjv.txt's 1189 chapters). Every part keeps the
 * file's order; sections are re-joined with one blank line ("\n\n") and line endings are
 * normalised to "\n".
 *
 * Throws when f > 0 and the text has too few sections to hold any out.
 */
export function splitCorpus(text: string, opts: SplitOptions = {}): CorpusSplit {
  const f = opts.heldOutFraction ?? 0.05;
  if (!(f >= 0 && f < 1)) throw new RrtError(`splitCorpus: heldOutFraction must be in [0, 1), got ${f}`);
  const sections = text
    .replace(/\r\n?/g, '\n')
    .split(/\n[ \t]*\n/)
    .map((s) => s.replace(/^\n+|\n+$/g, ''))
    .filter((s) => s.trim().length > 0);
  if (sections.length === 0) throw new RrtError('splitCorpus: the text is empty (no non-blank lines)');
  const train: string[] = [];
  const validation: string[] = [];
  const validationIndices: number[] = [];
  sections.forEach((s, i) => {
    if (Math.floor((i + 1) * f) > Math.floor(i * f)) {
      validation.push(s);
      validationIndices.push(i);
    } else {
      train.push(s);
    }
  });
  if (f > 0 && validation.length === 0) {
    throw new RrtError(
      `splitCorpus: the text has ${sections.length} section(s) (runs of lines separated by blank lines); ` +
        `holding out a fraction ${f} needs at least ${Math.ceil(1 / f)}. Use a larger text or a larger heldOutFraction.`,
    );
  }
  if (train.length === 0) throw new RrtError(`splitCorpus: every one of the ${sections.length} section(s) was held out; lower heldOutFraction`);
  return {
    train: train.join('\n\n') + '\n',
    validation: validation.length ? validation.join('\n\n') + '\n' : '',
    trainSections: train.length,
    validationSections: validation.length,
    validationIndices,
  };
}
