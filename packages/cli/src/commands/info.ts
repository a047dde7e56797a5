// `rrt info`: the backend in use, what else is available, threads, and versions: the facts to
// paste into a bug report or next to a benchmark.

import { availableParallelism, cpus, freemem, platform, arch, totalmem } from 'node:os';
import type { Command } from 'commander';
import { execFileSync } from 'node:child_process';
import { listBackends, GPU_MODES, type GpuModeStatus } from '@rrt/tensor';
import { defineAction, withExamples, type RunState } from '../program.js';
import { formatBytes } from '../ui/format.js';
import { packageVersions } from '../version.js';

// Smallest module using a v128 instruction (i8x16.splat; i8x16.popcnt), as wasm-feature-detect checks SIMD.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]);

// lib ES2022 has no WebAssembly typings; Node has the global.
const wasm = (globalThis as unknown as { WebAssembly: { validate(bytes: Uint8Array): boolean } }).WebAssembly;

export interface InfoReport {
  backends: string[];
  /** Each gpu.js mode of the gpu backend: whether it runs here, with its adapter or the reason. */
  gpuModes: GpuModeStatus[];
  threads: { available: number; backend: string | number | boolean | null };
  cpu: string;
  memory: { total: number; free: number; backendInUse: number; backendReserved: number };
  runtime: { node: string; v8: string; platform: string; arch: string };
  wasm: { simd: boolean; sharedMemory: boolean };
  versions: Record<string, string>;
}

/**
 * Each gpu.js mode's status, probed in a child process: Dawn writes notices straight to the
 * process's stderr (which --quiet keeps empty), and a start-up that hangs cannot hold rrt.
 */
function gpuModes(): GpuModeStatus[] {
  const script = `import(${JSON.stringify(import.meta.resolve('@rrt/tensor'))}).then((t) => process.stdout.write(JSON.stringify(t.probeGpuModes())))`;
  try {
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });
    return JSON.parse(out) as GpuModeStatus[];
  } catch (e) {
    const why = (e as { signal?: string }).signal ? 'the probe did not finish within 120 s' : (e as Error).message.split('\n')[0]!;
    return GPU_MODES.map((mode) => ({ mode, runs: false, detail: why }));
  }
}

export function register(parent: Command, state: RunState): void {
  const cmd = parent.command('info').description('show the backend, available backends, threads and versions');
  withExamples(cmd, [
    ['rrt info', 'what this machine and build offer'],
    ['rrt info --backend ref --json', 'the same as JSON, on the ref backend'],
  ]);
  defineAction(cmd, state, {
    run: (ctx) => {
      const backend = ctx.backendChoice.backend;
      const details = backend.info().details;
      const mem = backend.memory();
      const report: InfoReport = {
        backends: listBackends(),
        gpuModes: gpuModes(),
        threads: { available: availableParallelism(), backend: details.threads ?? null },
        cpu: cpus()[0]?.model.trim() ?? 'unknown',
        memory: { total: totalmem(), free: freemem(), backendInUse: mem.bytesInUse, backendReserved: mem.bytesReserved },
        runtime: { node: process.version, v8: process.versions.v8, platform: platform(), arch: arch() },
        wasm: { simd: wasm.validate(SIMD_PROBE), sharedMemory: typeof SharedArrayBuffer === 'function' && typeof Atomics === 'object' },
        versions: packageVersions(),
      };
      ctx.output(
        () => [
          `backends available: ${report.backends.join(', ')}`,
          'gpu.js modes (the gpu backend uses the first that runs):',
          ...report.gpuModes.map((g) => `  ${g.mode}: ${g.runs ? 'runs' : 'cannot run'}${g.detail ? ` (${g.detail})` : ''}`),
          `threads: ${report.threads.available} available${report.threads.backend !== null ? `, backend uses ${String(report.threads.backend)}` : ''}`,
          `cpu: ${report.cpu}`,
          `memory: ${formatBytes(report.memory.total)} total, ${formatBytes(report.memory.free)} free; backend holds ${formatBytes(report.memory.backendInUse)}`,
          `runtime: node ${report.runtime.node} (v8 ${report.runtime.v8}), ${report.runtime.platform} ${report.runtime.arch}`,
          `wasm: simd ${report.wasm.simd ? 'yes' : 'no'}, shared memory ${report.wasm.sharedMemory ? 'yes' : 'no'}`,
          `versions: ${Object.entries(report.versions)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')}`,
        ],
        () => ({ ...report }),
      );
    },
  });
}
