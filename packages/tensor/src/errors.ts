/** Base class of every error rrt throws on purpose: the message says what was expected and what was given. */
export class RrtError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A tensor had a shape the operation cannot take. */
export class ShapeError extends RrtError {}

/** A file (checkpoint, config, tokenizer) is malformed, truncated or unsupported. */
export class FormatError extends RrtError {}

/** A tensor was used after dispose(). */
export class DisposedError extends RrtError {}

/** Formats a shape for messages: [2,3]. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}
