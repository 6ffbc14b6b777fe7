// Cold page loads of a Flutter-like app in headless Chromium through asset-proxy, with and
// without predictive prefetch. Run by scripts/bench_prefetch.sh.
//
// The origin (tests/e2e/lib/bootstrap-app.mjs) is as far away as a real one: every answer
// waits ORIGIN_DELAY_MS, and bodies are paced to ORIGIN_MBIT per connection. Each load is
// cold: a new cache directory, a new proxy, a new browser.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { homeTrusting, launchBrowser, loadApp } from '../tests/e2e/lib/browser.mjs';
import { startBootstrapApp } from '../tests/e2e/lib/bootstrap-app.mjs';
import { makeOriginCertificates } from '../tests/e2e/lib/certs.mjs';
import { startProxy } from '../tests/e2e/lib/proxy.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const DELAY_MS = Number(process.env.ORIGIN_DELAY_MS ?? 100);
const MBIT = Number(process.env.ORIGIN_MBIT ?? 40);

async function coldLoad(work, origin, prefetch, run) {
  const proxy = await startProxy({
    dir: work,
    cacheDir: join(work, `cache-${prefetch}-${run}`),
    upstreamCa: join(work, 'origin-ca.pem'),
    config: { upstream: { allow_hosts: ['127.0.0.1'] }, prefetch: { enabled: prefetch } },
  });
  const browser = await launchBrowser({ proxy, home: homeTrusting(proxy.caPath) });
  try {
    const { result, ms } = await loadApp(browser, origin.url('/index.html'));
    if (!result.startsWith('ok')) throw new Error(`app failed: ${result}`);
    return ms;
  } finally {
    await browser.close();
    await proxy.stop();
  }
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

const work = mkdtempSync(join(tmpdir(), 'asset-proxy-prefetch-'));
try {
  const origin = await startBootstrapApp({ ...makeOriginCertificates(work), delayMs: DELAY_MS, mbit: MBIT });
  const times = { false: [], true: [] };
  // Alternate, so that a drift of the machine touches both alike.
  for (let run = 0; run < RUNS; run += 1) {
    for (const prefetch of [false, true]) times[prefetch].push(await coldLoad(work, origin, prefetch, run));
  }
  await origin.close();
  const [off, on] = [median(times.false), median(times.true)];
  console.log(`\n### Cold page load, Flutter-like app (${RUNS} runs each, origin ${DELAY_MS} ms away, ${MBIT} Mbit/s per connection)\n`);
  console.log('| prefetch | median load (ms) | runs (ms) |\n|---|---|---|');
  console.log(`| off | ${off.toFixed(0)} | ${times.false.map((t) => t.toFixed(0)).join(', ')} |`);
  console.log(`| on | ${on.toFixed(0)} | ${times.true.map((t) => t.toFixed(0)).join(', ')} |`);
  console.log(`| ratio on / off | ${(on / off).toFixed(2)}x | |`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
