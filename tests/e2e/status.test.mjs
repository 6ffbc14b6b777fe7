// The live status page, loaded in headless Chromium after real traffic: it shows the hit
// ratio, bytes saved, the request-rate chart, the top assets and the latest version change.
// A screenshot is saved to tests/e2e/screenshots/status-page.png.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_FLAGS, homeTrusting, launchBrowser, loadApp } from './lib/browser.mjs';
import { makeOriginCertificates } from './lib/certs.mjs';
import { startOrigin } from './lib/origin.mjs';
import { E2E_CONFIG, startProxy } from './lib/proxy.mjs';

test('the status page shows what the proxy did', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'asset-proxy-status-'));
  const certs = makeOriginCertificates(dir);
  const origin = await startOrigin(certs);
  // Versions retire at once, so that the redeploy below shows as a version change.
  const config = { ...E2E_CONFIG, versioned: { retire_after_secs: 0 } };
  const proxy = await startProxy({ dir, upstreamCa: certs.caPath, config });
  const browser = await launchBrowser({ proxy, home: homeTrusting(proxy.caPath) });
  // The page itself is opened directly, not through the proxy.
  const viewer = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
  try {
    for (const version of [1, 1, 2]) {
      if (version === 2) origin.redeploy(2);
      assert.equal((await loadApp(browser, origin.url('/'))).result, `ok v${version}`);
    }
    const page = await viewer.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(proxy.admin + '/');
    await page.waitForFunction(() => document.getElementById('updated').textContent.startsWith('updated'));
    const ratio = await page.textContent('#hit-ratio');
    assert.match(ratio, /^\d+\.\d %$/);
    assert.ok(parseFloat(ratio) > 0, `hit ratio ${ratio}`);
    assert.match(await page.textContent('#saved'), /^\d+\.\d %$/);
    assert.match(await page.textContent('#top'), /main\.dart\.js/);
    assert.match(await page.textContent('#changes'), /main\.dart\.js.*1 → 2/s);
    assert.match(await page.textContent('#one-offs'), /\d+ changes, \d+ one-off versions retired/);
    assert.equal(await page.locator('#chart polyline').count(), 1);
    assert.equal(await page.textContent('#error'), '');
    const shots = new URL('./screenshots/', import.meta.url).pathname;
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: join(shots, 'status-page.png'), fullPage: true });
  } finally {
    await viewer.close();
    await browser.close();
    await proxy.stop();
    await origin.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
