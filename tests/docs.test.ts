// The docs CI checks: the API reference builds with typedoc (typedoc.json, as `pnpm docs`) without
// a single warning, and the root README's promises hold: its code example is the quickstart
// example that examples/examples.test.ts runs, and it links to every package's README.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');

function typedoc(out: string): Promise<{ code: number | null; output: string }> {
  const bin = join(createRequire(join(root, 'package.json')).resolve('typedoc/package.json'), '..', 'bin', 'typedoc');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, '--out', out, '--treatWarningsAsErrors', '--logLevel', 'Warn'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (code) => resolve({ code, output }));
  });
}

describe('API reference (typedoc)', () => {
  it('builds every package with zero warnings', async () => {
    const out = mkdtempSync(join(tmpdir(), 'rrt-api-'));
    const r = await typedoc(out);
    expect(r.output.trim(), 'typedoc printed warnings or errors').toBe('');
    expect(r.code).toBe(0);
    // One page per package entry point.
    const modules = readdirSync(join(out, 'modules'));
    for (const pkg of ['tensor', 'layers', 'recursive', 'lora', 'batching', 'cli']) expect(modules.some((m) => m.includes(pkg)), pkg).toBe(true);
  }, 300_000);
});

describe('root README', () => {
  it('its code example is examples/quickstart.ts, which the examples test runs', () => {
    const block = /## Using the packages[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeDefined();
    const example = readFileSync(join(root, 'examples', 'quickstart.ts'), 'utf8');
    expect(example).toContain(block!);
    const examplesTest = readFileSync(join(root, 'examples', 'examples.test.ts'), 'utf8');
    expect(examplesTest).toContain("['quickstart.ts',");
  });

  it('links to the README of every package, and every relative link resolves', () => {
    for (const pkg of readdirSync(join(root, 'packages'))) {
      if (existsSync(join(root, 'packages', pkg, 'package.json'))) expect(readme).toContain(`(packages/${pkg}/README.md)`);
    }
    for (const [, target] of readme.matchAll(/\]\(([^)#]+)(?:#[^)]*)?\)/g)) {
      if (/^https?:/.test(target!)) continue;
      expect(existsSync(join(root, target!)), target).toBe(true);
    }
  });

  it('the quick-start commands are the root scripts it names', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string>; packageManager: string };
    expect(readme).toContain(`npx -y ${pkg.packageManager} install && npx -y ${pkg.packageManager} demo`);
    expect(readme).toContain(`npx -y ${pkg.packageManager} install && npx -y ${pkg.packageManager} test`);
    for (const s of ['demo', 'test', 'docs', 'build']) expect(pkg.scripts[s], s).toBeDefined();
  });
});
