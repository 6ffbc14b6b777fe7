// The client recipes of the README, run as users run them: Puppeteer, Playwright for Python,
// Python requests and httpx, and a fleet of worker processes sharing one proxy.
// (Playwright for Node is what app.test.mjs uses; curl is exercised by tests/process.rs.)
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { homeTrusting } from './lib/browser.mjs';
import { makeOriginCertificates } from './lib/certs.mjs';
import { BIG_ASSETS, FONT_PATH, startOrigin } from './lib/origin.mjs';
import { PROXY_BIN, startProxy } from './lib/proxy.mjs';

const run = promisify(execFile);
const recipe = (name) => new URL(`./recipes/${name}`, import.meta.url).pathname;

describe('client recipes', () => {
  let dir, certs, origin, proxy, env;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-recipes-'));
    certs = makeOriginCertificates(dir);
    origin = await startOrigin(certs);
    proxy = await startProxy({ dir, upstreamCa: certs.caPath });
    env = { ...process.env, HOME: homeTrusting(proxy.caPath) };
  });

  after(async () => {
    await proxy?.stop();
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a fleet of workers fetches each big asset once', async () => {
    const { stdout } = await run('node', [recipe('fleet.mjs'), proxy.server, origin.url('/'), '3'], { env });
    assert.deepEqual(stdout.trim().split('\n').sort(), ['worker 0: ok v1', 'worker 1: ok v1', 'worker 2: ok v1']);
    for (const name of BIG_ASSETS) assert.equal(origin.bigAssetHits(name), 1, name);
  });

  it('Puppeteer', async () => {
    const { stdout } = await run('node', [recipe('puppeteer.mjs'), proxy.server, origin.url('/')], { env });
    assert.equal(stdout.trim(), 'ok v1');
  });

  it('Playwright for Python, trusting the proxy by its key in a HOME with no certificate store', async () => {
    const { stdout: spki } = await run(PROXY_BIN, ['--ca-dir', join(dir, 'certs'), 'ca', 'spki']);
    const bare = { ...process.env, HOME: mkdtempSync(join(tmpdir(), 'e2e-bare-home-')) };
    const { stdout } = await run('python3', [recipe('playwright_python.py'), proxy.server, origin.url('/'), spki.trim()], { env: bare });
    assert.equal(stdout.trim(), 'ok v1');
  });

  it('Python requests and httpx', async () => {
    const { stdout } = await run('python3', [recipe('python_clients.py'), proxy.server, proxy.caPath, origin.url(FONT_PATH)], { env });
    const lines = stdout.trim().split('\n').map((line) => JSON.parse(line));
    assert.equal(lines.length, 4);
    for (const line of lines) {
      assert.equal(line.status, 200);
      assert.equal(line.length, 120 * 1024);
      assert.match(line.cache, /^asset-proxy; (hit|fwd=miss; stored)/);
    }
    assert.ok(lines.slice(1).every((line) => line.cache.startsWith('asset-proxy; hit')), JSON.stringify(lines));
  });
});
