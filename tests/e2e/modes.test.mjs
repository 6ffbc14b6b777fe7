// Modes for test runs in Chromium: a run recorded through `--mode record` is replayed whole by
// `--mode replay` without contacting the origin, even after the app was redeployed; `--mode
// refresh` picks up the redeployed `no-cache` entry point and what it names; and with the
// origin gone, a replay serves the refreshed app.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_FLAGS, loadApp } from './lib/browser.mjs';
import { makeOriginCertificates } from './lib/certs.mjs';
import { startOrigin } from './lib/origin.mjs';
import { PROXY_BIN, startProxy } from './lib/proxy.mjs';

describe('record, replay, refresh', () => {
  let dir, certs, origin, appUrl;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-modes-'));
    certs = makeOriginCertificates(dir);
    origin = await startOrigin(certs);
    appUrl = origin.url('/');
  });

  after(async () => {
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // One browser run through a proxy in `mode` on the shared cache directory.
  const runIn = async (mode) => {
    const proxy = await startProxy({ dir, upstreamCa: certs.caPath, extraArgs: ['--mode', mode] });
    const spki = execFileSync(PROXY_BIN, ['--ca-dir', join(dir, 'certs'), 'ca', 'spki'], { encoding: 'utf8' }).trim();
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [...CHROMIUM_FLAGS, `--ignore-certificate-errors-spki-list=${spki}`],
      proxy: { server: proxy.server, bypass: '<-loopback>' },
    });
    try {
      return (await loadApp(browser, appUrl)).result;
    } finally {
      await browser.close();
      await proxy.stop();
    }
  };

  it('replays a recording without the origin, and refresh picks up a redeploy', async () => {
    assert.equal(await runIn('record'), 'ok v1');
    origin.redeploy(2);
    const before = origin.bytesSent;
    assert.equal(await runIn('replay'), 'ok v1', 'the recording, whatever the origin has now');
    assert.equal(origin.bytesSent, before, 'replay never contacts the origin');

    assert.equal(await runIn('refresh'), 'ok v2');
    assert.equal(origin.hits('/main.dart.js?v=2'), 1);

    await origin.close();
    origin = null;
    assert.equal(await runIn('replay'), 'ok v2', 'the refreshed app, with the origin gone');
  });
});
