// A Playwright Test suite (8 tests, 2 workers, a fresh context each) on a Flutter-like app
// whose origin is 100 ms away at 40 Mbit/s per connection: run with no proxy, then through
// asset-proxy with an empty cache (cold), then again on that cache (warm). Suite wall time and
// bytes the origin sent. The proxy runs are set up as a user would: the global setup and
// fixtures of clients/playwright. Run by scripts/bench_playwright.sh.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { startBootstrapApp } from '../tests/e2e/lib/bootstrap-app.mjs';
import { makeOriginCertificates } from '../tests/e2e/lib/certs.mjs';

const run = promisify(execFile);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const e2e = new URL('../tests/e2e/', import.meta.url).pathname;
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic', '--disable-gpu'];

// The suite lives under tests/e2e so that its imports resolve to the packages installed there.
const suite = join(e2e, `.bench-suite-${process.pid}`);

function writeSuite() {
  mkdirSync(suite, { recursive: true });
  const use = { launchOptions: { executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', args: CHROMIUM_ARGS } };
  const config = (extra) => `import { defineConfig } from '@playwright/test';
export default defineConfig({ testDir: '.', testMatch: '*.spec.mjs', workers: 2, fullyParallel: true, reporter: 'line',
  use: ${JSON.stringify(use)}, ${extra} });\n`;
  writeFileSync(join(suite, 'direct.config.mjs'), config(`metadata: {}`).replace("use: {", "use: { ignoreHTTPSErrors: true,"));
  writeFileSync(join(suite, 'proxied.config.mjs'), config(`globalSetup: 'asset-proxy-playwright/global-setup'`));
  const spec = (from) => `import { test, expect } from '${from}';
for (let n = 1; n <= 8; n += 1) {
  test('the app loads (' + n + ')', async ({ page }) => {
    await page.goto(process.env.APP_URL);
    await expect(page.locator('#result')).toHaveText(/^ok /, { timeout: 120000 });
  });
}\n`;
  mkdirSync(join(suite, 'direct'), { recursive: true });
  mkdirSync(join(suite, 'proxied'), { recursive: true });
  writeFileSync(join(suite, 'direct', 'app.spec.mjs'), spec('@playwright/test'));
  writeFileSync(join(suite, 'proxied', 'app.spec.mjs'), spec('asset-proxy-playwright/fixtures'));
}

async function suiteRun(kind, origin, env) {
  const before = origin.bytesSent;
  const started = performance.now();
  const config = join(suite, `${kind}.config.mjs`);
  await run(join(e2e, 'node_modules/.bin/playwright'), ['test', '-c', config, join(suite, kind)],
    { cwd: e2e, env: { ...process.env, ...env, APP_URL: origin.url('/index.html') } });
  return { seconds: (performance.now() - started) / 1000, originMiB: (origin.bytesSent - before) / (1 << 20) };
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const work = mkdtempSync(join(tmpdir(), 'asset-proxy-bench-pw-'));
try {
  writeSuite();
  const certs = makeOriginCertificates(work);
  const origin = await startBootstrapApp({ ...certs, delayMs: 100, mbit: 40 });
  const proxyEnv = (cacheDir) => ({
    ASSET_PROXY_BIN: process.env.ASSET_PROXY_BIN ?? 'proxy',
    ASSET_PROXY_CACHE_DIR: cacheDir,
    ASSET_PROXY_CA_DIR: join(work, 'certs'),
    ASSET_PROXY_UPSTREAM_CA: certs.caPath,
    HOME: work,
  });
  const rows = { 'no proxy': [], 'asset-proxy, cold cache': [], 'asset-proxy, warm cache': [] };
  for (let n = 0; n < RUNS; n += 1) {
    rows['no proxy'].push(await suiteRun('direct', origin, { HOME: work }));
    const cache = join(work, `cache-${n}`);
    rows['asset-proxy, cold cache'].push(await suiteRun('proxied', origin, proxyEnv(cache)));
    rows['asset-proxy, warm cache'].push(await suiteRun('proxied', origin, proxyEnv(cache)));
  }
  await origin.close();
  const base = median(rows['no proxy'].map((r) => r.seconds));
  console.log(`\n### Playwright Test suite: 8 tests, 2 workers, origin 100 ms away at 40 Mbit/s (${RUNS} runs each, medians)\n`);
  console.log('| | suite time (s) | origin MiB | time / no proxy | runs (s) |\n|---|---:|---:|---:|---|');
  for (const [name, results] of Object.entries(rows)) {
    const seconds = median(results.map((r) => r.seconds));
    const mib = median(results.map((r) => r.originMiB));
    console.log(`| ${name} | ${seconds.toFixed(1)} | ${mib.toFixed(1)} | ${(seconds / base).toFixed(2)}x | ${results.map((r) => r.seconds.toFixed(1)).join(', ')} |`);
  }
} finally {
  rmSync(suite, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
}
