import { RrtError } from '@rrt/tensor';

/** Splits text around added-token strings, longest match first at each position (as HF's added vocabulary does). */
export class AddedTokenSplitter {
  private readonly re: RegExp | null;
  private readonly ids: Map<string, number>;

  constructor(tokens: ReadonlyArray<{ content: string; id: number }>) {
    this.ids = new Map();
    for (const t of tokens) {
      if (t.content.length === 0) throw new RrtError(`added token ${t.id}: expected non-empty content, found ""`);
      this.ids.set(t.content, t.id);
    }
    const contents = [...this.ids.keys()].sort((a, b) => b.length - a.length);
    // Escaped literals only: no quantifiers, so matching is linear.
    this.re = contents.length ? new RegExp(contents.map(escapeLiteral).join('|'), 'gu') : null;
  }

  /** Calls onText for each stretch of ordinary text and onToken for each added token, in order. */
  split(text: string, onText: (piece: string) => void, onToken: (id: number) => void): void {
    if (this.re === null) {
      if (text.length) onText(text);
      return;
    }
    const re = this.re;
    re.lastIndex = 0;
    let last = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      if (m.index > last) onText(text.slice(last, m.index));
      onToken(this.ids.get(m[0])!);
      last = m.index + m[0].length;
    }
    if (last < text.length) onText(text.slice(last));
  }
}

/** Escapes a string for a `u`-mode RegExp (only syntax characters may be escaped there). */
export function escapeLiteral(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
}
