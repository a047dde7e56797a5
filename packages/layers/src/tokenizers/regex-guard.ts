import { FormatError } from '@rrt/tensor';

/** Longest pattern accepted from a file. */
export const MAX_PATTERN_LENGTH = 4096;
/** Unbounded repeats allowed one after another in a branch: each one multiplies backtracking by the input length. */
const MAX_UNBOUNDED_PER_BRANCH = 2;
/** A {m,n} repeat with n above this counts as unbounded. */
const SMALL_REPEAT = 16;
const MAX_GROUP_DEPTH = 32;

interface Info {
  /** Contains a quantifier anywhere. */
  quantified: boolean;
  /** Contains a `|` anywhere. */
  alternation: boolean;
  /** Most unbounded repeats on one path through the node. */
  unbounded: number;
}

/**
 * Checks that a regex from a tokenizer file is in a subset that backtracking engines run without
 * exponential blow-up, and throws FormatError (with `where` and the offending offset) otherwise:
 * no backreferences, subroutine calls or conditionals; a repeated group holds no repeats (no
 * `(a+)+`); an unboundedly repeated group holds no alternation (no `(a|ab)*`); at most two
 * unbounded repeats in a row per branch. Covers GPT-2, Llama 3, GPT-4o, Qwen and DeepSeek splits.
 * Syntax it does not know is rejected rather than guessed at.
 */
export function checkRegex(pattern: string, where: string): void {
  if (pattern.length > MAX_PATTERN_LENGTH) {
    throw new FormatError(`${where}: expected a regex of at most ${MAX_PATTERN_LENGTH} characters, found ${pattern.length}`);
  }
  const p = new Parser(pattern, where);
  p.alternation(0);
  if (p.i < pattern.length) p.fail(`unmatched ')'`);
}

class Parser {
  i = 0;
  constructor(
    private readonly s: string,
    private readonly where: string,
  ) {}

  fail(what: string): never {
    throw new FormatError(`${this.where}: regex ${JSON.stringify(this.s.length > 80 ? this.s.slice(0, 80) + '…' : this.s)} rejected at offset ${this.i}: ${what}`);
  }

  alternation(depth: number): Info {
    if (depth > MAX_GROUP_DEPTH) this.fail(`expected at most ${MAX_GROUP_DEPTH} nested groups`);
    const info: Info = { quantified: false, alternation: false, unbounded: 0 };
    for (;;) {
      const b = this.branch(depth);
      info.quantified ||= b.quantified;
      info.alternation ||= b.alternation;
      info.unbounded = Math.max(info.unbounded, b.unbounded);
      if (this.s[this.i] !== '|') return info;
      info.alternation = true;
      this.i++;
    }
  }

  private branch(depth: number): Info {
    const info: Info = { quantified: false, alternation: false, unbounded: 0 };
    const s = this.s;
    while (this.i < s.length && s[this.i] !== '|' && s[this.i] !== ')') {
      const atomStart = this.i;
      const atom = this.atom(depth);
      const q = this.quantifier();
      if (q !== null) {
        if (atom.zeroWidth) { this.i = atomStart; this.fail('a repeated anchor or lookaround'); }
        if (atom.inner.quantified) { this.i = atomStart; this.fail('a repeated group that itself contains a repeat (nested quantifiers)'); }
        if (q.unbounded && atom.inner.alternation) { this.i = atomStart; this.fail('an unboundedly repeated group containing alternation'); }
        // Stacked quantifiers ({2}+ in Oniguruma) repeat the repeat.
        if (this.quantifier() !== null) { this.i = atomStart; this.fail('stacked quantifiers'); }
        info.quantified = true;
        if (q.unbounded) info.unbounded++;
      }
      info.quantified ||= atom.inner.quantified;
      info.alternation ||= atom.inner.alternation;
      info.unbounded += atom.inner.unbounded;
      if (info.unbounded > MAX_UNBOUNDED_PER_BRANCH) {
        this.fail(`expected at most ${MAX_UNBOUNDED_PER_BRANCH} unbounded repeats in one branch`);
      }
    }
    return info;
  }

  private atom(depth: number): { inner: Info; zeroWidth: boolean } {
    const s = this.s;
    const c = s[this.i]!;
    const plain = { inner: { quantified: false, alternation: false, unbounded: 0 }, zeroWidth: false };
    if (c === '(') {
      this.i++;
      let zeroWidth = false;
      if (s[this.i] === '?') {
        const rest = s.slice(this.i, this.i + 4);
        if (rest.startsWith('?:') || rest.startsWith('?>')) this.i += 2;
        else if (rest.startsWith('?i:')) this.i += 3;
        else if (rest.startsWith('?=') || rest.startsWith('?!')) { this.i += 2; zeroWidth = true; }
        else if (rest.startsWith('?<=') || rest.startsWith('?<!')) { this.i += 3; zeroWidth = true; }
        else if (/^\?<[A-Za-z]/.test(rest)) {
          const m = /^\?<([A-Za-z_][A-Za-z0-9_]*)>/.exec(s.slice(this.i, this.i + 40));
          if (!m) this.fail('expected a named group (?<name>...)');
          this.i += m[0].length;
        } else this.fail(`unsupported group syntax '(${rest}'`);
      }
      const inner = this.alternation(depth + 1);
      if (s[this.i] !== ')') this.fail(`expected ')'`);
      this.i++;
      return { inner, zeroWidth };
    }
    if (c === '[') {
      this.charClass();
      return plain;
    }
    if (c === '\\') {
      return { inner: plain.inner, zeroWidth: this.escape(false) };
    }
    if (c === '^' || c === '$') {
      this.i++;
      return { inner: plain.inner, zeroWidth: true };
    }
    if (c === '*' || c === '+' || c === '?') this.fail('a quantifier with nothing to repeat');
    // '{' that does not start a quantifier is a literal in Oniguruma; ']' and '}' are literals too.
    this.i += c.codePointAt(0)! > 0xffff ? 2 : 1;
    return plain;
  }

  /** Consumes an escape; returns true for zero-width ones (anchors, word boundaries). */
  private escape(inClass: boolean): boolean {
    const s = this.s;
    this.i++;
    const c = s[this.i];
    if (c === undefined) this.fail('a trailing backslash');
    if (/[1-9]/.test(c) || c === 'k' || c === 'g') this.fail('backreferences and subroutine calls');
    if (c === 'p' || c === 'P') {
      const m = /^[pP]\{\^?[A-Za-z0-9_=]{1,60}\}/.exec(s.slice(this.i, this.i + 70));
      if (!m) this.fail('expected \\p{Name}');
      this.i += m[0].length;
      return false;
    }
    if (c === 'x') {
      const m = /^x(\{[0-9A-Fa-f]{1,6}\}|[0-9A-Fa-f]{2})/.exec(s.slice(this.i, this.i + 10));
      if (!m) this.fail('expected \\xHH or \\x{H...}');
      this.i += m[0].length;
      return false;
    }
    if (c === 'u') {
      const m = /^u[0-9A-Fa-f]{4}/.exec(s.slice(this.i, this.i + 5));
      if (!m) this.fail('expected \\uHHHH');
      this.i += m[0].length;
      return false;
    }
    this.i += c.codePointAt(0)! > 0xffff ? 2 : 1;
    if (!inClass && 'AzZbBG'.includes(c)) return true;
    if (/[A-Za-z]/.test(c) && !'dDwWsShHtnrfveaAzZbB0'.includes(c)) this.fail(`unsupported escape \\${c}`);
    return false;
  }

  /** Consumes a bracket expression, nested classes and POSIX names included. */
  private charClass(): void {
    const s = this.s;
    const start = this.i;
    let depth = 0;
    while (this.i < s.length) {
      const c = s[this.i]!;
      if (c === '[') {
        const posix = /^\[:\^?[a-z]{1,10}:\]/.exec(s.slice(this.i, this.i + 16));
        if (posix && depth > 0) {
          this.i += posix[0].length;
          continue;
        }
        depth++;
        this.i++;
        if (s[this.i] === '^') this.i++;
        if (s[this.i] === ']') this.fail('an empty or ambiguous character class "[]"');
        continue;
      }
      if (c === ']') {
        this.i++;
        if (--depth === 0) return;
        continue;
      }
      if (c === '\\') {
        this.escape(true);
        continue;
      }
      this.i += c.codePointAt(0)! > 0xffff ? 2 : 1;
    }
    this.i = start;
    this.fail(`expected ']'`);
  }

  /** Consumes a quantifier (with a lazy '?' or possessive '+' suffix) if one is here. */
  private quantifier(): { unbounded: boolean } | null {
    const s = this.s;
    const c = s[this.i];
    let unbounded: boolean;
    if (c === '*' || c === '+') {
      unbounded = true;
      this.i++;
    } else if (c === '?') {
      unbounded = false;
      this.i++;
    } else if (c === '{') {
      const m = /^\{(\d{0,6})(,(\d{0,6}))?\}/.exec(s.slice(this.i, this.i + 16));
      if (!m || (m[1] === '' && m[3] === undefined)) return null; // a literal '{'
      const lo = m[1] === '' ? 0 : Number(m[1]);
      const hi = m[2] === undefined ? lo : m[3] === '' ? Infinity : Number(m[3]);
      if (hi < lo) this.fail(`a repeat {${m[1]},${m[3]}} with max below min`);
      unbounded = hi > SMALL_REPEAT;
      this.i += m[0].length;
      // Oniguruma reads {n}+ as a repeat of a repeat; the caller rejects that.
      if (s[this.i] === '?') this.i++;
      return { unbounded };
    } else {
      return null;
    }
    if (s[this.i] === '?' || s[this.i] === '+') this.i++; // lazy or possessive
    return { unbounded };
  }
}
