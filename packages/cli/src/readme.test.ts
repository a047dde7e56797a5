// Every `rrt ...` command in the READMEs' sh blocks runs as written on a fresh clone: the
// commands of each README run in document order (later ones read the folders earlier ones
// write) from a scratch copy of the repository root, with tiny sizes appended (a flag given
// twice takes its last value) so the whole page runs in seconds. The shipped teacher is swapped
// for a tiny model trained first; everything else is the repository's own files.
//
// Not run: the `rrt demo` section of packages/cli/README.md (minutes of training; its own tests
// cover it) and `rrt report`, which redraws the report a demo run wrote.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, rrt } from './test-util.js';

const TEACHER = 'packages/layers/models/kjv-llama';

/** `rrt` command lines of the ```sh blocks of `markdown`, minus `# comments`, `$ ` and `pnpm `. */
export function readmeCommands(markdown: string): string[] {
  const out: string[] = [];
  for (const block of markdown.matchAll(/^```(?:sh|bash|shell)\n([\s\S]*?)^```/gm)) {
    for (const raw of block[1]!.split('\n')) {
      const line = raw.replace(/^\$ /, '').replace(/^pnpm /, '').replace(/\s+#.*$/, '').trim();
      if (line.startsWith('rrt ')) out.push(line);
    }
  }
  return out;
}

/** Shell words: spaces split, double or single quotes group. */
function words(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
}

const RUN = ['--seq-len', '16', '--batch-size', '2', '--eval-batches', '1', '--eval-every', '0', '--checkpoint-every', '0', '--no-cache'];

// A BPE tokenizer trains in seconds on a slice of the corpus (written by makeScratch).
const BPE_SAMPLE = 'bpe-sample.txt';

/** Flags appended to a README command so it runs in seconds (the last value of a flag wins). */
function tiny(argv: string[]): string[] {
  const [command, sub] = argv;
  const resume = argv.includes('--resume');
  switch (command) {
    case 'train':
      // A resumed run continues up to --steps, so it asks for one more.
      if (resume) return [...RUN, '--steps', '3'];
      return [...RUN, '--steps', '2', '--layers', '2', '--hidden', '32', '--heads', '2', '--vocab-size', '300', ...(argv.includes('bpe') ? ['--data', BPE_SAMPLE] : [])];
    case 'uptrain':
    case 'exit-train':
      return [...RUN, '--steps', resume ? '2' : '1'];
    case 'eval':
      return ['--seq-len', '16', '--batch-size', '2', '--max-batches', '1', '--no-cache'];
    case 'generate':
      return ['--max-new-tokens', '3'];
    case 'serve-bench':
      return ['--requests', '2', '--max-batch', '2', '--prompt-tokens', '2-4', '--new-tokens', '2-3', '--warmup', '0', '--repeats', '1', '--no-cache'];
    case 'simulate':
      return ['--requests', '8', '--decode', '16-32', '--prefix', '8'];
    case 'bench':
      if (sub !== 'matmul') return [];
      return argv.includes('gpu') ? ['--size', '16', '--repeats', '1', '--modes', 'cpu'] : ['--shapes', '32x32x32', '--repeats', '1', '--no-tfjs'];
    default:
      return [];
  }
}

const scratchDirs: string[] = [];

/** A scratch repository root: links to the repository's files, the teacher replaced by a tiny model. */
async function makeScratch(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'rrt-readme-'));
  for (const f of ['README.md', 'examples']) symlinkSync(join(REPO_ROOT, f), join(dir, f));
  mkdirSync(join(dir, 'packages/layers/models'), { recursive: true });
  symlinkSync(join(REPO_ROOT, 'packages/layers/data'), join(dir, 'packages/layers/data'));
  writeFileSync(join(dir, BPE_SAMPLE), readFileSync(join(REPO_ROOT, 'packages/layers/data/kjv.txt'), 'utf8').slice(0, 64 * 1024));
  // Six layers, as the shipped teacher has, so every loop count the READMEs use divides it.
  const teacher = await rrt(['train', '--out', join(dir, TEACHER), '--layers', '6', '--hidden', '32', '--heads', '2', ...RUN, '--steps', '2'], { cwd: dir });
  expect(teacher.code, teacher.stderr).toBe(0);
  // The shipped teacher's config.json, for `rrt params`, is the real one.
  writeFileSync(join(dir, TEACHER, 'params.config.json'), readFileSync(join(REPO_ROOT, TEACHER, 'config.json')));
  return dir;
}

/** Runs a README's commands in order in a fresh scratch root; returns each failure. */
async function runAll(markdown: string, skip: (argv: string[]) => boolean): Promise<{ ran: number; failures: string[] }> {
  const dir = await makeScratch();
  scratchDirs.push(dir);
  const failures: string[] = [];
  let ran = 0;
  for (const line of readmeCommands(markdown)) {
    const argv = words(line).slice(1);
    if (skip(argv)) continue;
    // `rrt params` of the real shipped config (its tiny stand-in would print other numbers).
    const args = argv.map((a) => (a === `${TEACHER}/config.json` ? `${TEACHER}/params.config.json` : a));
    const r = await rrt([...args, ...tiny(args)], { cwd: dir });
    ran++;
    if (r.code !== 0) failures.push(`${line}\n  exit ${r.code}: ${r.stderr.trim().split('\n').at(-1)}`);
  }
  return { ran, failures };
}

describe('README commands', () => {
  afterAll(() => {
    for (const dir of scratchDirs) rmSync(dir, { recursive: true, force: true });
  });

  it('extracts commands from sh blocks', () => {
    expect(readmeCommands('x\n```sh\nrrt a --b "c d"   # note\n$ pnpm rrt e\nnpx other\n```\n```ts\nrrt no\n```\n')).toEqual(['rrt a --b "c d"', 'rrt e']);
    expect(words('rrt a --b "c d" \'e f\'')).toEqual(['rrt', 'a', '--b', 'c d', 'e f']);
  });

  it('the root README: every command runs', async () => {
    const { ran, failures } = await runAll(readFileSync(join(REPO_ROOT, 'README.md'), 'utf8'), () => false);
    expect(ran).toBeGreaterThanOrEqual(6);
    expect(failures.join('\n')).toBe('');
  });

  it('packages/cli/README.md: every command outside the demo section runs', async () => {
    const text = readFileSync(join(REPO_ROOT, 'packages/cli/README.md'), 'utf8');
    const demo = text.indexOf('### `rrt demo`'), report = text.indexOf('### `rrt report`');
    expect(demo).toBeGreaterThan(0);
    const page = text.slice(0, demo) + text.slice(report);
    const { ran, failures } = await runAll(page, (argv) => argv[0] === 'report' || argv[0] === 'demo');
    expect(ran).toBeGreaterThanOrEqual(30);
    expect(failures.join('\n')).toBe('');
  });
});
