// Headless Chromium loads a Flutter-like app through the proxy from a local HTTPS origin.
// Each step is a scenario the proxy's users live through; they share one origin and build on
// each other in order (cold, warm, new browser, proxy restart, redeploy).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { makeOriginCertificates } from './lib/certs.mjs';
import { homeTrusting, launchBrowser, loadApp } from './lib/browser.mjs';
import { BIG_ASSETS, startOrigin } from './lib/origin.mjs';
import { startProxy } from './lib/proxy.mjs';

const numbers = [];
const record = (scenario, load, origin) => numbers.push({ scenario, ms: Math.round(load.ms), originKiB: Math.round(origin.bytesSent / 1024) });
const bigAssetHits = (origin) => Object.fromEntries(BIG_ASSETS.map((name) => [name, origin.bigAssetHits(name)]));
const none = Object.fromEntries(BIG_ASSETS.map((name) => [name, 0]));
const once = Object.fromEntries(BIG_ASSETS.map((name) => [name, 1]));

describe('a Flutter-like app through asset-proxy in Chromium', () => {
  let dir, certs, origin, proxy, home, browser;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-e2e-'));
    certs = makeOriginCertificates(dir);
    origin = await startOrigin(certs);
    proxy = await startProxy({ dir, upstreamCa: certs.caPath });
    home = homeTrusting(proxy.caPath);
    browser = await launchBrowser({ proxy, home });
  });

  after(async () => {
    await browser?.close();
    await proxy?.stop();
    await origin?.close();
    console.log('\nload times and bytes from the origin (information, not assertions):');
    console.table(numbers);
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs the app on a cold load, over HTTP/2 to the proxy', async () => {
    const load = await loadApp(browser, origin.url('/'));
    assert.equal(load.result, 'ok v1');
    assert.equal(load.protocol, 'h2', 'Chromium speaks HTTP/2 to the intercepting proxy');
    assert.deepEqual(bigAssetHits(origin), once);
    record('cold', load, origin);
  });

  it('serves the big assets from the proxy to a new browser context', async () => {
    origin.resetCounts();
    const sessionsBefore = origin.sessions;
    const load = await loadApp(browser, origin.url('/'));
    assert.equal(load.result, 'ok v1');
    assert.deepEqual(bigAssetHits(origin), none);
    assert.equal(origin.sessions, sessionsBefore + 1, 'the API call is never cached');
    record('warm, new context', load, origin);
  });

  it('serves them to a new browser process', async () => {
    await browser.close();
    browser = await launchBrowser({ proxy, home });
    origin.resetCounts();
    const load = await loadApp(browser, origin.url('/'));
    assert.equal(load.result, 'ok v1');
    assert.deepEqual(bigAssetHits(origin), none);
    record('warm, new browser', load, origin);
  });

  it('serves them after the proxy restarts', async () => {
    await browser.close();
    const exit = await proxy.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, 'SIGTERM ends the proxy cleanly');
    proxy = await startProxy({ dir, upstreamCa: certs.caPath });
    browser = await launchBrowser({ proxy, home });
    origin.resetCounts();
    const load = await loadApp(browser, origin.url('/'));
    assert.equal(load.result, 'ok v1');
    assert.deepEqual(bigAssetHits(origin), none);
    record('after proxy restart (disk)', load, origin);
  });

  it('fetches a redeployed version once and shows it', async () => {
    origin.redeploy(2);
    origin.resetCounts();
    const load = await loadApp(browser, origin.url('/'));
    assert.equal(load.result, 'ok v2');
    assert.equal(origin.hits('/main.dart.js?v=2'), 1);
    record('redeploy v2, first load', load, origin);
    const again = await loadApp(browser, origin.url('/'));
    assert.equal(again.result, 'ok v2');
    assert.equal(origin.hits('/main.dart.js?v=2'), 1);
    assert.equal(origin.bigAssetHits('canvaskit.wasm'), 0);
  });
});

describe('many browsers at once', () => {
  it('eight contexts loading cold fetch each big asset once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'asset-proxy-e2e-'));
    const certs = makeOriginCertificates(dir);
    const origin = await startOrigin(certs);
    const proxy = await startProxy({ dir, upstreamCa: certs.caPath });
    const browser = await launchBrowser({ proxy, home: homeTrusting(proxy.caPath) });
    try {
      const loads = await Promise.all(Array.from({ length: 8 }, () => loadApp(browser, origin.url('/'))));
      assert.deepEqual(loads.map((l) => l.result), Array(8).fill('ok v1'));
      assert.deepEqual(bigAssetHits(origin), once);
    } finally {
      await browser.close();
      await proxy.stop();
      await origin.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('other origins and clients', () => {
  let dir, certs, proxy, home, browser;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-e2e-'));
    certs = makeOriginCertificates(dir);
    proxy = await startProxy({ dir, upstreamCa: certs.caPath });
    home = homeTrusting(proxy.caPath);
    browser = await launchBrowser({ proxy, home });
  });

  after(async () => {
    await browser?.close();
    await proxy?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('works with an HTTP/1.1-only origin', async () => {
    const origin = await startOrigin({ ...certs, http1Only: true });
    try {
      const load = await loadApp(browser, origin.url('/'));
      assert.equal(load.result, 'ok v1');
      assert.equal(load.protocol, 'h2', 'the browser side stays HTTP/2');
    } finally {
      await origin.close();
    }
  });

  it('gives a browser without the CA a certificate error', async () => {
    const origin = await startOrigin(certs);
    const untrusting = await launchBrowser({ proxy, home: homeTrusting(null) });
    try {
      const page = await untrusting.newPage();
      await assert.rejects(page.goto(origin.url('/')), /ERR_CERT_AUTHORITY_INVALID/);
    } finally {
      await untrusting.close();
      await origin.close();
    }
  });

  it('refuses hosts outside upstream.allow_hosts at once', async () => {
    const page = await browser.newPage();
    const started = performance.now();
    await assert.rejects(page.goto('https://connectivity-check.example.invalid/'), /ERR_TUNNEL_CONNECTION_FAILED/);
    const plain = await new Promise((resolve, reject) => {
      const request = http.get({ host: '127.0.0.1', port: proxy.port, path: 'http://update.example.invalid/' }, (response) => {
        let body = '';
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode, body }));
      });
      request.on('error', reject);
    });
    assert.equal(plain.status, 403);
    assert.match(plain.body, /update\.example\.invalid is not in upstream\.allow_hosts/);
    assert.ok(performance.now() - started < 10_000, 'refused without a DNS lookup or a connection attempt');
    await page.close();
  });
});
