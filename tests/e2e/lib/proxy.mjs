// The proxy binary as a real process: started on port 0, its address read from the
// "listening" log line, stopped with SIGTERM.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const PROXY_BIN = resolve(process.env.ASSET_PROXY_BIN ?? new URL('../../../target/debug/proxy', import.meta.url).pathname);

// The suite's config: only loopback origins may be contacted (Chromium's own background
// requests get a 403 and never leave the machine).
export const E2E_CONFIG = {
  upstream: { allow_hosts: ['localhost', '127.0.0.1', '::1'] },
};

export async function startProxy({ dir, cacheDir = join(dir, 'cache'), upstreamCa, config = E2E_CONFIG, extraArgs = [] }) {
  const configPath = join(dir, 'proxy.json');
  writeFileSync(configPath, JSON.stringify(config));
  const args = ['--port', '0', '--cache-dir', cacheDir, '--ca-dir', join(dir, 'certs'),
    '--config', configPath, '--upstream-ca', upstreamCa, '--log', 'info', ...extraArgs];
  const env = { ...process.env };
  delete env.RUST_LOG;
  const child = spawn(PROXY_BIN, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const log = [];
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let admin = null;
  const port = await new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error('proxy did not start:\n' + log.join('\n'))), 30_000);
    child.stderr.on('data', (chunk) => {
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop();
      for (const line of lines) {
        log.push(line);
        const adminMatch = /admin API listening addr=127\.0\.0\.1:(\d+)/.exec(line);
        if (adminMatch) admin = Number(adminMatch[1]);
        const match = /: listening addr=127\.0\.0\.1:(\d+)/.exec(line);
        if (match) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      }
    });
    exited.then(({ code }) => reject(new Error(`proxy exited with ${code}:\n${log.join('\n')}`)));
  });
  return {
    port,
    server: `http://127.0.0.1:${port}`,
    admin: `http://127.0.0.1:${admin}`,
    caPath: join(dir, 'certs', 'ca.pem'),
    log,
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}
