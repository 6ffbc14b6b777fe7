// Chromium through the proxy port as a SOCKS5 proxy (--proxy-server=socks5://…): its tunnels
// are intercepted and cached like an HTTP proxy's, so a second context is served from the
// cache; a block rule answers an ad request at once while the page keeps working.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_FLAGS, loadApp } from './lib/browser.mjs';
import { makeOriginCertificates } from './lib/certs.mjs';
import { BIG_ASSETS, startOrigin } from './lib/origin.mjs';
import { E2E_CONFIG, PROXY_BIN, startProxy } from './lib/proxy.mjs';

describe('Chromium with the proxy as a SOCKS5 proxy', () => {
  let dir, certs, origin, proxy, browser;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-socks-'));
    certs = makeOriginCertificates(dir);
    origin = await startOrigin(certs);
    const config = { ...E2E_CONFIG, rules: [{ glob: '**/ads/**', action: 'block' }] };
    proxy = await startProxy({ dir, upstreamCa: certs.caPath, config });
    const spki = execFileSync(PROXY_BIN, ['--ca-dir', join(dir, 'certs'), 'ca', 'spki'], { encoding: 'utf8' }).trim();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [...CHROMIUM_FLAGS, `--ignore-certificate-errors-spki-list=${spki}`],
      proxy: { server: `socks5://127.0.0.1:${proxy.port}`, bypass: '<-loopback>' },
    });
  });

  after(async () => {
    await browser?.close();
    await proxy?.stop();
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves a second context from the cache', async () => {
    assert.equal((await loadApp(browser, origin.url('/'))).result, 'ok v1');
    for (const name of BIG_ASSETS) assert.equal(origin.bigAssetHits(name), 1, name);
    assert.equal((await loadApp(browser, origin.url('/'))).result, 'ok v1');
    for (const name of BIG_ASSETS) assert.equal(origin.bigAssetHits(name), 1, `${name} from the cache`);
    assert.ok(proxy.log.some((line) => /cache=asset-proxy; hit/.test(line)), 'hits logged');
  });

  it('answers a blocked request at once and the page keeps working', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(origin.url('/'));
      await page.waitForFunction(() => document.getElementById('result')?.textContent !== 'loading');
      const status = await page.evaluate(async () => (await fetch('/ads/pixel.gif')).status);
      assert.equal(status, 403);
      assert.equal(await page.textContent('#result'), 'ok v1');
    } finally {
      await context.close();
    }
    assert.equal(origin.hits('/ads/pixel.gif'), 0, 'the origin never saw it');
  });
});
