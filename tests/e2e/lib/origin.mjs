// A local HTTPS origin serving a Flutter-web-like app: index.html, flutter.js,
// main.dart.js?v=N (several MiB, gzip with Vary: Accept-Encoding), a canvaskit.wasm of a few
// MiB, a font, and an API call that must never be cached. It counts every request and every
// body byte it sends, and can be redeployed to a new version.
import { createCipheriv, createHash } from 'node:crypto';
import http2 from 'node:http2';
import https from 'node:https';
import { gzipSync } from 'node:zlib';

import { listenOnLoopback } from './listen.mjs';

const MIB = 1024 * 1024;
export const BIG_ASSETS = ['main.dart.js', 'canvaskit.wasm', 'Roboto-Regular'];
export const FONT_PATH = '/assets/fonts/Roboto-Regular.3f2a9c1b.woff2';
export const WASM_PATH = '/canvaskit/canvaskit.wasm';

// Deterministic bytes that do not compress: AES-CTR of zeros under a key made from `seed`.
function pseudoRandom(length, seed) {
  const key = createHash('sha256').update(`seed ${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(length)), cipher.final()]);
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

function leb128(n) {
  const bytes = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    bytes.push(byte);
  } while (n !== 0);
  return Buffer.from(bytes);
}

// A valid wasm module: header plus one custom section carrying `size` bytes of payload.
function buildWasm(size) {
  const name = Buffer.from('pad');
  const payload = pseudoRandom(size, 99);
  const content = Buffer.concat([leb128(name.length), name, payload]);
  return Buffer.concat([Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0]), leb128(content.length), content]);
}

const wasm = buildWasm(3 * MIB);
const font = pseudoRandom(120 * 1024, 7);

function buildMain(version) {
  const data = pseudoRandom(3 * MIB, version).toString('base64');
  const code = `
const VERSION = ${version};
const DATA = "${data}";
const DATA_SHA = "${sha256(data)}";
const WASM = { path: "${WASM_PATH}", length: ${wasm.length}, sha: "${sha256(wasm)}" };
const FONT = { path: "${FONT_PATH}", length: ${font.length}, sha: "${sha256(font)}" };
async function hex(buffer) {
  const digest = await crypto.subtle.digest('SHA-256', buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
async function fetchChecked(asset) {
  const bytes = await (await fetch(asset.path)).arrayBuffer();
  if (bytes.byteLength !== asset.length || (await hex(bytes)) !== asset.sha) throw new Error(asset.path + ' damaged');
  return bytes;
}
(async () => {
  const result = document.getElementById('result');
  try {
    if ((await hex(new TextEncoder().encode(DATA))) !== DATA_SHA) throw new Error('main.dart.js damaged');
    const module = await WebAssembly.compile(await fetchChecked(WASM));
    if (WebAssembly.Module.customSections(module, 'pad').length !== 1) throw new Error('wasm section missing');
    await fetchChecked(FONT);
    const session = await (await fetch('/api/session')).json();
    window.appResult = { version: VERSION, session: session.n };
    result.textContent = 'ok v' + VERSION;
  } catch (error) {
    result.textContent = 'error: ' + error.message;
  }
})();
`;
  const plain = Buffer.from(code);
  return { plain, gzip: gzipSync(plain) };
}

function indexHtml(version) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>e2e app</title>
<script>window.APP_VERSION = ${version};</script><script src="flutter.js" defer></script></head>
<body><div id="result">loading</div></body></html>`;
}

const flutterJs = `window.addEventListener('load', () => {
  const script = document.createElement('script');
  script.src = 'main.dart.js?v=' + window.APP_VERSION;
  document.body.appendChild(script);
});`;

// With `sessionCookie`, the HTML sets a session cookie for visitors without one, as real sites
// do: every later request of that browser context carries it.
export async function startOrigin({ key, cert, http1Only = false, sessionCookie = false }) {
  const state = { version: 1, hits: new Map(), bytes: 0, sessions: 0, mains: new Map(), cookiesSet: 0, withCookie: 0 };
  const main = (version) => {
    if (!state.mains.has(version)) state.mains.set(version, buildMain(version));
    return state.mains.get(version);
  };
  main(1);

  const handler = (req, res) => {
    const url = new URL(req.url, 'https://localhost');
    const target = url.pathname + url.search;
    state.hits.set(target, (state.hits.get(target) ?? 0) + 1);
    if (req.headers.cookie?.includes('sid=')) state.withCookie += 1;
    const send = (status, headers, body) => {
      state.bytes += body.length;
      res.writeHead(status, { 'content-length': body.length, ...headers });
      res.end(body);
    };
    // Entry points, as Flutter ships them: no version in the URL, no-cache, an ETag.
    const entryPoint = (type, text) => {
      const etag = `"${sha256(text).slice(0, 16)}"`;
      const headers = { 'content-type': type, 'cache-control': 'no-cache', etag };
      if (sessionCookie && type === 'text/html' && !req.headers.cookie?.includes('sid=')) {
        state.cookiesSet += 1;
        headers['set-cookie'] = `sid=${state.cookiesSet}-${Math.random().toString(36).slice(2)}; Path=/; Secure; SameSite=Lax`;
      }
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, headers);
        return res.end();
      }
      return send(200, headers, Buffer.from(text));
    };
    if (url.pathname === '/' || url.pathname === '/index.html') return entryPoint('text/html', indexHtml(state.version));
    if (url.pathname === '/flutter.js') return entryPoint('text/javascript', flutterJs);
    if (url.pathname === '/main.dart.js') {
      const version = Number(url.searchParams.get('v'));
      if (!state.mains.has(version) && version !== state.version) return send(404, {}, Buffer.from('no such version'));
      const { plain, gzip } = main(version);
      const headers = { 'content-type': 'text/javascript', 'cache-control': 'no-cache', vary: 'Accept-Encoding' };
      if (/\bgzip\b/.test(req.headers['accept-encoding'] ?? '')) {
        return send(200, { ...headers, 'content-encoding': 'gzip' }, gzip);
      }
      return send(200, headers, plain);
    }
    // Unversioned, but explicitly cacheable: standard HTTP caching keeps it.
    if (url.pathname === WASM_PATH) {
      return send(200, { 'content-type': 'application/wasm', 'cache-control': 'public, max-age=3600' }, wasm);
    }
    if (url.pathname === FONT_PATH) return send(200, { 'content-type': 'font/woff2' }, font);
    if (url.pathname === '/api/session') {
      state.sessions += 1;
      return send(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }, Buffer.from(JSON.stringify({ n: state.sessions })));
    }
    return send(404, {}, Buffer.from('not found'));
  };

  const server = http1Only
    ? https.createServer({ key, cert, ALPNProtocols: ['http/1.1'] }, handler)
    : http2.createSecureServer({ key, cert, allowHTTP1: true }, handler);
  const { port, close } = await listenOnLoopback(server);
  return {
    port,
    url: (path = '/') => `https://localhost:${port}${path}`,
    redeploy(version) {
      state.version = version;
      main(version);
    },
    resetCounts() {
      state.hits.clear();
      state.bytes = 0;
    },
    // Requests for a big asset (any version), by a name fragment.
    bigAssetHits(fragment) {
      let n = 0;
      for (const [target, count] of state.hits) if (target.includes(fragment)) n += count;
      return n;
    },
    hits: (target) => state.hits.get(target) ?? 0,
    get bytesSent() {
      return state.bytes;
    },
    get sessions() {
      return state.sessions;
    },
    // Session cookies handed out, and requests that carried one.
    get cookies() {
      return { set: state.cookiesSet, carried: state.withCookie };
    },
    close,
  };
}
