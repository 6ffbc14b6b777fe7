// Playwright Test fixtures: `import { test, expect } from 'asset-proxy-playwright/fixtures'`.
// Every browser of the run goes through the proxy the global setup started (or announced),
// trusting its CA by key.
import { test as base, expect } from '@playwright/test';

import { announcedProxy, proxiedLaunchOptions } from './index.mjs';

export const test = base.extend({
  launchOptions: [async ({ launchOptions }, use) => {
    const proxy = announcedProxy();
    if (!proxy) throw new Error('asset-proxy-playwright: no proxy announced; add globalSetup: "asset-proxy-playwright/global-setup" to playwright.config');
    await use(proxiedLaunchOptions(proxy, launchOptions));
  }, { scope: 'worker' }],
});

export { expect };
