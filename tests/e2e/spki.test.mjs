// Trust without a certificate store: Chromium pins the proxy's CA by the hash of its public key
// (`proxy ca spki` → --ignore-certificate-errors-spki-list), in a HOME with no NSS database.
// The pin works because the proxy sends its CA certificate after each leaf; without the pin,
// or with another key's, the same load fails.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_FLAGS, loadApp } from './lib/browser.mjs';
import { makeOriginCertificates } from './lib/certs.mjs';
import { startOrigin } from './lib/origin.mjs';
import { PROXY_BIN, startProxy } from './lib/proxy.mjs';

describe('trusting the proxy by its key, with no certificate store', () => {
  let dir, certs, origin, proxy, home, spki;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'asset-proxy-spki-'));
    certs = makeOriginCertificates(dir);
    origin = await startOrigin(certs);
    proxy = await startProxy({ dir, upstreamCa: certs.caPath });
    spki = execFileSync(PROXY_BIN, ['--ca-dir', join(dir, 'certs'), 'ca', 'spki'], { encoding: 'utf8' }).trim();
    home = mkdtempSync(join(tmpdir(), 'e2e-bare-home-'));
  });

  after(async () => {
    await proxy?.stop();
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });

  const launch = (extra) => chromium.launch({
    executablePath: CHROMIUM,
    args: [...CHROMIUM_FLAGS, ...extra],
    env: { ...process.env, HOME: home },
    proxy: { server: proxy.server, bypass: '<-loopback>' },
  });

  it('prints the key hash as base64 SHA-256', () => {
    assert.match(spki, /^[A-Za-z0-9+/]{43}=$/);
  });

  it('loads the app through the proxy with only the pin', async () => {
    const browser = await launch([`--ignore-certificate-errors-spki-list=${spki}`]);
    try {
      const load = await loadApp(browser, origin.url('/'));
      assert.equal(load.result, 'ok v1');
    } finally {
      await browser.close();
    }
    assert.ok(!existsSync(join(home, '.pki')), 'no certificate store was made');
  });

  it('fails without the pin, and with another key pinned', async () => {
    const other = Buffer.alloc(32, 7).toString('base64');
    for (const extra of [[], [`--ignore-certificate-errors-spki-list=${other}`]]) {
      const browser = await launch(extra);
      try {
        const page = await browser.newPage();
        await assert.rejects(page.goto(origin.url('/')), /ERR_CERT_AUTHORITY_INVALID/, extra.join(' '));
      } finally {
        await browser.close();
      }
    }
  });
});
