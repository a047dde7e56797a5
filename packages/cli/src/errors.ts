// Exit codes and the error that means "the command line was wrong".

export const EXIT_OK = 0;
/** The command ran and failed (bad file, diverged training, library error). */
export const EXIT_FAILURE = 1;
/** The command line was wrong: unknown option, bad value, missing argument. */
export const EXIT_USAGE = 2;

/** A run that Ctrl-C stopped after saving its checkpoint (128 + SIGINT). */
export const EXIT_INTERRUPTED = 130;

/** Bad usage found after parsing (an option value that does not fit the model, a bad --config key). Exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}
