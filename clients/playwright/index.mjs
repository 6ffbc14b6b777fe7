// Start asset-proxy for a test run, or connect to one that runs, and give browsers what they
// need to go through it: the proxy server, and the CA's key pin for
// --ignore-certificate-errors-spki-list (no certificate store, no ignoreHTTPSErrors).
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Environment variables a started proxy is announced in, for Playwright's workers. */
export const ENV_SERVER = 'ASSET_PROXY_SERVER';
export const ENV_SPKI = 'ASSET_PROXY_SPKI';
/** The namespace (key space) browsers use, when set: a project, tenant or CI run. */
export const ENV_NAMESPACE = 'ASSET_PROXY_NAMESPACE';

/**
 * Starts `proxy` and resolves once it listens.
 * options: bin ('proxy'), port (0: a free one), cacheDir, caDir, mode ('auto', 'record',
 * 'replay', 'refresh'), config (a file), requireNamespace (ask browsers for their namespace:
 * they send the proxy user name only when asked), args (more arguments), startTimeoutMs
 * (30000).
 * Resolves to { server, spki, stop() }.
 */
export async function startAssetProxy(options = {}) {
  const bin = options.bin ?? process.env.ASSET_PROXY_BIN ?? 'proxy';
  const common = [];
  if (options.caDir) common.push('--ca-dir', options.caDir);
  const args = ['--port', String(options.port ?? 0), ...common];
  if (options.cacheDir) args.push('--cache-dir', options.cacheDir);
  if (options.mode) args.push('--mode', options.mode);
  if (options.config) args.push('--config', options.config);
  if (options.requireNamespace) args.push('--require-namespace');
  args.push(...(options.args ?? []));
  const { stdout } = await run(bin, [...common, 'ca', 'spki']);
  const spki = stdout.trim();
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const lines = [];
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      reject(new Error(`asset-proxy did not start within ${options.startTimeoutMs ?? 30_000} ms:\n${lines.join('\n')}`));
    }, options.startTimeoutMs ?? 30_000);
    child.stderr.on('data', (chunk) => {
      buffer += chunk;
      const parts = buffer.split('\n');
      buffer = parts.pop();
      for (const line of parts) {
        if (lines.length < 200) lines.push(line);
        const match = /: listening addr=([\d.]+):(\d+)/.exec(line);
        if (match) {
          clearTimeout(timer);
          resolve(Number(match[2]));
        }
      }
    });
    exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`asset-proxy exited with ${code}:\n${lines.join('\n')}`));
    });
  });
  return {
    server: `http://127.0.0.1:${port}`,
    spki,
    /** Stops the proxy (SIGTERM: it finishes writing what it fetched, then exits). */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/**
 * Launch options that send a browser through the proxy and trust its CA by key. Loopback
 * origins go through it too. With a namespace, the browser answers the proxy's request for
 * one with it as the proxy user name (the proxy must run with --require-namespace: browsers
 * send proxy credentials only when asked). `base` is merged (its args kept).
 */
export function proxiedLaunchOptions({ server, spki, namespace }, base = {}) {
  const proxy = { server, bypass: '<-loopback>' };
  if (namespace) Object.assign(proxy, { username: namespace, password: '' });
  return {
    ...base,
    proxy,
    args: [...(base.args ?? []), `--ignore-certificate-errors-spki-list=${spki}`],
  };
}

/** The proxy a global setup announced to this process, if any, with the namespace to use. */
export function announcedProxy(env = process.env) {
  const server = env[ENV_SERVER];
  const spki = env[ENV_SPKI];
  const namespace = env[ENV_NAMESPACE] || undefined;
  return server && spki ? { server, spki, namespace } : null;
}
