import { defineConfig } from 'vitest/config';
import './scripts/node20-polyfills.mjs';
import { fileURLToPath } from 'node:url';

const pkg = (name: string) => fileURLToPath(new URL(`./packages/${name}/src/index.ts`, import.meta.url));

// Tests run against the TypeScript sources; generated artefacts (the wasm kernels) come from `pnpm build`.
export default defineConfig({
  resolve: {
    alias: {
      '@rrt/tensor/node': fileURLToPath(new URL('./packages/tensor/src/node.ts', import.meta.url)),
      '@rrt/tensor': pkg('tensor'),
      '@rrt/layers': pkg('layers'),
      '@rrt/recursive': pkg('recursive'),
      '@rrt/lora': pkg('lora'),
      '@rrt/batching': pkg('batching'),
      '@rrt/cli': pkg('cli'),
    },
  },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'examples/**/*.test.ts', 'tests/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
