// The streams and process facilities a command uses, passed in so that tests can run commands
// in-process and capture everything they print.

/** The part of a writable stream the CLI uses. */
export interface OutStream {
  write(chunk: string): unknown;
  /** True when a terminal is attached: progress bars redraw only then. */
  readonly isTTY?: boolean;
  /** Terminal width in characters, when known. */
  readonly columns?: number;
}

export interface CliIO {
  readonly stdout: OutStream;
  readonly stderr: OutStream;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Where relative paths resolve from. */
  readonly cwd: string;
  /**
   * Calls `handler` on Ctrl-C (SIGINT) until the returned function is called. Long jobs use it to
   * save a checkpoint and stop cleanly instead of dying mid-write.
   */
  onInterrupt(handler: () => void): () => void;
  /** Milliseconds, monotonic; progress bars and rates use it. */
  now(): number;
}

/** The first Ctrl-C goes to the handler (a clean stop); a second one quits at once. */
function processInterrupt(handler: () => void): () => void {
  let count = 0;
  const listener = () => {
    count++;
    if (count > 1) process.exit(130);
    handler();
  };
  process.on('SIGINT', listener);
  return () => {
    process.off('SIGINT', listener);
  };
}

/** The real process streams, with any field replaced by `overrides`. */
export function resolveIO(overrides: Partial<CliIO> = {}): CliIO {
  return {
    stdout: overrides.stdout ?? process.stdout,
    stderr: overrides.stderr ?? process.stderr,
    env: overrides.env ?? process.env,
    cwd: overrides.cwd ?? process.cwd(),
    onInterrupt: overrides.onInterrupt ?? processInterrupt,
    now: overrides.now ?? (() => performance.now()),
  };
}

/** An in-memory stream for tests and for programmatic callers that want the text. */
export class StringStream implements OutStream {
  text = '';
  constructor(
    readonly isTTY = false,
    readonly columns = 100,
  ) {}
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
}
