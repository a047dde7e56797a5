// Hostile model folders: an index cannot make the reader open a file outside the folder, and a
// config.json cannot make the loader allocate more than the checkpoint's bytes justify.

import { describe, expect, it } from 'vitest';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FormatError, backendByName } from '@rrt/tensor';
import { loadPretrained } from './checkpoint.js';

const fixtures = join(import.meta.dirname, '..', 'test', 'fixtures');
const backend = backendByName('ref');
const SHARD = 'model-00001-of-00002.safetensors';

/** A copy of the sharded llama fixture in a fresh folder (under `parent` when given). */
function shardedCopy(parent = mkdtempSync(join(tmpdir(), 'rrt-paths-')), name = 'model'): string {
  const dir = join(parent, name);
  mkdirSync(dir, { recursive: true });
  cpSync(join(fixtures, 'llama-sharded'), dir, { recursive: true });
  return dir;
}

/** Points every index entry that named `from` at `to`. */
function retarget(dir: string, from: string, to: string): void {
  const path = join(dir, 'model.safetensors.index.json');
  const idx = JSON.parse(readFileSync(path, 'utf8'));
  for (const k of Object.keys(idx.weight_map)) if (idx.weight_map[k] === from) idx.weight_map[k] = to;
  writeFileSync(path, JSON.stringify(idx));
}

function editConfig(dir: string, edit: (cfg: Record<string, unknown>) => void): void {
  const path = join(dir, 'config.json');
  const cfg = JSON.parse(readFileSync(path, 'utf8'));
  edit(cfg);
  writeFileSync(path, JSON.stringify(cfg));
}

describe('a model folder index cannot reach outside the folder', () => {
  it('loads the untouched sharded fixture', () => {
    loadPretrained(shardedCopy(), { backend }).dispose();
  });

  it('rejects ../ paths, absolute paths, sub-folders and empty names', () => {
    const outside = mkdtempSync(join(tmpdir(), 'rrt-outside-'));
    cpSync(join(fixtures, 'llama-sharded', SHARD), join(outside, SHARD));
    for (const target of [`../${SHARD}`, join(outside, SHARD), `sub/${SHARD}`, '..', '.', '', `..\\${SHARD}`]) {
      const dir = shardedCopy();
      retarget(dir, SHARD, target);
      expect(() => loadPretrained(dir, { backend }), target).toThrow(FormatError);
      expect(() => loadPretrained(dir, { backend }), target).toThrow(/must be a file name inside the folder/);
    }
  });

  it('rejects a symlink in the folder that points outside it', () => {
    const parent = mkdtempSync(join(tmpdir(), 'rrt-link-'));
    const dir = shardedCopy(parent);
    // The real shard lives next to the folder; the folder only has a link to it.
    renameSync(join(dir, SHARD), join(parent, SHARD));
    symlinkSync(join(parent, SHARD), join(dir, 'linked.safetensors'));
    retarget(dir, SHARD, 'linked.safetensors');
    expect(() => loadPretrained(dir, { backend })).toThrow(FormatError);
    expect(() => loadPretrained(dir, { backend })).toThrow(/"linked\.safetensors", which resolves to .*outside the model folder/);
    // A relative link climbing out is the same.
    const dir2 = shardedCopy(parent, 'model2');
    symlinkSync(`../${SHARD}`, join(dir2, 'up.safetensors'));
    retarget(dir2, SHARD, 'up.safetensors');
    expect(() => loadPretrained(dir2, { backend })).toThrow(/outside the model folder/);
  });

  it('accepts a symlink that stays inside the folder, and the hub cache layout (snapshots/<rev> -> blobs)', () => {
    const dir = shardedCopy();
    mkdirSync(join(dir, 'shards'));
    renameSync(join(dir, SHARD), join(dir, 'shards', SHARD));
    symlinkSync(join('shards', SHARD), join(dir, 'inside.safetensors'));
    retarget(dir, SHARD, 'inside.safetensors');
    loadPretrained(dir, { backend }).dispose();

    const repo = mkdtempSync(join(tmpdir(), 'rrt-hub-'));
    const snap = shardedCopy(join(repo, 'snapshots'), 'abc123');
    mkdirSync(join(repo, 'blobs'));
    renameSync(join(snap, SHARD), join(repo, 'blobs', 'deadbeef'));
    symlinkSync('../../blobs/deadbeef', join(snap, SHARD));
    loadPretrained(snap, { backend }).dispose();
  });
});

describe('config.json sizes are bounded by the checkpoint', () => {
  it('a config claiming 10^12 parameters fails before anything is allocated', () => {
    const dir = shardedCopy();
    editConfig(dir, (c) => {
      c.vocab_size = 1_000_000_000;
      c.hidden_size = 1024;
    });
    const before = process.memoryUsage().arrayBuffers;
    expect(() => loadPretrained(dir, { backend })).toThrow(FormatError);
    expect(() => loadPretrained(dir, { backend })).toThrow(/describes a model of \d+ parameters but the checkpoint's tensors hold 18592 values/);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 << 20);
  });

  it('an absurd max_position_embeddings fails before the RoPE tables are built', () => {
    const dir = shardedCopy();
    editConfig(dir, (c) => {
      c.max_position_embeddings = 1e12;
    });
    expect(() => loadPretrained(dir, { backend })).toThrow(/max_position_embeddings 1000000000000 needs RoPE tables/);
  });
});
