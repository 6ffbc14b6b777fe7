// The real web through the proxy in Chromium: a third-party production build (Swagger UI
// from the swagger-ui-dist package) whose HTML sets a session cookie and whose page opens a
// WebSocket, and whose 1.7 MB bundle, read from disk again, goes to Chromium as the zstd frame
// stored there; CanvasKit (the canvaskit-wasm package), whose 7 MB module Chromium compiles as
// it streams from the cache, from memory and from disk as a zstd frame; and the Flutter-like
// app with a session cookie per browser context.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { makeOriginCertificates } from './lib/certs.mjs';
import { homeTrusting, launchBrowser } from './lib/browser.mjs';
import { startCanvasKitOrigin } from './lib/canvaskit-origin.mjs';
import { startOrigin } from './lib/origin.mjs';
import { startProxy } from './lib/proxy.mjs';
import { startRealWebOrigin } from './lib/realweb-origin.mjs';

const numbers = [];

async function stats(proxy) {
  return (await fetch(`${proxy.admin}/stats`)).json();
}

// Loads Swagger UI in a new context: the API description rendered, the socket answered.
// `seen`, when given, gets each path's Cache-Status and Content-Encoding.
async function loadSwagger(browser, url, seen) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const recorded = [];
  if (seen) {
    page.on('response', (response) => {
      recorded.push(response.allHeaders().then((headers) => {
        seen.set(new URL(response.url()).pathname, {
          cacheStatus: headers['cache-status'] ?? '',
          encoding: headers['content-encoding'] ?? 'identity',
        });
      }));
    });
  }
  try {
    const response = await page.goto(url);
    await page.waitForSelector('.swagger-ui .info .title', { timeout: 60_000 });
    const title = (await page.textContent('.swagger-ui .info .title')).trim();
    await page.waitForFunction(() => !['connecting', undefined].includes(document.getElementById('live')?.textContent), null, { timeout: 30_000 });
    const live = await page.textContent('#live');
    const operations = await page.locator('.opblock-summary-path').count();
    const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    const cookies = (await context.cookies()).map((c) => c.name);
    await Promise.all(recorded);
    return { status: response.status(), title, live, operations, protocol, cookies };
  } finally {
    await context.close();
  }
}

// Loads the CanvasKit page in a new context: the title it ends with, what the module's
// answer said, and whether the module had to be compiled from a whole download instead of as
// it streamed in (the loader says so on the console).
async function loadCanvasKit(browser, url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const messages = [];
  page.on('console', (message) => messages.push(message.text()));
  let wasm = null;
  page.on('response', (response) => {
    if (response.url().endsWith('canvaskit.wasm')) wasm = response.allHeaders();
  });
  try {
    await page.goto(url);
    await page.waitForFunction(() => document.title !== 'loading', null, { timeout: 60_000 });
    const title = await page.title();
    const headers = await wasm;
    return {
      title,
      cacheStatus: headers?.['cache-status'] ?? '',
      type: headers?.['content-type'] ?? '',
      encoding: headers?.['content-encoding'] ?? 'identity',
      fellBack: messages.some((text) => text.includes('falling back to ArrayBuffer')),
    };
  } finally {
    await context.close();
  }
}

const DRAWN = 'drawn 200,30,60,255';

// A proxy on `cacheDir` whose memory tier (1 MiB) is too small for a big asset, so that every
// load after the first reads it from disk, and a browser going through it.
async function startDiskBound(dir, certs, cacheDir) {
  const proxy = await startProxy({
    dir,
    cacheDir: join(dir, cacheDir),
    upstreamCa: certs.caPath,
    config: { upstream: { allow_hosts: ['localhost', '127.0.0.1', '::1'] }, memory: { max_mb: 1, prewarm: false } },
  });
  const browser = await launchBrowser({ proxy, home: homeTrusting(proxy.caPath) });
  return { proxy, browser };
}

// Waits until `proxy` has stored an entry compressed (on its writer's thread), so that the
// next load reads the compressed file.
async function storedCompressed(proxy, what) {
  const deadline = Date.now() + 30_000;
  while ((await stats(proxy)).disk_compressed_writes < 1) {
    assert.ok(Date.now() < deadline, what);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('real web apps through asset-proxy in Chromium', () => {
  let dir, certs, proxy, home, browser;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-realweb-'));
    certs = makeOriginCertificates(dir);
    proxy = await startProxy({ dir, upstreamCa: certs.caPath });
    home = homeTrusting(proxy.caPath);
    browser = await launchBrowser({ proxy, home });
  });

  after(async () => {
    await browser?.close();
    await proxy?.stop();
    console.log('\norigin bytes per browser context (information, not assertions):');
    console.table(numbers);
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs Swagger UI with a session cookie and a WebSocket; a second context fetches under 10 % of the bytes', async () => {
    const origin = await startRealWebOrigin(certs);
    try {
      const before = await stats(proxy);
      const first = await loadSwagger(browser, origin.url('/'));
      assert.equal(first.status, 200);
      assert.equal(first.title.startsWith('Real web through asset-proxy'), true, first.title);
      assert.equal(first.operations, 1, 'the API description is rendered');
      assert.equal(first.live, 'pong: ping', 'the WebSocket exchanged messages through the proxy');
      assert.deepEqual(first.cookies, ['sid']);
      const firstBytes = origin.state.bytes;
      origin.resetBytes();

      const second = await loadSwagger(browser, origin.url('/'));
      assert.equal(second.live, 'pong: ping');
      assert.equal(second.operations, 1);
      const secondBytes = origin.state.bytes;
      numbers.push({ app: 'Swagger UI', first: firstBytes, second: secondBytes });
      assert.ok(origin.state.cookiesSeen > 10, 'asset requests carried the session cookie');
      assert.ok(secondBytes < firstBytes / 10, `second context fetched ${secondBytes} of ${firstBytes} bytes`);

      const after = await stats(proxy);
      assert.equal(after.websockets.opened - before.websockets.opened, 2);
      assert.equal(origin.state.sockets, 2);
      // Chromium speaks HTTP/2 to the proxy for the page; the proxy does not offer WebSockets
      // over HTTP/2 (RFC 8441), so Chromium opens an HTTP/1.1 connection for each socket.
      assert.equal(first.protocol, 'h2');
      const closed = proxy.log.filter((line) => line.includes('websocket closed'));
      assert.ok(closed.length >= 1, 'one log line per socket');
      assert.ok(closed.every((line) => line.includes('client=HTTP/1.1')), closed.join('\n'));
    } finally {
      await origin.close();
    }
  });

  it('sends Swagger UI its bundle from disk as the zstd frame stored there, and the app runs', async () => {
    // A memory tier too small for the 1.7 MB bundle: every load after the first reads it from
    // disk. The first disk read checks the file; the next keeps its zstd frame and sends it.
    const { proxy: small, browser: smallBrowser } = await startDiskBound(dir, certs, 'small-cache');
    const origin = await startRealWebOrigin(certs);
    try {
      const loads = [];
      for (let i = 0; i < 3; i += 1) {
        const seen = new Map();
        const load = await loadSwagger(smallBrowser, origin.url('/'), seen);
        assert.equal(load.operations, 1, 'the API description is rendered');
        loads.push(seen.get('/swagger-ui-bundle.js'));
        await storedCompressed(small, 'the bundle stored compressed');
      }
      const [, checked, kept] = loads;
      assert.match(checked.cacheStatus, /hit; detail=disk/, JSON.stringify(checked));
      assert.match(kept.cacheStatus, /hit; detail=disk/, JSON.stringify(kept));
      assert.equal(kept.encoding, 'zstd', JSON.stringify(kept));
    } finally {
      await origin.close();
      await smallBrowser.close();
      await small.stop();
    }
  });

  it('runs CanvasKit, the WebAssembly renderer of Flutter web, from memory and from disk as a zstd frame', async () => {
    const origin = await startCanvasKitOrigin(certs);
    // A second proxy, disk-bound for the module: the first disk read checks the file, the next
    // sends its zstd frame.
    const { proxy: small, browser: smallBrowser } = await startDiskBound(dir, certs, 'canvaskit-cache');
    try {
      const cold = await loadCanvasKit(browser, origin.url('/'));
      const coldBytes = origin.state.bytes;
      const warm = await loadCanvasKit(browser, origin.url('/'));
      numbers.push({ app: 'CanvasKit', first: coldBytes, second: origin.state.bytes - coldBytes });
      for (const load of [cold, warm]) {
        assert.equal(load.title, DRAWN, JSON.stringify(load));
        assert.equal(load.type, 'application/wasm');
        assert.equal(load.fellBack, false, 'compiled as it streamed in');
      }
      assert.match(warm.cacheStatus, /hit/, JSON.stringify(warm));
      assert.equal(origin.state.wasmSent, 1, 'one download of the module for both contexts');

      const fromDisk = [];
      for (let i = 0; i < 3; i += 1) {
        fromDisk.push(await loadCanvasKit(smallBrowser, origin.url('/')));
        await storedCompressed(small, 'the module stored compressed');
      }
      const [, checked, kept] = fromDisk;
      for (const load of fromDisk) {
        assert.equal(load.title, DRAWN, JSON.stringify(load));
        assert.equal(load.fellBack, false, JSON.stringify(load));
      }
      assert.match(checked.cacheStatus, /hit; detail=disk/, JSON.stringify(checked));
      assert.match(kept.cacheStatus, /hit; detail=disk/, JSON.stringify(kept));
      assert.equal(kept.encoding, 'zstd', JSON.stringify(kept));
      assert.equal(kept.type, 'application/wasm');
      assert.equal(origin.state.wasmSent, 2, 'one download more, for the second proxy');
    } finally {
      await smallBrowser.close();
      await small.stop();
      await origin.close();
    }
  });

  it('fetches the big assets once for eight contexts that each get their own session cookie', async () => {
    const origin = await startOrigin({ ...certs, sessionCookie: true });
    try {
      for (let i = 0; i < 8; i += 1) {
        const context = await browser.newContext();
        const page = await context.newPage();
        await page.goto(origin.url('/'));
        await page.waitForFunction(() => document.getElementById('result')?.textContent !== 'loading', null, { timeout: 60_000 });
        assert.equal(await page.textContent('#result'), 'ok v1');
        await context.close();
      }
      assert.equal(origin.cookies.set, 8, 'each context got a session of its own');
      assert.ok(origin.cookies.carried > 8, 'the assets were asked for with the cookie');
      assert.equal(origin.bigAssetHits('main.dart.js'), 1);
      assert.equal(origin.bigAssetHits('canvaskit.wasm'), 1);
    } finally {
      await origin.close();
    }
  });
});
