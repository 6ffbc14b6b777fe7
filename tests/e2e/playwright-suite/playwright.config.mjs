// A Playwright Test suite set up the way the README tells a user to: one global setup and
// the fixtures of asset-proxy-playwright. Run by integration.test.mjs against a local app.
import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: '.',
  testMatch: '*.spec.mjs',
  workers: 2,
  fullyParallel: true,
  reporter: 'line',
  globalSetup: 'asset-proxy-playwright/global-setup',
  use: {
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run', '--disable-quic', '--disable-gpu'],
    },
  },
});
