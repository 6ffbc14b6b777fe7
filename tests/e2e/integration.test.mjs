// The test-runner integrations as a user adds them: a Playwright Test suite whose config names
// the global setup of clients/playwright and whose tests import its fixtures, and a pytest
// suite with the plugin of clients/python. Each starts the proxy, sends every browser through
// it trusting its CA by key (a HOME with no certificate store), and stops it at the end; the
// app's big assets reach the origin once for the whole suite of four tests on fresh contexts.
// The pytest run uses a namespace (ASSET_PROXY_NAMESPACE): what it stored is found there.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { makeOriginCertificates } from './lib/certs.mjs';
import { BIG_ASSETS, startOrigin } from './lib/origin.mjs';
import { PROXY_BIN } from './lib/proxy.mjs';

const run = promisify(execFile);
const here = new URL('.', import.meta.url).pathname;

describe('test-runner integrations', () => {
  let dir, certs, origin, env;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-runner-'));
    certs = makeOriginCertificates(dir);
    origin = await startOrigin(certs);
    const config = join(dir, 'proxy.json');
    writeFileSync(config, JSON.stringify({ upstream: { allow_hosts: ['localhost', '127.0.0.1', '::1'] } }));
    env = {
      ...process.env,
      HOME: mkdtempSync(join(tmpdir(), 'e2e-bare-home-')),
      APP_URL: origin.url('/'),
      ASSET_PROXY_BIN: PROXY_BIN,
      ASSET_PROXY_CACHE_DIR: join(dir, 'cache'),
      ASSET_PROXY_CA_DIR: join(dir, 'certs'),
      ASSET_PROXY_CONFIG: config,
      // The test origin's own CA, for the proxy's connections to it.
      ASSET_PROXY_UPSTREAM_CA: certs.caPath,
    };
    delete env.ASSET_PROXY_SERVER;
    delete env.ASSET_PROXY_SPKI;
  });

  afterEach(async () => {
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(env.HOME, { recursive: true, force: true });
  });

  it('Playwright Test: global setup and fixtures', async () => {
    const { stdout } = await run(join(here, 'node_modules/.bin/playwright'),
      ['test', '-c', join(here, 'playwright-suite/playwright.config.mjs')], { env, cwd: here });
    assert.match(stdout, /4 passed/, stdout);
    for (const name of BIG_ASSETS) assert.equal(origin.bigAssetHits(name), 1, name);
  });

  it('pytest-playwright: the plugin, in a namespace', async () => {
    const python = { ...env, PYTHONPATH: join(here, '../../clients/python'), PYTHONDONTWRITEBYTECODE: '1',
      ASSET_PROXY_NAMESPACE: 'pytest-run' };
    const { stdout } = await run('python3', ['-m', 'pytest', '-q', '-p', 'asset_proxy_pytest', '-p', 'no:cacheprovider',
      join(here, 'pytest-suite')], { env: python, cwd: here });
    assert.match(stdout, /4 passed/, stdout);
    for (const name of BIG_ASSETS) assert.equal(origin.bigAssetHits(name), 1, name);
    // What the run stored is in its namespace, and only there.
    const ls = async (namespace) => (await run(PROXY_BIN, ['--port', '1', '--admin-port', '1', '--cache-dir',
      env.ASSET_PROXY_CACHE_DIR, 'cache', 'ls', '--namespace', namespace])).stdout;
    assert.match(await ls('pytest-run'), /main\.dart\.js/);
    assert.equal((await ls('default')).trim(), '');
  });
});
