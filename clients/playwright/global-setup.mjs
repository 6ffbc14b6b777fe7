// Playwright Test global setup: `globalSetup: 'asset-proxy-playwright/global-setup'` in
// playwright.config. Starts asset-proxy for the run (or uses the one ASSET_PROXY_SERVER and
// ASSET_PROXY_SPKI name), announces it to the workers, and stops it after the run.
// Options come from the environment: ASSET_PROXY_BIN, ASSET_PROXY_CACHE_DIR,
// ASSET_PROXY_CA_DIR, ASSET_PROXY_MODE, ASSET_PROXY_CONFIG, and ASSET_PROXY_NAMESPACE (the
// run's key space: the proxy started here asks browsers for it).
import { ENV_SERVER, ENV_SPKI, announcedProxy, startAssetProxy } from './index.mjs';

export default async function globalSetup() {
  if (announcedProxy()) return undefined;
  const env = process.env;
  const proxy = await startAssetProxy({
    bin: env.ASSET_PROXY_BIN,
    cacheDir: env.ASSET_PROXY_CACHE_DIR,
    caDir: env.ASSET_PROXY_CA_DIR,
    mode: env.ASSET_PROXY_MODE,
    config: env.ASSET_PROXY_CONFIG,
    requireNamespace: Boolean(env.ASSET_PROXY_NAMESPACE),
  });
  env[ENV_SERVER] = proxy.server;
  env[ENV_SPKI] = proxy.spki;
  return async () => {
    await proxy.stop();
  };
}
