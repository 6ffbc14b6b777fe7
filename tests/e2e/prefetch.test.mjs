// Headless Chromium loads an app whose bootstrap script names the next assets: the proxy
// prefetches them while the browser is still working its way down the chain, the browser's
// own requests are served from those prefetches, and the entry points come back to Chromium
// zstd-compressed from the cache.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { CANVASKIT_PATH, MAIN_PATH, startBootstrapApp } from './lib/bootstrap-app.mjs';
import { homeTrusting, launchBrowser } from './lib/browser.mjs';
import { makeOriginCertificates } from './lib/certs.mjs';
import { startProxy } from './lib/proxy.mjs';

const stats = async (proxy) => (await fetch(`${proxy.admin}/stats`)).json();

// Loads the app in a new context; returns each path's Cache-Status and Content-Encoding.
async function loadRecording(browser, url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = new Map();
  const recorded = [];
  page.on('response', (response) => {
    recorded.push(response.allHeaders().then((headers) => {
      const { pathname, search } = new URL(response.url());
      seen.set(pathname + search, {
        cacheStatus: headers['cache-status'] ?? '',
        encoding: headers['content-encoding'] ?? 'identity',
      });
    }));
  });
  try {
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('result')?.textContent !== 'loading', null, { timeout: 60_000 });
    assert.match(await page.textContent('#result'), /^ok/);
    await Promise.all(recorded);
  } finally {
    await context.close();
  }
  return seen;
}

describe('prefetch and compressed answers in Chromium', () => {
  let dir, origin, proxy, browser;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-prefetch-e2e-'));
    const certs = makeOriginCertificates(dir);
    // A little distance, so that the browser is still on the chain's first links when the
    // prefetches start.
    origin = await startBootstrapApp({ ...certs, delayMs: 50 });
    proxy = await startProxy({ dir, upstreamCa: certs.caPath, config: { upstream: { allow_hosts: ['127.0.0.1'] } } });
    browser = await launchBrowser({ proxy, home: homeTrusting(proxy.caPath) });
  });

  after(async () => {
    await browser?.close();
    await proxy?.stop();
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prefetches what the bootstrap names, and the browser uses it', async () => {
    const seen = await loadRecording(browser, origin.url('/index.html'));
    assert.equal(origin.hits(MAIN_PATH), 1);
    assert.equal(origin.hits(CANVASKIT_PATH), 1);
    // canvaskit.wasm is asked for only once main.dart.js has arrived and run: by then the
    // prefetch started at the bootstrap has fetched it (or is about to), so it is a hit.
    const canvaskit = seen.get(CANVASKIT_PATH);
    assert.match(canvaskit.cacheStatus, /asset-proxy; hit/, JSON.stringify(canvaskit));
    const { prefetch } = await stats(proxy);
    assert.ok(prefetch.fetches >= 1, JSON.stringify(prefetch));
    assert.equal(prefetch.used, prefetch.fetches, `every prefetched entry was used: ${JSON.stringify(prefetch)}`);
  });

  it('sends entry points from the cache zstd-compressed to a browser that accepts it', async () => {
    // The frames are made by the disk writer after the first load stored the entries.
    const deadline = Date.now() + 20_000;
    while ((await stats(proxy)).disk_compressed_writes < 4) {
      assert.ok(Date.now() < deadline, 'entries stored compressed');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const seen = await loadRecording(browser, origin.url('/index.html'));
    // main.dart.js is over 1 MiB: its body went to disk as it arrived, and its memory copy
    // took the zstd frame written to its entry file, so it too goes compressed at once.
    for (const path of ['/index.html', '/flutter_bootstrap.js', MAIN_PATH]) {
      assert.equal(seen.get(path)?.encoding, 'zstd', `${path}: ${JSON.stringify(seen.get(path))}`);
    }
    const figures = await stats(proxy);
    assert.ok(figures.encoded_responses >= 3, JSON.stringify(figures));
  });
});
