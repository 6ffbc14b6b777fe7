// Headless Chromium through the proxy. Trust comes from an NSS database in a temporary HOME,
// made with certutil, never from --ignore-certificate-errors: a bad certificate fails.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const CHROMIUM_FLAGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic', '--disable-gpu'];

// A HOME whose NSS database trusts `caPath` (or nothing, without one).
export function homeTrusting(caPath) {
  const home = mkdtempSync(join(tmpdir(), 'e2e-home-'));
  const db = `sql:${join(home, '.pki', 'nssdb')}`;
  mkdirSync(join(home, '.pki', 'nssdb'), { recursive: true });
  execFileSync('certutil', ['-d', db, '-N', '--empty-password']);
  if (caPath) execFileSync('certutil', ['-d', db, '-A', '-t', 'C,,', '-n', 'asset-proxy', '-i', caPath]);
  return home;
}

export async function launchBrowser({ proxy, home }) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: CHROMIUM_FLAGS,
    env: { ...process.env, HOME: home },
    // Without the bypass rule Chromium sends loopback origins direct, around the proxy.
    proxy: { server: proxy.server, bypass: '<-loopback>' },
  });
}

// Loads the app in a new context and waits for its verdict.
export async function loadApp(browser, url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const started = performance.now();
  try {
    const response = await page.goto(url);
    await page.waitForFunction(() => document.getElementById('result')?.textContent !== 'loading', null, { timeout: 60_000 });
    const result = await page.textContent('#result');
    const ms = performance.now() - started;
    const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    return { result, ms, protocol, status: response.status() };
  } finally {
    await context.close();
  }
}
