// Cold page loads of a Flutter-like app in headless Chromium through asset-proxy, with and
// without predictive prefetch. Run by scripts/bench_prefetch.sh.
//
// The origin is as far away as a real one: every answer waits ORIGIN_DELAY_MS, and bodies are
// paced to ORIGIN_MBIT per connection. The app loads as Flutter web does: index.html ->
// flutter_bootstrap.js -> main.dart.js (named in the bootstrap) -> canvaskit.wasm (named in the
// bootstrap, requested by main.dart.js once it runs). Each load is cold: a new cache
// directory, a new proxy, a new browser.
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { homeTrusting, launchBrowser, loadApp } from '../tests/e2e/lib/browser.mjs';
import { makeOriginCertificates } from '../tests/e2e/lib/certs.mjs';
import { startProxy } from '../tests/e2e/lib/proxy.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const DELAY_MS = Number(process.env.ORIGIN_DELAY_MS ?? 100);
const MBIT = Number(process.env.ORIGIN_MBIT ?? 40);
const MIB = 1024 * 1024;
const HASH = '36335019a8eab588c3c2ea783c618d90505be233';
const CANVASKIT = `/flutter-canvaskit/${HASH}/canvaskit.wasm`;

// A valid wasm module: the header and one custom section of `size` bytes.
function wasmOf(size) {
  const leb = (n) => {
    const out = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return Buffer.from(out);
  };
  const name = Buffer.from('pad');
  const content = Buffer.concat([leb(name.length), name, Buffer.alloc(size, 7)]);
  return Buffer.concat([Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0]), leb(content.length), content]);
}

const files = {
  '/index.html': ['text/html', 'no-cache', `<!doctype html><html><head><meta charset="utf-8">
<script src="flutter_bootstrap.js" defer></script></head><body><div id="result">loading</div></body></html>`],
  '/flutter_bootstrap.js': ['text/javascript', 'no-cache', `const build = {
  mainJsPath: "main.dart.js?v=42",
  canvasKitPath: "${CANVASKIT}",
};
window.CANVASKIT = build.canvasKitPath;
const script = document.createElement('script');
script.src = build.mainJsPath;
document.body.appendChild(script);`],
  '/main.dart.js?v=42': ['text/javascript', 'public, max-age=31536000',
    `const PAD = "${'x'.repeat(4 * MIB)}";
fetch(window.CANVASKIT).then((r) => r.arrayBuffer()).then((b) => WebAssembly.compile(b))
  .then(() => { document.getElementById('result').textContent = 'ok ' + PAD.length; })
  .catch((e) => { document.getElementById('result').textContent = 'error ' + e; });`],
  [CANVASKIT]: ['application/wasm', 'public, max-age=31536000', wasmOf(3 * MIB)],
};

function startOrigin({ key, cert }) {
  const server = https.createServer({ key, cert }, (req, res) => {
    const file = files[req.url];
    setTimeout(() => {
      if (!file) {
        res.writeHead(404, { 'content-length': 0 });
        return res.end();
      }
      const [type, cacheControl, text] = file;
      const body = Buffer.isBuffer(text) ? text : Buffer.from(text);
      res.writeHead(200, { 'content-type': type, 'cache-control': cacheControl, 'content-length': body.length, etag: '"1"' });
      // Paced: a chunk every `interval` ms keeps the connection at MBIT.
      const chunk = 64 * 1024;
      const interval = (chunk * 8) / (MBIT * 1000);
      let offset = 0;
      const send = () => {
        if (offset >= body.length) return res.end();
        res.write(body.subarray(offset, offset + chunk));
        offset += chunk;
        setTimeout(send, interval);
      };
      send();
    }, DELAY_MS);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function coldLoad(work, origin, prefetch, run) {
  const proxy = await startProxy({
    dir: work,
    cacheDir: join(work, `cache-${prefetch}-${run}`),
    upstreamCa: join(work, 'origin-ca.pem'),
    config: { upstream: { allow_hosts: ['127.0.0.1'] }, prefetch: { enabled: prefetch } },
  });
  const browser = await launchBrowser({ proxy, home: homeTrusting(proxy.caPath) });
  try {
    const { result, ms } = await loadApp(browser, `https://127.0.0.1:${origin.address().port}/index.html`);
    if (!result.startsWith('ok')) throw new Error(`app failed: ${result}`);
    return ms;
  } finally {
    await browser.close();
    await proxy.stop();
  }
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

const work = mkdtempSync(join(tmpdir(), 'asset-proxy-prefetch-'));
try {
  const origin = await startOrigin(makeOriginCertificates(work));
  const times = { false: [], true: [] };
  // Alternate, so that a drift of the machine touches both alike.
  for (let run = 0; run < RUNS; run += 1) {
    for (const prefetch of [false, true]) times[prefetch].push(await coldLoad(work, origin, prefetch, run));
  }
  origin.close();
  const [off, on] = [median(times.false), median(times.true)];
  console.log(`\n### Cold page load, Flutter-like app (${RUNS} runs each, origin ${DELAY_MS} ms away, ${MBIT} Mbit/s per connection)\n`);
  console.log('| prefetch | median load (ms) | runs (ms) |\n|---|---|---|');
  console.log(`| off | ${off.toFixed(0)} | ${times.false.map((t) => t.toFixed(0)).join(', ')} |`);
  console.log(`| on | ${on.toFixed(0)} | ${times.true.map((t) => t.toFixed(0)).join(', ')} |`);
  console.log(`| ratio on / off | ${(on / off).toFixed(2)}x | |`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
