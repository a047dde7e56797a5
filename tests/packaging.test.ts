// Every package builds to ESM + .d.ts, has a correct exports map (types first), a README, and
// packs cleanly: publint reports no error or warning on the packed tarball's file list. A package
// with a "browser" export condition ships a built browser entry that imports no Node module
// (following its chunks) and exports nothing its Node entry lacks, browser-only helpers aside.

import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { publint } from 'publint';

const root = join(import.meta.dirname, '..');
const NODE_BUILTINS = new Set(builtinModules);
/** Exports only the browser entries have. */
const BROWSER_ONLY = new Set(['createBrowserGpuBackend', 'registerBrowserGpuBackend', 'BROWSER_GPU_MODES']);
const packages = readdirSync(join(root, 'packages')).filter((p) => existsSync(join(root, 'packages', p, 'package.json')));

describe.each(packages)('package %s', (name) => {
  const dir = join(root, 'packages', name);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));

  it('is named @rrt/<dir>, has a README and depends on siblings with workspace:*', () => {
    expect(pkg.name).toBe(`@rrt/${name}`);
    expect(existsSync(join(dir, 'README.md'))).toBe(true);
    expect(pkg.description?.length ?? 0).toBeGreaterThan(10);
    for (const [dep, range] of Object.entries<string>(pkg.dependencies ?? {})) if (dep.startsWith('@rrt/')) expect(range).toBe('workspace:*');
  });

  it('exports map lists types first and points at built files', () => {
    for (const [key, entry] of Object.entries<Record<string, string> | string>(pkg.exports)) {
      if (typeof entry === 'string') continue;
      expect(Object.keys(entry)[0], key).toBe('types');
      for (const file of Object.values(entry)) expect(existsSync(join(dir, file)), `${key} -> ${file}`).toBe(true);
    }
  });

  it('publint finds no problem in the packed package', async () => {
    const { messages } = await publint({ pkgDir: dir, level: 'warning', pack: 'pnpm' });
    expect(messages.map((m) => `${m.type} ${m.code} ${JSON.stringify(m.args)}`)).toEqual([]);
  });

  it('pnpm pack produces a tarball with the entry files', () => {
    const out = mkdtempSync(join(tmpdir(), `rrt-pack-${name}-`));
    execFileSync('npx', ['-y', 'pnpm@12.4.2', 'pack', '--pack-destination', out], { cwd: dir, stdio: 'pipe' });
    const tgz = readdirSync(out).find((f) => f.endsWith('.tgz'));
    expect(tgz).toBeDefined();
    const list = execFileSync('tar', ['-tzf', join(out, tgz!)], { encoding: 'utf8' });
    expect(list).toContain('package/dist/index.js');
    expect(list).toContain('package/dist/index.d.ts');
    expect(list).toContain('package/README.md');
  });

  const browser = pkg.exports?.['.']?.browser as string | undefined;
  it.skipIf(!browser)('browser entry: built, exported as ./browser too, and free of Node imports', () => {
    expect(pkg.exports['./browser']?.import, 'a "./browser" subpath export names the same file').toBe(browser);
    const seen = new Set<string>();
    const nodeImports: string[] = [];
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const code = readFileSync(file, 'utf8');
      for (const m of code.matchAll(/(?:from\s*|import\s*\(?\s*)["']([^"']+)["']/g)) {
        const spec = m[1]!;
        if (spec.startsWith('node:') || NODE_BUILTINS.has(spec)) nodeImports.push(`${file.slice(dir.length + 1)} imports ${spec}`);
        else if (spec.startsWith('.')) visit(join(dirname(file), spec));
      }
    };
    visit(join(dir, browser!));
    expect(nodeImports).toEqual([]);
  });

  it.skipIf(!browser)('browser entry exports a subset of the Node entry (plus browser-only helpers)', async () => {
    const node = await import(join(dir, pkg.exports['.'].import));
    const web = await import(join(dir, browser!));
    const extra = Object.keys(web).filter((k) => !(k in node) && !BROWSER_ONLY.has(k));
    expect(extra).toEqual([]);
    expect(Object.keys(web).length).toBeGreaterThan(10);
  });
});
