// Namespaces in a browser: Chromium, launched with the Playwright integration's options and a
// namespace, answers the proxy's request for one (--require-namespace) with it as the proxy
// user name. Two namespaces each fetch the app's big assets from the origin once; a later
// browser in the first is served from its cache; purging one namespace leaves the other whole.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { proxiedLaunchOptions } from 'asset-proxy-playwright';

import { CHROMIUM, CHROMIUM_FLAGS, loadApp } from './lib/browser.mjs';
import { makeOriginCertificates } from './lib/certs.mjs';
import { BIG_ASSETS, startOrigin } from './lib/origin.mjs';
import { PROXY_BIN, startProxy } from './lib/proxy.mjs';

const run = promisify(execFile);

describe('namespaces from the browser', () => {
  let dir, certs, origin, proxy, spki;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-namespaces-'));
    certs = makeOriginCertificates(dir);
    origin = await startOrigin(certs);
    proxy = await startProxy({ dir, upstreamCa: certs.caPath, extraArgs: ['--require-namespace'] });
    spki = execFileSync(PROXY_BIN, ['--ca-dir', join(dir, 'certs'), 'ca', 'spki'], { encoding: 'utf8' }).trim();
  });

  after(async () => {
    await proxy?.stop();
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const loadIn = async (namespace) => {
    const options = proxiedLaunchOptions({ server: proxy.server, spki, namespace },
      { executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
    const browser = await chromium.launch(options);
    try {
      return await loadApp(browser, origin.url('/'));
    } finally {
      await browser.close();
    }
  };

  const hits = () => Object.fromEntries(BIG_ASSETS.map((name) => [name, origin.bigAssetHits(name)]));
  const each = (n) => Object.fromEntries(BIG_ASSETS.map((name) => [name, n]));

  it('keeps each namespace to itself', async () => {
    assert.equal((await loadIn('run-a')).result, 'ok v1');
    assert.deepEqual(hits(), each(1));
    assert.equal((await loadIn('run-b')).result, 'ok v1');
    assert.deepEqual(hits(), each(2), 'run-b fetches for itself');
    assert.equal((await loadIn('run-a')).result, 'ok v1');
    assert.deepEqual(hits(), each(2), 'run-a is served from its cache');

    const common = ['--port', String(proxy.port), '--admin-port', proxy.admin.split(':').pop()];
    const { stdout } = await run(PROXY_BIN, [...common, 'cache', 'purge', '--all', '--namespace', 'run-a']);
    assert.match(stdout, /removed \d+ from memory, [1-9]\d* from disk/, stdout);
    const listed = await run(PROXY_BIN, [...common, 'cache', 'ls', '--namespace', 'run-a']);
    assert.equal(listed.stdout.trim(), '', 'nothing left in run-a');
    assert.equal((await loadIn('run-b')).result, 'ok v1');
    assert.deepEqual(hits(), each(2), 'run-b kept its entries');
    assert.equal((await loadIn('run-a')).result, 'ok v1');
    assert.deepEqual(hits(), each(3), 'run-a fetches again');
  });
});
