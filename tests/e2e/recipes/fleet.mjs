// A fleet: N worker processes, each with its own headless Chromium, all behind one proxy.
// Each big asset reaches the origin once for the whole fleet.
//
// usage: node fleet.mjs PROXY_URL APP_URL WORKERS   — prints one verdict per worker
import { fork } from 'node:child_process';
import { chromium } from 'playwright-core';

const [proxy, url, workers = '4', role] = process.argv.slice(2);

async function work() {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--no-first-run', '--disable-quic'],
    proxy: { server: proxy, bypass: '<-loopback>' },
  });
  try {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('result').textContent !== 'loading', null, { timeout: 60_000 });
    return await page.textContent('#result');
  } finally {
    await browser.close();
  }
}

if (role === 'worker') {
  process.send(await work());
} else {
  const verdicts = await Promise.all(Array.from({ length: Number(workers) }, (_, i) => new Promise((resolve, reject) => {
    const child = fork(new URL(import.meta.url).pathname, [proxy, url, workers, 'worker']);
    child.on('message', (verdict) => resolve(`worker ${i}: ${verdict}`));
    child.on('exit', (code) => code !== 0 && reject(new Error(`worker ${i} exited with ${code}`)));
  })));
  console.log(verdicts.join('\n'));
}
