// Options for the worker threads that run rrt's eval'd CommonJS sources (the cpu pool, the gpu
// device thread). A worker inherits the parent's execArgv, and `node --input-type=module -e ...`
// would make the worker parse its source as an ES module, where `require` does not exist: the
// worker dies before its first line, and its error event waits for a main thread that is blocked
// in Atomics.wait.

/** The parent's execArgv without --input-type (its `--input-type=x` and `--input-type x` forms). */
export function evalWorkerArgv(execArgv: readonly string[] = process.execArgv): string[] {
  const out: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    if (execArgv[i] === '--input-type') i++;
    else if (!execArgv[i].startsWith('--input-type=')) out.push(execArgv[i]);
  }
  return out;
}
