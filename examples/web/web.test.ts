// End to end: builds the browser example with Vite (the build fails if a browser entry pulls in
// a Node module), serves it on localhost, opens it in headless Chromium (Debian's package,
// driven by playwright-core; never a downloaded browser), waits for the generated text and checks
// that the page's numbers agree: tokens generated = sum of exits per loop = coloured token spans,
// per loop too, and one SVG column per batched call. Saves a screenshot to
// examples/web/report/page.png (git-ignored). Skipped, saying so, where Chromium is missing;
// in CI (CI=true) .ci/run installs it and a missing browser fails the test.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const CHROMIUM = process.env.RRT_CHROMIUM ?? '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
const inCi = process.env.CI === 'true' || process.env.CI === '1';
const here = import.meta.dirname;
const PROMPTS = 4;
const NEW_TOKENS = 4;

if (!haveChromium && !inCi) {
  console.warn(`examples/web/web.test.ts skipped: no Chromium at ${CHROMIUM} (install Debian's chromium package, or set RRT_CHROMIUM)`);
}

describe('browser example (examples/web)', () => {
  it('runs in CI, where .ci/run installs Chromium', () => {
    if (inCi) expect(haveChromium, `CI=true but no Chromium at ${CHROMIUM}: .ci/run should have installed it (apt-get install chromium)`).toBe(true);
  });

  const out = mkdtempSync(join(tmpdir(), 'rrt-web-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it.skipIf(!haveChromium)('generates in headless Chromium and its numbers agree', async () => {
    const { build, preview } = await import('vite');
    const { chromium } = await import('playwright-core');
    const configFile = join(here, 'vite.config.ts');
    await build({ configFile, logLevel: 'error', build: { outDir: out } });
    const server = await preview({ configFile, logLevel: 'error', build: { outDir: out }, preview: { host: '127.0.0.1', port: 0, strictPort: false } });
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // WebGPU where the browser offers it; WebGL2 through SwiftShader where there is no GPU.
      args: ['--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-angle=swiftshader', '--ignore-gpu-blocklist', '--no-sandbox'],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      const base = server.resolvedUrls?.local[0];
      expect(base, 'vite preview gave no local URL').toBeTruthy();
      // LoRA off: its SVD init adds about 30 s on this shared machine (it works; see README.md).
      await page.goto(`${base}?autorun=1&tokens=${NEW_TOKENS}&batch=${PROMPTS}&threshold=0.1&lora=0&scheduler=depthwise`);
      await page.waitForSelector('#summary[data-done="1"], #status[data-state="error"]', { timeout: 200_000 });
      const got = await page.evaluate(() => {
        // Runs in the page (serialised by playwright): the test's Node program has no DOM types.
        interface El { textContent: string | null; dataset: Record<string, string | undefined>; getAttribute(name: string): string | null }
        const doc = (globalThis as unknown as { document: { getElementById(id: string): El; querySelectorAll(selector: string): Iterable<El> } }).document;
        const summary = doc.getElementById('summary');
        const spans = [...doc.querySelectorAll('#outputs .tok')];
        const seqs = [...doc.querySelectorAll('#outputs .seq')];
        return {
          status: doc.getElementById('status').textContent ?? '',
          state: doc.getElementById('status').dataset.state,
          mode: doc.getElementById('mode').textContent ?? '',
          tokens: Number(summary.dataset.tokens),
          shownTokens: Number(doc.getElementById('tokens').textContent),
          exits: JSON.parse(summary.dataset.exits ?? '[]') as number[],
          steps: Number(summary.dataset.steps),
          spanLoops: spans.map((s) => Number(s.dataset.loop)),
          sequences: seqs.length,
          columns: new Set([...doc.querySelectorAll('#batches rect')].map((r) => r.getAttribute('x'))).size,
          text: seqs.map((s) => s.textContent ?? ''),
        };
      });
      mkdirSync(join(here, 'report'), { recursive: true });
      await page.screenshot({ path: join(here, 'report', 'page.png'), fullPage: true });
      console.log(`examples/web: gpu.js mode ${got.mode}; ${got.status}; exits per loop ${JSON.stringify(got.exits)}`);
      expect(errors).toEqual([]);
      expect(got.state, got.status).toBe('done');
      expect(['webgpu', 'webgl2', 'webasm', 'cpu']).toContain(got.mode);
      expect(got.sequences).toBe(PROMPTS);
      // No stop tokens: every prompt gets all of its tokens.
      expect(got.tokens).toBe(PROMPTS * NEW_TOKENS);
      expect(got.shownTokens).toBe(got.tokens);
      expect(got.exits).toHaveLength(2);
      expect(got.exits.reduce((a, b) => a + b, 0)).toBe(got.tokens);
      expect(got.spanLoops).toHaveLength(got.tokens);
      got.exits.forEach((n, loop) => expect(got.spanLoops.filter((l) => l === loop).length, `tokens coloured as loop ${loop + 1}`).toBe(n));
      expect(got.columns).toBe(got.steps);
      for (const t of got.text) expect(t.length).toBeGreaterThan(0);
    } finally {
      await browser.close();
      await new Promise<void>((resolve) => server.httpServer.close(() => resolve()));
    }
  }, 240_000);
});
