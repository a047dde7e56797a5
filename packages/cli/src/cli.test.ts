import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { REPO_ROOT, errorLines, lines, rrt } from './test-util.js';

// The benchmark itself is slow on the ref backend and tested where it lives; here only its wiring.
const benchMatmul = vi.hoisted(() =>
  vi.fn(async (opts: { shapes?: [number, number, number][] }) => ({
    backend: 'ref',
    details: {},
    matmul: (opts.shapes ?? [[512, 512, 512]]).map(([m, k, n]) => ({ shape: `${m}x${k}x${n}`, m, k, n, medianMs: 1, gflops: (2 * m * k * n) / 1e6 })),
    add4096Us: 1,
    add4096WithAllocUs: 2,
    add4096OpUs: 3,
  })),
);
vi.mock('./bench/matmul.js', () => ({ benchMatmul }));

const GEMMA = 'packages/lora/test/fixtures/gemma-2b.config.json';
const TINYLLAMA = 'packages/lora/test/fixtures/tinyllama-1.1b.config.json';
const PYTHIA = 'packages/lora/test/fixtures/pythia-1b.config.json';

/** Billions in hundredths, rounded: 0.9909e9 -> 99. */
const hundredths = (n: number) => Math.round(n / 1e7);

describe('rrt (framework)', () => {
  it('--help lists the subcommands and exits 0', async () => {
    const r = await rrt(['--help']);
    expect(r.code).toBe(0);
    for (const name of ['train', 'convert', 'relax', 'uptrain', 'exit-train', 'generate', 'eval', 'params', 'serve-bench', 'simulate', 'bench', 'info', 'demo', 'report']) expect(r.stdout).toMatch(new RegExp(`^  ${name}\\b`, 'm'));
    expect(r.stdout).toContain('--backend');
    expect(r.stderr).toBe('');
  });

  it('every subcommand has --help with examples', async () => {
    for (const args of [['train'], ['convert'], ['relax'], ['uptrain'], ['exit-train'], ['generate'], ['eval'], ['params'], ['serve-bench'], ['simulate'], ['bench', 'matmul'], ['info'], ['demo'], ['report']]) {
      const r = await rrt([...args, '--help']);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.stdout, args.join(' ')).toContain('Examples:');
      expect(r.stdout, args.join(' ')).toContain(`$ rrt ${args.join(' ')}`);
      expect(r.stdout).toContain('Global Options:');
    }
  });

  it('no command prints help on stderr and exits 2', async () => {
    const r = await rrt([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage: rrt');
    expect(r.stdout).toBe('');
  });

  it('an unknown option exits 2 with one line saying what to do', async () => {
    const r = await rrt(['params', '--config', GEMMA, '--bogus']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual(["rrt params: unknown option '--bogus'; see 'rrt params --help'"]);
    expect(r.stdout).toBe('');
  });

  it('a near-miss option gets a suggestion, still on one line', async () => {
    const r = await rrt(['params', '--config', GEMMA, '--loop', '2']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain('(did you mean --loops?)');
  });

  it('an unknown command exits 2', async () => {
    const r = await rrt(['frobnicate']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual(["rrt: unknown command 'frobnicate'; see 'rrt --help'"]);
  });

  it('a bad option value exits 2 naming the option and the expectation', async () => {
    const r = await rrt(['params', '--config', GEMMA, '--loops', 'two']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain("'--loops <B>' argument 'two' is invalid");
    expect(r.stderr).toContain('expected an integer >= 1');
  });

  it('a choice outside the list exits 2', async () => {
    const r = await rrt(['params', '--config', GEMMA, '--scheme', 'spiral']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Allowed choices are cycle, sequence, middle-cycle, middle-sequence');
  });

  it('a missing required option exits 2', async () => {
    const r = await rrt(['params']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual(["rrt params: required option '--config <file>' not specified; see 'rrt params --help'"]);
  });

  it('an unavailable backend exits 2 and lists the available ones', async () => {
    const r = await rrt(['--backend', 'nope', 'info']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^rrt info: --backend: backend 'nope' is not available; available here: .*ref/);
    const env = await rrt(['info'], { env: { RRT_BACKEND: 'nope' } });
    expect(env.code).toBe(2);
    expect(env.stderr).toContain("RRT_BACKEND: backend 'nope' is not available");
  });

  it('a failure exits 1 with one line, and a stack only with RRT_DEBUG=1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-cli-'));
    writeFileSync(join(dir, 'bad.json'), '{ "model_type": ');
    const r = await rrt(['params', '--config', join(dir, 'bad.json')]);
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/^rrt params: error: .*bad\.json: not valid JSON/);
    const debug = await rrt(['params', '--config', join(dir, 'bad.json')], { env: { RRT_DEBUG: '1' } });
    expect(debug.code).toBe(1);
    expect(debug.stderr).toContain('    at ');
  });

  it('under --json a failure also prints one JSON error document on stdout', async () => {
    const r = await rrt(['params', '--config', 'no/such/file.json', '--json']);
    expect(r.code).toBe(2);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ command: 'params', error: { exitCode: 2, kind: 'usage' } });
    expect(doc.error.message).toContain('no/such/file.json: no such file');
  });

  it('--version prints the version', async () => {
    const r = await rrt(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('the backend line is a note on stderr; --backend picks the backend', async () => {
    const r = await rrt(['--backend', 'ref', 'info']);
    expect(r.code).toBe(0);
    expect(lines(r.stderr)[0]).toMatch(/^backend: ref \(/);
    expect(r.stdout).not.toMatch(/^backend:/m);
    const after = await rrt(['info', '--backend', 'ref64']);
    expect(lines(after.stderr)[0]).toMatch(/^backend: ref64 \(/);
  });

  it('stdout holds only the result: no backend line, even without -q; -q drops the notes', async () => {
    const r = await rrt(['params', '--config', 'examples/configs/tinyllama-1.1b.config.json']);
    expect(r.code).toBe(0);
    expect(lines(r.stdout)[0]).not.toMatch(/^backend:/);
    expect(lines(r.stderr)[0]).toMatch(/^backend: /);
    const quiet = await rrt(['params', '-q', '--config', 'examples/configs/tinyllama-1.1b.config.json']);
    expect(quiet.stderr).toBe('');
    expect(quiet.stdout).toBe(r.stdout);
  });
});

describe('rrt info', () => {
  it('--json prints exactly one document with the backend, threads and versions; human text goes to stderr', async () => {
    const r = await rrt(['info', '--json', '--backend', 'ref']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.command).toBe('info');
    expect(doc.backend.name).toBe('ref');
    expect(doc.backends).toContain('ref');
    expect(doc.threads.available).toBeGreaterThan(0);
    expect(doc.versions['@rrt/cli']).toMatch(/^\d+\.\d+\.\d+/);
    expect(doc.versions['@rrt/tensor']).toMatch(/^\d+\.\d+\.\d+/);
    expect(typeof doc.wasm.simd).toBe('boolean');
    // Every gpu.js mode with its status; gpu.js's own cpu mode runs anywhere.
    expect(doc.gpuModes.map((g: { mode: string }) => g.mode)).toEqual(['webgpu', 'headlessgl', 'webasm', 'cpu']);
    expect(doc.gpuModes.at(-1)).toMatchObject({ mode: 'cpu', runs: true });
    for (const g of doc.gpuModes) if (!g.runs) expect(g.detail).not.toBe('');
    expect(lines(r.stderr)[0]).toMatch(/^backend: ref/);
  });

  it('--quiet with --json leaves stderr empty', async () => {
    const r = await rrt(['info', '--json', '--quiet']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    JSON.parse(r.stdout);
  });
});

describe('rrt params', () => {
  // PAPER.md section 2: non-embedding parameters in billions. The relaxed entries are
  // round(recursive) + round(LoRA), the paper's own rounding (see @rrt/lora countRelaxedParams).
  const TABLE = [
    { name: 'Gemma 2B, 2 loops', config: GEMMA, loops: 2, recursive: 0.99, relaxed: [1.07, 1.15, 1.3, 1.6] },
    { name: 'Gemma 2B, 3 loops', config: GEMMA, loops: 3, recursive: 0.66, relaxed: [0.74, 0.82, 0.97, 1.27] },
    { name: 'TinyLlama 1.1B, 2 loops', config: TINYLLAMA, loops: 2, recursive: 0.48, relaxed: [0.53, 0.58, 0.68, 0.86] },
    { name: 'Pythia 1B, 2 loops', config: PYTHIA, loops: 2, recursive: 0.4, relaxed: [0.44, 0.48, 0.55, 0.7] },
  ];

  it('Gemma 2B, 2 loops, r = 64 --json: 1.07 B non-embedding, exact counts', async () => {
    const r = await rrt(['params', '--config', GEMMA, '--loops', '2', '--rank', '64', '--json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ command: 'params', scheme: 'cycle', loops: 2, sharedLayers: 9, depthPositions: 18 });
    expect(doc.backend.name).toEqual(expect.any(String));
    expect(doc.full.nonEmbedding).toBe(1_981_884_416);
    expect(Number.isInteger(doc.relaxed.nonEmbedding)).toBe(true);
    expect(doc.relaxed.nonEmbedding).toBe(doc.recursive.nonEmbedding + doc.lora.total);
    expect(hundredths(doc.recursive.nonEmbedding)).toBe(99);
    expect(hundredths(doc.relaxed.nonEmbedding)).toBe(107);
    expect(doc.lora.modules.map((m: { target: string }) => m.target)).toEqual(['q', 'k', 'v', 'o', 'gate', 'up', 'down']);
  });

  it.each(TABLE)("$name matches the paper's table at r = 0, 64, 128, 256, 512", async ({ config, loops, recursive, relaxed }) => {
    const plain = JSON.parse((await rrt(['params', '--config', config, '--loops', String(loops), '--json'])).stdout);
    expect(hundredths(plain.recursive.nonEmbedding)).toBe(Math.round(recursive * 100));
    expect(plain.lora).toBeNull();
    const got: number[] = [];
    for (const rank of [64, 128, 256, 512]) {
      const r = await rrt(['params', '--config', config, '--loops', String(loops), '--rank', String(rank), '--json']);
      expect(r.code).toBe(0);
      const doc = JSON.parse(r.stdout);
      got.push(hundredths(doc.recursive.nonEmbedding) + hundredths(doc.lora.total));
    }
    expect(got).toEqual(relaxed.map((v) => Math.round(v * 100)));
  });

  it('human output: billions with 2 decimals (the backend line is on stderr)', async () => {
    const r = await rrt(['params', '--config', GEMMA, '--loops', '2', '--rank', '64']);
    expect(r.code).toBe(0);
    const out = lines(r.stdout);
    expect(lines(r.stderr)[0]).toMatch(/^backend: /);
    expect(r.stdout).toContain('sharing: CYCLE, 2 loops: 9 shared layers run at 18 depth positions');
    expect(out.find((l) => l.startsWith('full'))).toMatch(/1\.98 B/);
    expect(out.find((l) => l.startsWith('recursive'))).toMatch(/0\.99 B/);
    expect(out.find((l) => l.startsWith('relaxed'))).toMatch(/1\.07 B/);
    expect(lines(r.stderr)).toHaveLength(1);
  });

  it('reports ranks capped by the matrix size (Gemma k/v at r = 512)', async () => {
    const r = await rrt(['params', '--config', GEMMA, '--loops', '2', '--rank', '512']);
    expect(r.stdout).toContain('capped by the matrix size: k at 256, v at 256');
  });

  it('units follow the size: the shipped model in M, not 0.00 B', async () => {
    const r = await rrt(['params', '--config', 'packages/layers/models/kjv-llama/config.json', '--loops', '2', '--rank', '16']);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain('0.00 B');
    expect(r.stdout).toMatch(/^full \(6 layers\) +\d+\.\d\d M +\d+\.\d\d M$/m);
    expect(r.stdout).toMatch(/^\+ LoRA r=16 +0\.42 M/m);
  });

  it('every --help example runs as written, on configs that ship with the repository', async () => {
    const help = await rrt(['params', '--help']);
    const examples = [...help.stdout.matchAll(/^ {2}\$ rrt (.+?) +# /gm)].map((m) => m[1]!.trim().split(/ +/));
    expect(examples.length).toBeGreaterThanOrEqual(4);
    for (const argv of examples) {
      const r = await rrt(argv);
      expect(r.code, `rrt ${argv.join(' ')}: ${r.stderr}`).toBe(0);
    }
    const gemma = await rrt(['params', '--config', 'examples/configs/gemma-2b.config.json', '--loops', '2', '--rank', '64']);
    expect(gemma.stdout).toMatch(/^relaxed +1\.07 B/m);
  });

  it('a loop count the model cannot be split into is bad usage listing the valid ones', async () => {
    const r = await rrt(['params', '--config', GEMMA, '--loops', '4']);
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain('--loops 4');
    expect(r.stderr).toContain('1, 2, 3, 6, 9, 18');
  });

  it('other schemes and per-group ranks', async () => {
    const r = await rrt(['params', '--config', GEMMA, '--loops', '2', '--scheme', 'middle-cycle', '--rank', '0', '--mlp-rank', '8', '--targets', 'up,down', '--json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.sharedLayers).toBe(10);
    expect(doc.lora.modules.map((m: { target: string; rank: number }) => [m.target, m.rank])).toEqual([
      ['up', 8],
      ['down', 8],
    ]);
    expect(doc.lora.total).toBe(18 * 2 * 8 * (2048 + 16384));
  });

  it('a config file with "model" and option values; flags override the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-cli-'));
    const fixture = join(REPO_ROOT, GEMMA);
    writeFileSync(join(dir, 'run.json'), JSON.stringify({ model: fixture, loops: 3, rank: 64 }));
    const fromFile = JSON.parse((await rrt(['params', '--config', join(dir, 'run.json'), '--json'])).stdout);
    expect(fromFile).toMatchObject({ loops: 3, lora: { rank: 64 } });
    const overridden = JSON.parse((await rrt(['params', '--config', join(dir, 'run.json'), '--loops', '2', '--json'])).stdout);
    expect(overridden).toMatchObject({ loops: 2, lora: { rank: 64 } });
    expect(hundredths(overridden.relaxed.nonEmbedding)).toBe(107);
    writeFileSync(join(dir, 'typo.json'), JSON.stringify({ model: fixture, loop: 2 }));
    const typo = await rrt(['params', '--config', join(dir, 'typo.json')]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('unknown key "loop"');
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ model: fixture, loops: 'x' }));
    const bad = await rrt(['params', '--config', join(dir, 'bad.json')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('"loops": expected an integer >= 1');
  });
});

describe('rrt simulate', () => {
  it('--paper --json runs the paper setting and reports every row', async () => {
    const r = await rrt(['simulate', '--paper', '--requests', '16', '--decode', '64', '--prefix', '32', '--json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.command).toBe('simulate');
    expect(doc.rows.map((row: { key: string }) => row.key)).toEqual(expect.arrayContaining(['vanilla-static', 'vanilla-sequence', 'recursive2-depthwise-exit']));
    for (const row of doc.rows) expect(row.throughput).toBeGreaterThan(0);
    expect(doc.assumptions.requests).toBe(16);
  });

  it('human output is a table, and --plot writes an SVG', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrt-cli-'));
    const r = await rrt(['simulate', '--paper', '--requests', '8', '--decode', '32', '--prefix', '16', '--plot', join(dir, 't.svg')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^backend: /);
    expect(r.stdout).toContain('tokens/s');
    expect(r.stdout).toContain('recursive2-depthwise-exit');
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(join(dir, 't.svg'), 'utf8')).toMatch(/^<svg/);
  });

  it('--fit simulates the fitted reading of the paper and shows ratios against sequence-wise too', async () => {
    const r = await rrt(['simulate', '--paper', '--fit', '--requests', '64', '--json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.assumptions.decodeLength).toEqual({ min: 1160, max: 2936 });
    expect(doc.assumptions.prefill).toBe('not charged');
    const cdb = doc.rows.find((row: { key: string }) => row.key === 'recursive2-depthwise-exit');
    expect(cdb.speedupVsSequence).toBeGreaterThan(1.5);
    const human = await rrt(['simulate', '--paper', '--fit', '--requests', '32']);
    expect(human.stdout).toMatch(/vs seq .* paper vs seq/);
  });

  it('--mix-prefill lets prompts join the decode calls', async () => {
    const args = ['simulate', '--paper', '--requests', '16', '--decode', '32', '--prefix', '16', '--arrival', 'poisson:200', '--json'];
    const [mixed, separate] = await Promise.all([rrt([...args, '--mix-prefill']), rrt(args)]);
    expect(mixed.code).toBe(0);
    const m = JSON.parse(mixed.stdout), s = JSON.parse(separate.stdout);
    expect(m.assumptions.prefill).toMatch(/^admitted prompts join the decode calls/);
    expect(s.assumptions.prefill).toMatch(/^admitted requests are prefilled together/);
    // Requests arriving while others decode: their prompts ride in decode calls, fewer calls in all.
    const cdb = (doc: { rows: { key: string; steps: number; throughput: number }[] }) => doc.rows.find((row) => row.key === 'recursive2-depthwise-exit')!;
    expect(cdb(m).steps).toBeLessThan(cdb(s).steps);
    expect(cdb(m).throughput).toBeGreaterThan(cdb(s).throughput);
  });

  it('is only the paper setting for now: --paper is required', async () => {
    const r = await rrt(['simulate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("required option '--paper'");
  });
});

describe('rrt bench matmul', () => {
  it('--json passes the flags to benchMatmul and prints its report with the backend', async () => {
    const r = await rrt(['bench', 'matmul', '--backend', 'ref', '--shapes', '64x32x16,8x8x8', '--repeats', '2', '--json']);
    expect(r.code).toBe(0);
    expect(benchMatmul).toHaveBeenLastCalledWith({ shapes: [[64, 32, 16], [8, 8, 8]], repeats: 2, tfjs: true, linear: false });
    const doc = JSON.parse(r.stdout);
    expect(doc.command).toBe('bench matmul');
    expect(doc.backend.name).toBe('ref');
    expect(doc.matmul.map((m: { shape: string }) => m.shape)).toEqual(['64x32x16', '8x8x8']);
    expect(doc.add4096Us).toBe(1);
    const plain = await rrt(['bench', 'matmul']);
    expect(plain.code).toBe(0);
    expect(benchMatmul).toHaveBeenLastCalledWith({ tfjs: true, linear: false });
    expect(plain.stdout).toMatch(/^512x512x512 /m);
    await rrt(['bench', 'matmul', '--no-tfjs', '--linear']);
    expect(benchMatmul).toHaveBeenLastCalledWith({ tfjs: false, linear: true });
  });

  it('human output is a table (rendered from a report); a bad shape is bad usage', async () => {
    const { matmulLines } = await import('./commands/bench.js');
    const text = matmulLines(
      {
        backend: 'cpu',
        details: {},
        matmul: [{ shape: '512x512x512', m: 512, k: 512, n: 512, medianMs: 2.5, gflops: 107.4, gflops1Thread: 55.2 }],
        add4096Us: 1.2,
        add4096WithAllocUs: 2.4,
        add4096OpUs: 3.1,
        tfjs: { error: 'not installed' },
      },
      5,
    );
    expect(text[0]).toBe('matmul, float32, median of 5 repeats:');
    expect(text[1]).toMatch(/^shape \(m x k x n\) +median ms +GFLOP\/s +1 thread$/);
    expect(text[3]).toMatch(/^512x512x512 +2\.500 +107\.4 +55\.2$/);
    expect(text).toContain('tfjs: not measured (not installed)');
    const linear = matmulLines(
      {
        backend: 'cpu',
        details: {},
        matmul: [{ shape: '32x256x256', m: 32, k: 256, n: 256, medianMs: 0.05, gflops: 84, linearMedianMs: 0.06, linearPackedMedianMs: 0.048, packedSpeedup: 1.25 }],
        add4096Us: 1.2,
        add4096WithAllocUs: 2.4,
        add4096OpUs: 3.1,
      },
      5,
    );
    expect(linear[1]).toMatch(/GFLOP\/s +x W\^T ms +W packed ms +packed gain$/);
    expect(linear[3]).toMatch(/^32x256x256 +0\.050 +84\.0 +0\.0600 +0\.0480 +1\.25x$/);
    const bad = await rrt(['bench', 'matmul', '--shapes', '8x8']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('expected shapes like 256x512x1024');
  });
});
