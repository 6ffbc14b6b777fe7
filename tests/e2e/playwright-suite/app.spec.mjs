// Four tests of the app, each in a fresh browser context, over two workers.
import { test, expect } from 'asset-proxy-playwright/fixtures';

for (const n of [1, 2, 3, 4]) {
  test(`the app runs (${n})`, async ({ page }) => {
    await page.goto(process.env.APP_URL);
    await expect(page.locator('#result')).not.toHaveText('loading', { timeout: 60_000 });
    await expect(page.locator('#result')).toHaveText('ok v1');
  });
}
