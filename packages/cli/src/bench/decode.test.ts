import { describe, expect, it } from 'vitest';
import { rrt } from '../test-util.js';

describe('rrt bench decode', () => {
  it('--json reports tokens/s per batch size for a tiny model on the ref backend', async () => {
    const r = await rrt(['bench', 'decode', '--backend', 'ref', '--tiny', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.command).toBe('bench decode');
    expect(doc).toMatchObject({ promptTokens: 8, newTokens: 8, maxPositions: 16 });
    expect(doc.runs.map((x: { batch: number }) => x.batch)).toEqual([1, 3]);
    for (const run of doc.runs) for (const key of ['prefillMs', 'stepMs', 'tokensPerS', 'decodeTokensPerS']) expect(run[key]).toBeGreaterThan(0);
    expect(doc.tfjs.note).toMatch(/not measured/);
  });
});
