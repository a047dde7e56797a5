// Vite config of the browser example. The page imports the rrt packages by name; by default they
// resolve to their browser entries' TypeScript sources (no build needed), and with
// RRT_WEB_PACKAGES=dist to the built packages through their "browser" export condition. The
// model files and gpu.js's browser build are served (dev) or emitted (build) under rrt-assets/.
// The page must be cross-origin isolated (SharedArrayBuffer for the gpu backend's device worker).

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const packages = join(root, 'packages');

/** Files the page fetches, by the name it asks for. */
export function assetFiles(): Record<string, string> {
  const gpujs = dirname(createRequire(join(packages, 'tensor', 'package.json')).resolve('gpu.js/package.json'));
  const model = join(packages, 'layers', 'models', 'kjv-llama');
  return {
    'config.json': join(model, 'config.json'),
    'model.safetensors': join(model, 'model.safetensors'),
    'tokenizer.json': join(model, 'tokenizer.json'),
    'gpu-browser.min.js': join(gpujs, 'dist', 'gpu-browser.min.js'),
  };
}

const TYPES: Record<string, string> = { json: 'application/json', js: 'text/javascript', safetensors: 'application/octet-stream' };

function rrtAssets(): Plugin {
  const files = assetFiles();
  return {
    name: 'rrt-assets',
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        const m = /^\/rrt-assets\/([^?]+)/.exec(req.url ?? '');
        const file = m ? files[m[1]!] : undefined;
        if (!file) return next();
        res.setHeader('Content-Type', TYPES[file.split('.').pop()!] ?? 'application/octet-stream');
        res.end(readFileSync(file));
      });
    },
    generateBundle() {
      for (const [name, file] of Object.entries(files)) this.emitFile({ type: 'asset', fileName: `rrt-assets/${name}`, source: readFileSync(file) });
    },
  };
}


/**
 * Fails the build when a module of the page imports a Node built-in (Vite would swap in an empty
 * stand-in and the page would break at run time): browser entries must not.
 */
function noNodeImports(): Plugin {
  return {
    name: 'rrt-no-node-imports',
    buildEnd() {
      const offenders: string[] = [];
      for (const id of this.getModuleIds()) {
        if (!id.includes('__vite-browser-external')) continue;
        const name = id.replace(/^.*__vite-browser-external:?/, '');
        for (const importer of this.getModuleInfo(id)?.importers ?? []) offenders.push(`${importer} imports "${name}"`);
        for (const importer of this.getModuleInfo(id)?.dynamicImporters ?? []) offenders.push(`${importer} imports "${name}" dynamically`);
        if (offenders.length === 0) offenders.push(`a module imports "${name}"`);
      }
      if (offenders.length > 0) this.error(`Node modules in the browser bundle (keep them behind the packages' Node entries):\n  ${offenders.join('\n  ')}`);
    },
  };
}

const fromSources = process.env.RRT_WEB_PACKAGES !== 'dist';
const src = (pkg: string, entry: string) => join(packages, pkg, 'src', entry);
const isolation = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

export default defineConfig({
  root: here,
  base: './',
  logLevel: 'warn',
  plugins: [noNodeImports(), rrtAssets()],
  resolve: {
    alias: fromSources
      ? [
          { find: /^@rrt\/tensor(\/browser)?$/, replacement: src('tensor', 'browser.ts') },
          { find: /^@rrt\/layers$/, replacement: src('layers', 'browser.ts') },
          { find: /^@rrt\/recursive$/, replacement: src('recursive', 'browser.ts') },
          { find: /^@rrt\/lora$/, replacement: src('lora', 'browser.ts') },
          { find: /^@rrt\/batching$/, replacement: src('batching', 'index.ts') },
        ]
      : [],
  },
  worker: { format: 'es', plugins: () => [noNodeImports()] },
  build: { outDir: process.env.RRT_WEB_OUT ?? join(here, 'dist'), emptyOutDir: true, chunkSizeWarningLimit: 2048, target: 'es2022' },
  server: { headers: isolation, fs: { allow: [root] } },
  preview: { headers: isolation },
});
