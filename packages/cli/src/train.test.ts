import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { errorLines, lines, rrt } from './test-util.js';

// A corpus of 40 sections (blank-line separated) so the 5% held-out split has two of them.
function corpus(): string {
  const words = ['alpha', 'beta', 'gamma', 'delta', 'light', 'water', 'earth', 'seed'];
  const sections: string[] = [];
  for (let s = 0; s < 40; s++) {
    const verse = Array.from({ length: 12 }, (_, i) => words[(s * 7 + i * 3) % words.length]).join(' ');
    sections.push(`Chapter ${s + 1}\n${verse}.\n${verse.split(' ').reverse().join(' ')}.`);
  }
  return sections.join('\n\n') + '\n';
}

const TINY = ['--backend', 'ref', '--layers', '1', '--hidden', '16', '--heads', '2', '--seq-len', '16', '--batch-size', '4', '--eval-batches', '1', '--no-cache'];

describe('rrt train / generate / eval', () => {
  let dir: string;
  let data: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'rrt-train-'));
    data = join(dir, 'corpus.txt');
    writeFileSync(data, corpus());
  });

  it('trains, evaluates, checkpoints and writes a loadable model folder (--json)', async () => {
    const out = join(dir, 'run');
    const r = await rrt(['train', '--data', data, '--out', out, ...TINY, '--steps', '6', '--eval-every', '3', '--checkpoint-every', '3', '--warmup', '1', '--seed', '7', '--json']);
    expect(r.stderr).not.toContain('error');
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ command: 'train', startStep: 0, steps: 6, targetSteps: 6, interrupted: false, seed: 7, skippedSteps: 0 });
    expect(doc.model).toMatchObject({ family: 'llama', layers: 1, hidden: 16, vocab: 257 });
    expect(doc.lastLoss).toBeGreaterThan(0);
    expect(doc.evals.map((e: { step: number }) => e.step)).toEqual([3, 6]);
    expect(doc.evals[1].metrics.bitsPerByte).toBeGreaterThan(0);
    expect(doc.tokens).toBe(6 * 4 * 16);
    for (const f of ['config.json', 'tokenizer.json', 'model.safetensors', 'rrt-train.json', 'checkpoints/step-00000006.json']) expect(existsSync(join(out, f)), f).toBe(true);
    // Human text went to stderr: the backend line, the model line, loss lines (no TTY, so no bar).
    const err = lines(r.stderr);
    expect(err[0]).toMatch(/^backend: ref/);
    expect(r.stderr).toMatch(/step 6\/6 {2}loss \d/);
    expect(r.stderr).toContain('eval at step 3');
  });

  it('--resume continues from the latest checkpoint with the saved options', async () => {
    const out = join(dir, 'run');
    const r = await rrt(['train', '--out', out, '--resume', '--steps', '8', '--backend', 'ref', '--json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ startStep: 6, steps: 8, interrupted: false, data });
    expect(doc.tokens).toBe(2 * 4 * 16);
    expect(r.stderr).toContain('resumed from step 6');
  });

  it('refuses to overwrite a run without --resume, and --resume without a run', async () => {
    const again = await rrt(['train', '--data', data, '--out', join(dir, 'run'), ...TINY, '--steps', '2']);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('already holds a run; add --resume');
    const none = await rrt(['train', '--out', join(dir, 'nothing-here'), '--resume']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('holds no run');
  });

  it('Ctrl-C stops after the current step, saves a checkpoint and exits 130; --resume finishes the run', async () => {
    const out = join(dir, 'interrupted');
    const r = await rrt(['train', '--data', data, '--out', out, ...TINY, '--steps', '50', '--schedule', 'constant', '--eval-every', '0', '--checkpoint-every', '0'], {
      onInterrupt: (handler) => {
        // Fires once the first step has run and the trainer yields to the event loop.
        const t = setImmediate(handler);
        return () => clearImmediate(t);
      },
    });
    expect(r.code).toBe(130);
    expect(r.stdout).toMatch(/interrupted at step (\d+) of 50; continue with: rrt train --out .* --resume/);
    const step = Number(/interrupted at step (\d+)/.exec(r.stdout)![1]);
    expect(step).toBeLessThan(50);
    expect(existsSync(join(out, `checkpoints/step-${String(step).padStart(8, '0')}.json`))).toBe(true);
    const resumed = await rrt(['train', '--out', out, '--resume', '--steps', String(step + 2), '--backend', 'ref', '--json']);
    expect(resumed.code).toBe(0);
    expect(JSON.parse(resumed.stdout)).toMatchObject({ startStep: step, steps: step + 2 });
  });

  it('on a terminal a progress bar with tok/s, loss and ETA replaces the loss lines; --quiet turns it off', async () => {
    const tty = await rrt(['train', '--data', data, '--out', join(dir, 'tty'), ...TINY, '--steps', '3', '--eval-every', '0'], { tty: true });
    expect(tty.code).toBe(0);
    expect(tty.stderr).toContain('\r\x1b[2Ktrain ');
    expect(tty.stderr).toMatch(/3\/3 steps \| [\d.]+k? tok\/s \| loss \d/);
    expect(tty.stderr).not.toMatch(/step 3\/3 {2}loss/);
    const quiet = await rrt(['train', '--data', data, '--out', join(dir, 'tty-quiet'), ...TINY, '--steps', '3', '--eval-every', '0', '--quiet'], { tty: true });
    expect(quiet.code).toBe(0);
    expect(quiet.stderr).toBe('');
  });

  it('a config file gives the options and flags override it', async () => {
    const cfg = join(dir, 'train.json');
    writeFileSync(cfg, JSON.stringify({ data, layers: 1, hidden: 16, heads: 2, 'seq-len': 16, batchSize: 4, steps: 5, evalBatches: 1, cache: false, schedule: 'constant' }));
    const r = await rrt(['train', '--config', cfg, '--out', join(dir, 'from-config'), '--steps', '3', '--backend', 'ref', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ steps: 3, model: { hidden: 16, layers: 1 } });
    const saved = JSON.parse(readFileSync(join(dir, 'from-config', 'rrt-train.json'), 'utf8'));
    expect(saved.options).toMatchObject({ steps: 3, hidden: 16, seqLen: 16 });
  });

  it('bad values are usage errors', async () => {
    const r = await rrt(['train', '--data', data, '--out', join(dir, 'bad'), ...TINY, '--hidden', '15']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--hidden 15 is not divisible by --heads 2');
    const lr = await rrt(['train', '--out', join(dir, 'bad'), '--lr', '-1']);
    expect(lr.code).toBe(2);
    expect(lr.stderr).toContain("'--lr <rate>' argument '-1' is invalid");
  });

  it('generate streams text from the trained folder; --json gives tokens and text', async () => {
    const out = join(dir, 'run');
    const human = await rrt(['generate', '--model', out, '--backend', 'ref', '--max-new-tokens', '5', '--temperature', '0', 'alpha']);
    expect(human.code).toBe(0);
    // stdout is the text alone (`rrt generate > out.txt`); the backend line is a note on stderr.
    expect(human.stdout.startsWith('alpha')).toBe(true);
    expect(lines(human.stderr)[0]).toMatch(/^backend: ref/);
    const a = JSON.parse((await rrt(['generate', '--model', out, '--backend', 'ref', '--max-new-tokens', '6', '--seed', '3', '--json', '--prompt', 'beta'])).stdout);
    const b = JSON.parse((await rrt(['generate', '--model', out, '--backend', 'ref', '--max-new-tokens', '6', '--seed', '3', '--json', '--prompt', 'beta'])).stdout);
    expect(a).toMatchObject({ command: 'generate', prompt: 'beta', finishReason: expect.any(String) });
    expect(a.tokens.length).toBeGreaterThan(0);
    expect(a.tokens.length).toBeLessThanOrEqual(6);
    expect(b.tokens).toEqual(a.tokens);
    const none = await rrt(['generate', '--model', out, '--backend', 'ref']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('no prompt');
    // The shipped model's tokenizer has more ids than this byte-level model has embeddings.
    const shipped = fileURLToPath(new URL('../../layers/models/kjv-llama/tokenizer.json', import.meta.url));
    const mismatch = await rrt(['generate', '--model', out, '--backend', 'ref', '--tokenizer', shipped, 'alpha']);
    expect(mismatch.code).not.toBe(0);
    expect(mismatch.stderr).toContain('vocabulary mismatch: the tokenizer has 2048 tokens');
  });

  it('eval reports loss, perplexity and bits per byte', async () => {
    const out = join(dir, 'run');
    const r = await rrt(['eval', '--model', out, '--data', data, '--seq-len', '16', '--batch-size', '2', '--max-batches', '2', '--backend', 'ref', '--no-cache', '--json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ command: 'eval', split: 'held-out', seqLen: 16, batches: 2, tokens: 2 * 2 * 16 });
    expect(doc.perplexity).toBeCloseTo(Math.exp(doc.loss), 6);
    expect(doc.bitsPerByte).toBeGreaterThan(0);
    const human = await rrt(['eval', '--model', out, '--data', data, '--seq-len', '16', '--split', 'all', '--max-batches', '1', '--backend', 'ref', '--no-cache']);
    expect(human.code).toBe(0);
    expect(lines(human.stdout)[0]).toMatch(/^loss \d+\.\d{4} nats\/token, perplexity \d/);
    // A path that is not a model folder: the error says which of the three it is, one style everywhere.
    const missing = await rrt(['eval', '--model', join(dir, 'nope')]);
    expect(missing.code).toBe(2);
    expect(errorLines(missing.stderr)).toEqual([expect.stringContaining(`--model ${join(dir, 'nope')}: no such folder; expected a model folder`)]);
    const empty = join(dir, 'empty');
    mkdirSync(empty, { recursive: true });
    expect((await rrt(['generate', '--model', empty, 'x'])).stderr).toContain(`--model ${empty}: the folder has no config.json or recursive.json; expected a model folder`);
    expect((await rrt(['eval', '--model', data])).stderr).toContain(`--model ${data}: is a file, not a folder`);
    expect((await rrt(['convert', '--model', join(dir, 'nope'), '--out', join(dir, 'x'), '--loops', '2'])).stderr).toContain(
      `--model ${join(dir, 'nope')}: no such folder; expected a pretrained model folder (config.json and model.safetensors)`,
    );
    const teacher = await rrt(['uptrain', '--model', out, '--teacher', join(dir, 'nope'), '--out', join(dir, 'x'), '--steps', '1']);
    expect(teacher.code).toBe(2);
    expect(teacher.stderr).toContain(`--teacher ${join(dir, 'nope')}: no such folder`);
    expect((await rrt(['train', '--out', join(dir, 'x'), '--data', join(dir, 'nope.txt')])).stderr).toContain(`--data ${join(dir, 'nope.txt')}: no such file; expected a UTF-8 text file`);
    expect((await rrt(['generate', '--model', out, '--tokenizer', join(dir, 'nope.json'), 'x'])).stderr).toContain(`--tokenizer ${join(dir, 'nope.json')}: no such file`);
  });

  it('convert turns a trained model into a recursive one that generate and eval load', async () => {
    const two = join(dir, 'two-layers');
    const t = await rrt(['train', '--data', data, '--out', two, ...TINY, '--layers', '2', '--steps', '2', '--eval-every', '0']);
    expect(t.code).toBe(0);
    const rec = join(dir, 'rec2');
    const r = await rrt(['convert', '--model', two, '--out', rec, '--loops', '2', '--backend', 'ref', '--json']);
    expect(r.stderr).not.toContain('error');
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ command: 'convert', scheme: 'CYCLE', init: 'stepwise', loops: 2, sharedLayers: 1, depthPositions: 2, depthMap: [0, 0], format: 'recursive' });
    expect(doc.parameters.unique).toBeLessThan(doc.parameters.source);
    expect(existsSync(join(rec, 'recursive.json'))).toBe(true);
    const g = await rrt(['generate', '--model', rec, '--backend', 'ref', '--max-new-tokens', '3', '--json', 'alpha']);
    expect(g.code).toBe(0);
    expect(JSON.parse(g.stdout).tokens.length).toBeGreaterThan(0);
    const e = await rrt(['eval', '--model', rec, '--data', data, '--seq-len', '16', '--max-batches', '1', '--backend', 'ref', '--no-cache', '--json']);
    expect(e.code).toBe(0);
    expect(JSON.parse(e.stdout).loss).toBeGreaterThan(0);
    const unrolled = await rrt(['convert', '--model', two, '--out', join(dir, 'unrolled'), '--loops', '2', '--unrolled', '--backend', 'ref']);
    expect(unrolled.code).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, 'unrolled', 'config.json'), 'utf8')).num_hidden_layers).toBe(2);
    const bad = await rrt(['convert', '--model', two, '--out', join(dir, 'rec3'), '--loops', '3', '--backend', 'ref']);
    expect(bad.code).toBe(2);
    expect(errorLines(bad.stderr)).toHaveLength(1);
    expect(bad.stderr).toContain('--loops 3');
  });

  it('relax adds depth-wise LoRA; at full rank with SVD init it reproduces the original model', async () => {
    const two = join(dir, 'two-layers');
    const rec = join(dir, 'rec2');
    const full = join(dir, 'relaxed-full');
    const r = await rrt(['relax', '--model', rec, '--original', two, '--out', full, '--rank', '64', '--backend', 'ref', '--json']);
    expect(r.stderr).not.toContain('error');
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ command: 'relax', init: 'svd', rank: 64, modules: 2 * 7 });
    expect(doc.loraParameters).toBeGreaterThan(0);
    expect(existsSync(join(full, 'adapter_config.json'))).toBe(true);
    const evalArgs = ['--data', data, '--seq-len', '16', '--max-batches', '2', '--backend', 'ref64', '--no-cache', '--json'];
    const original = JSON.parse((await rrt(['eval', '--model', two, ...evalArgs])).stdout);
    const relaxed = JSON.parse((await rrt(['eval', '--model', full, ...evalArgs])).stdout);
    const plain = JSON.parse((await rrt(['eval', '--model', rec, ...evalArgs])).stdout);
    expect(relaxed.loss).toBeCloseTo(original.loss, 3);
    expect(Math.abs(plain.loss - original.loss)).toBeGreaterThan(Math.abs(relaxed.loss - original.loss));
    const noOriginal = await rrt(['relax', '--model', rec, '--out', join(dir, 'x'), '--rank', '2']);
    expect(noOriginal.code).toBe(2);
    expect(noOriginal.stderr).toContain('--init svd needs --original');
    const notRecursive = await rrt(['relax', '--model', two, '--out', join(dir, 'x'), '--rank', '2', '--init', 'zero']);
    expect(notRecursive.code).toBe(2);
    expect(notRecursive.stderr).toContain('run rrt convert first');
  });

  it('uptrain distils from the original into the relaxed model (LoRA included) and resumes', async () => {
    const two = join(dir, 'two-layers');
    const small = join(dir, 'relaxed-r2');
    const relaxed = await rrt(['relax', '--model', join(dir, 'rec2'), '--original', two, '--out', small, '--rank', '2', '--backend', 'ref']);
    expect(relaxed.code, relaxed.stderr).toBe(0);
    const up = join(dir, 'uptrained');
    const args = ['--data', data, '--seq-len', '16', '--batch-size', '2', '--eval-batches', '1', '--no-cache', '--backend', 'ref'];
    const r = await rrt(['uptrain', '--model', small, '--teacher', two, '--out', up, ...args, '--steps', '2', '--eval-every', '0', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ command: 'uptrain', kind: 'relaxed', loss: 'kd', startStep: 0, steps: 2, adapters: true });
    expect(doc.evals).toHaveLength(1);
    for (const f of ['recursive.json', 'model.safetensors', 'adapter_config.json', 'tokenizer.json', 'rrt-uptrain.json']) expect(existsSync(join(up, f)), f).toBe(true);
    const more = await rrt(['uptrain', '--out', up, '--resume', '--steps', '3', '--backend', 'ref', '--json']);
    expect(more.code).toBe(0);
    expect(JSON.parse(more.stdout)).toMatchObject({ startStep: 2, steps: 3 });
    const g = await rrt(['generate', '--model', up, '--backend', 'ref', '--max-new-tokens', '2', '--json', 'alpha']);
    expect(g.code).toBe(0);
    const noTeacher = await rrt(['uptrain', '--model', small, '--out', join(dir, 'up2'), ...args]);
    expect(noTeacher.code).toBe(2);
    expect(noTeacher.stderr).toContain('--loss kd needs --teacher');
    const shipped = fileURLToPath(new URL('../../layers/models/kjv-llama', import.meta.url));
    const otherVocab = await rrt(['uptrain', '--model', small, '--teacher', shipped, '--out', join(dir, 'up3'), ...args]);
    expect(otherVocab.code).toBe(2);
    expect(otherVocab.stderr).toContain('distillation needs the same vocabulary');
  });

  it('demo trains a small model with loss lines (here shrunk to stay fast)', async () => {
    const out = join(dir, 'demo');
    const r = await rrt(['demo', '--quick', '--backend', 'ref', '--out', out, '--steps', '2', '--layers', '1', '--hidden', '16', '--seq-len', '16', '--batch-size', '2', '--eval-batches', '1', '--no-cache']);
    expect(r.code).toBe(0);
    expect(lines(r.stderr)[0]).toMatch(/^backend: ref/);
    expect(r.stderr).toMatch(/^model: llama, 1 layers, .* parameters$/m);
    expect(r.stderr).toMatch(/^step 1\/2 {2}loss \d/m);
    expect(r.stderr).toMatch(/^step 2\/2 {2}loss \d/m);
    expect(r.stderr).toContain(`rrt generate --model ${out}`);
  });
});
