// Versions of rrt's packages, read from their package.json files at run time.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

function versionAt(path: string | URL): string {
  try {
    const pkg = JSON.parse(readFileSync(path, 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** @rrt/cli's version. This file sits directly in src/ (and is bundled into dist/), so ../package.json is the package's. */
export function cliVersion(): string {
  return versionAt(new URL('../package.json', import.meta.url));
}

/** Versions of the @rrt packages the CLI depends on, resolved the way Node resolves them. */
export function packageVersions(): Record<string, string> {
  const require = createRequire(import.meta.url);
  const out: Record<string, string> = { '@rrt/cli': cliVersion() };
  for (const name of ['@rrt/tensor', '@rrt/layers', '@rrt/recursive', '@rrt/lora', '@rrt/batching']) {
    let path: string | undefined;
    try {
      path = require.resolve(`${name}/package.json`);
    } catch {
      path = undefined;
    }
    out[name] = path ? versionAt(path) : 'not installed';
  }
  return out;
}
