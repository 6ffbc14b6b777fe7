// HAR both ways, with Playwright's own HAR code: a cache recorded through the proxy is
// exported and replayed by routeFromHAR with the origin gone; a HAR recorded by recordHar is
// imported and served by a proxy that may not contact any origin. A damaged archive is
// refused whole, naming the entry and the reason.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_FLAGS } from './lib/browser.mjs';
import { makeOriginCertificates } from './lib/certs.mjs';
import { startOrigin } from './lib/origin.mjs';
import { E2E_CONFIG, PROXY_BIN, startProxy } from './lib/proxy.mjs';

const run = promisify(execFile);

// Loads the app in a new context of `browser` (optionally recording or replaying a HAR).
async function appResult(browser, url, contextOptions = {}, prepare = async () => {}) {
  const context = await browser.newContext(contextOptions);
  try {
    await prepare(context);
    const page = await context.newPage();
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('result')?.textContent !== 'loading', null, { timeout: 60_000 });
    return await page.textContent('#result');
  } finally {
    await context.close();
  }
}

describe('HAR export and import', () => {
  let dir, certs, origin, home;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-har-'));
    certs = makeOriginCertificates(dir);
    origin = await startOrigin(certs);
    home = mkdtempSync(join(tmpdir(), 'e2e-bare-home-'));
  });

  after(async () => {
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });

  const proxied = async (proxy) => {
    const { stdout } = await run(PROXY_BIN, ['--ca-dir', join(dir, 'certs'), 'ca', 'spki']);
    return chromium.launch({
      executablePath: CHROMIUM,
      args: [...CHROMIUM_FLAGS, `--ignore-certificate-errors-spki-list=${stdout.trim()}`],
      env: { ...process.env, HOME: home },
      proxy: { server: proxy.server, bypass: '<-loopback>' },
    });
  };

  it('export: what a recording proxy stored replays through routeFromHAR with no origin', async () => {
    const cacheDir = join(dir, 'recorded');
    // Recording: the app's live API answer (no-store) is kept too, so the archive is whole.
    const proxy = await startProxy({ dir, cacheDir, upstreamCa: certs.caPath, extraArgs: ['--mode', 'record'] });
    const browser = await proxied(proxy);
    try {
      assert.equal(await appResult(browser, origin.url('/')), 'ok v1');
    } finally {
      await browser.close();
      await proxy.stop();
    }
    const har = join(dir, 'export.har');
    const { stdout } = await run(PROXY_BIN, ['--cache-dir', cacheDir, 'cache', 'export', '--har', har]);
    assert.match(stdout, /^\d+ entries written/, stdout);
    const archive = JSON.parse(readFileSync(har, 'utf8'));
    assert.equal(archive.log.version, '1.2');

    // No proxy, and every request the archive does not answer is aborted.
    const plain = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS, env: { ...process.env, HOME: home } });
    const before = origin.bytesSent;
    try {
      const result = await appResult(plain, origin.url('/'), {}, (context) => context.routeFromHAR(har, { notFound: 'abort' }));
      assert.equal(result, 'ok v1');
    } finally {
      await plain.close();
    }
    assert.equal(origin.bytesSent, before, 'the origin saw nothing');
  });

  it('import: a HAR recorded by Playwright is served by a proxy that contacts no origin', async () => {
    const recordDir = join(dir, 'record-through');
    const proxy = await startProxy({ dir, cacheDir: recordDir, upstreamCa: certs.caPath });
    const har = join(dir, 'recorded.har');
    const browser = await proxied(proxy);
    try {
      assert.equal(await appResult(browser, origin.url('/'), { recordHar: { path: har, content: 'embed' } }), 'ok v1');
    } finally {
      await browser.close();
      await proxy.stop();
    }
    const fresh = join(dir, 'imported');
    // Imported as a recording run stores answers (the app's no-store API answer included).
    const { stdout } = await run(PROXY_BIN, ['--mode', 'record', '--cache-dir', fresh, 'cache', 'import', har]);
    assert.match(stdout, /\d+ stored/, stdout);

    const config = { ...E2E_CONFIG };
    const replaying = await startProxy({ dir, cacheDir: fresh, upstreamCa: certs.caPath, config, extraArgs: ['--mode', 'replay'] });
    const replayBrowser = await proxied(replaying);
    const before = origin.bytesSent;
    try {
      assert.equal(await appResult(replayBrowser, origin.url('/')), 'ok v1');
    } finally {
      await replayBrowser.close();
      await replaying.stop();
    }
    assert.equal(origin.bytesSent, before, 'served from the imported archive alone');
  });

  it('a damaged archive is refused whole, naming the entry and the reason', async () => {
    const good = { request: { method: 'GET', url: origin.url('/ok.js') }, response: { status: 200, headers: [], content: { text: 'ok' } } };
    const bad = { request: { method: 'GET', url: origin.url('/bad.js') }, response: { status: 200, headers: [], content: { text: '%%%', encoding: 'base64' } } };
    const file = join(dir, 'damaged.har');
    writeFileSync(file, JSON.stringify({ log: { version: '1.2', entries: [good, bad] } }));
    const cacheDir = join(dir, 'damaged-cache');
    await assert.rejects(run(PROXY_BIN, ['--cache-dir', cacheDir, 'cache', 'import', file]),
      (error) => /entry 1: response\.content\.text is not valid base64.*nothing imported/.test(error.stderr));
    writeFileSync(file, '{"log": {"entries": [');
    await assert.rejects(run(PROXY_BIN, ['--cache-dir', cacheDir, 'cache', 'import', file]),
      (error) => /not a HAR archive/.test(error.stderr));
    const { stdout } = await run(PROXY_BIN, ['--cache-dir', cacheDir, 'cache', 'ls']);
    assert.equal(stdout.trim(), '', 'nothing was imported');
  });
});
