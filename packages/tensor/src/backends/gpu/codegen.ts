// Source builders for gpu.js kernels. Every kernel has a 1D output indexed by this.thread.x, so
// results are flat, row-major arrays in every mode, and shapes are baked into the source (a
// kernel is cached per op and shape).
//
// Integer arithmetic needs care: gpu.js turns a variable declared from an integer expression
// into a float, and `/` and `%` are float operations in every mode. A variable becomes a real
// i32 (WGSL, WebAssembly) when it is declared from a literal and incremented once, so int()
// declares integers that way, and divmod() divides exactly with a float estimate corrected in
// integer arithmetic (bitwise ops are integer ops in gpu.js).

/** A float literal gpu.js parses back to the same float32 value. */
export function lit(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`gpu codegen: ${x} cannot be a literal; pass it as a scalar argument`);
  const s = String(Math.fround(x));
  return s.includes('e') || s.includes('.') ? s : `${s}.0`;
}

export class KernelSource {
  private readonly lines: string[] = [];
  private counter = 0;

  /**
   * params: the kernel's parameters in the order they are passed. The output index is t; with a
   * grid [width, height] (2D kernels) also tx and ty, t = ty * width + tx.
   */
  constructor(private readonly params: string[], grid?: [number, number]) {
    if (grid) {
      this.int('tx', 'this.thread.x');
      this.int('ty', 'this.thread.y');
      this.int('t', `ty * ${grid[0]} + tx`);
    } else this.int('t', 'this.thread.x');
  }

  /** A fresh variable name. */
  name(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  line(s: string): this {
    this.lines.push(s);
    return this;
  }

  /** Declares an i32 variable. */
  int(name: string, expr: string): string {
    this.lines.push(`let ${name} = 0; ${name}++; ${name} = ${expr};`);
    return name;
  }

  /** Declares an i32 variable from a float expression (truncated; `| 0` is the conversion every mode compiles). */
  intOf(name: string, floatExpr: string): string {
    return this.int(name, `(${floatExpr}) | 0`);
  }

  /**
   * Exact [floor(x / d), x mod d] of a non-negative integer x < 2^31 (maxX bounds x: large values
   * need a second correction because the float estimate loses precision above 2^24).
   */
  divmod(x: string, d: number, maxX: number): [string, string] {
    const q = this.name('q'), r = this.name('r');
    if (d === 1) return [x, this.int(r, '0')];
    if ((d & (d - 1)) === 0) {
      const shift = Math.log2(d);
      return [this.int(q, `${x} >> ${shift}`), this.int(r, `${x} & ${d - 1}`)];
    }
    this.int(q, `(${x} / ${d}) | 0`);
    this.int(r, `${x} - ${q} * ${d}`);
    if (maxX >= 1 << 22) {
      this.line(`${q} = ${q} + ((${r} / ${d}) | 0);`);
      this.line(`${r} = ${x} - ${q} * ${d};`);
    }
    // r < 0 means q was one too large; r >= d one too small.
    this.line(`${q} = ${q} + (${r} >> 31) - ((${d - 1} - ${r}) >> 31);`);
    this.line(`${r} = ${x} - ${q} * ${d};`);
    return [q, r];
  }

  /** Clamps an integer variable into [0, n) so a data-dependent index never reads out of bounds. */
  clampIndex(v: string, n: number): void {
    this.line(`if (${v} < 0) { ${v} = 0; }`);
    this.line(`if (${v} > ${Math.max(n - 1, 0)}) { ${v} = ${Math.max(n - 1, 0)}; }`);
  }

  /**
   * Integer variables holding, for each input, the offset of the element that output index t
   * reads: shape is the (collapsed) output shape, strides[i] input i's strides (0: broadcast).
   */
  offsets(shape: number[], strides: number[][]): string[] {
    const total = shape.reduce((a, b) => a * b, 1);
    const terms: string[][] = strides.map(() => []);
    let rest = 't';
    for (let d = shape.length - 1; d >= 0; d--) {
      let coord: string;
      if (d === 0) coord = rest;
      else {
        const maxRest = Math.ceil(total / shape.slice(d + 1).reduce((a, b) => a * b, 1));
        const [q, r] = this.divmod(rest, shape[d], maxRest);
        coord = r;
        rest = q;
      }
      strides.forEach((s, i) => {
        if (s[d] !== 0) terms[i].push(s[d] === 1 ? coord : `${coord} * ${s[d]}`);
      });
    }
    return terms.map((ts) => (ts.length === 0 ? this.int(this.name('o'), '0') : this.int(this.name('o'), ts.join(' + '))));
  }

  toString(ret: string): string {
    return `function(${this.params.join(', ')}) {\n${this.lines.join('\n')}\nreturn ${ret};\n}`;
  }
}

/** Row-major strides; dims of size 1 get stride 0 when broadcast against a larger out dim. */
export function stridesFor(shape: number[], outShape: number[]): number[] {
  const s = new Array<number>(shape.length).fill(0);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = shape[i] === 1 && outShape[i] !== 1 ? 0 : acc;
    acc *= shape[i];
  }
  return s;
}

/**
 * Merges adjacent output dims wherever every input walks them as one (and drops size-1 dims), so
 * a broadcast or permutation needs as few divisions as possible.
 */
export function collapse(shape: number[], strides: number[][]): { shape: number[]; strides: number[][] } {
  const outShape: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = outShape.length - 1;
    if (last >= 0 && strides.every((s, i) => outStrides[i][last] === s[d] * shape[d])) {
      outShape[last] *= shape[d];
      strides.forEach((s, i) => (outStrides[i][last] = s[d]));
    } else {
      outShape.push(shape[d]);
      strides.forEach((s, i) => outStrides[i].push(s[d]));
    }
  }
  if (outShape.length === 0) return { shape: [1], strides: strides.map(() => [0]) };
  return { shape: outShape, strides: outStrides };
}

/**
 * Recovers the broadcast structure behind a list of batch offsets: offsets[t] = base +
 * sum_d idx_d(t) * strides[d], with t read as a mixed-radix number over sizes (outermost first).
 * Returns null when the list has no such structure.
 */
export function batchStructure(offsets: Int32Array): { base: number; sizes: number[]; strides: number[] } | null {
  const n = offsets.length;
  const base = offsets[0];
  const sizes: number[] = [], strides: number[] = [];
  let period = 1;
  while (period < n) {
    const s = offsets[period] - base;
    let c = 1;
    while (c * period < n && offsets[c * period] - base === c * s) c++;
    while (n % (c * period) !== 0) c--;
    if (c < 2) return null;
    sizes.unshift(c);
    strides.unshift(s);
    period *= c;
  }
  // Verify every offset.
  for (let t = 0; t < n; t++) {
    let rest = t, o = base;
    for (let d = sizes.length - 1; d >= 0; d--) {
      o += (rest % sizes[d]) * strides[d];
      rest = Math.floor(rest / sizes[d]);
    }
    if (o !== offsets[t]) return null;
  }
  return { base, sizes, strides };
}
