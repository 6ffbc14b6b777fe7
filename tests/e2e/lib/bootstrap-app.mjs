// A local HTTPS origin serving an app that loads as Flutter web does, one link naming the
// next: index.html -> flutter_bootstrap.js -> main.dart.js?v=42 (named in the bootstrap) ->
// canvaskit.wasm under /flutter-canvaskit/<engine hash>/ (named in the bootstrap, requested by
// main.dart.js once it runs). Entry points are no-cache with an ETag; the rest is versioned.
// Optionally as far away as a real origin: each answer waits `delayMs`, and bodies are paced
// to `mbit` per connection. Counts requests per path.
import https from 'node:https';

const MIB = 1024 * 1024;
export const ENGINE_HASH = '36335019a8eab588c3c2ea783c618d90505be233';
export const CANVASKIT_PATH = `/flutter-canvaskit/${ENGINE_HASH}/canvaskit.wasm`;
export const MAIN_PATH = '/main.dart.js?v=42';

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

// Real entry points are a few KiB: a loader, styles, metadata.
const LOADER_NOTES = Array.from({ length: 40 }, (_, n) => `// loader step ${n}: fetch, compile and instantiate the next part of the app`).join('\n');
const HEAD_STYLES = Array.from({ length: 30 }, (_, n) => `.splash-${n} { margin: ${n}px; opacity: 0.${n % 10}; }`).join('\n');

const files = {
  '/index.html': ['text/html', 'no-cache', `<!doctype html><html><head><meta charset="utf-8">
<style>${HEAD_STYLES}</style>
<script src="flutter_bootstrap.js" defer></script></head><body><div id="result">loading</div></body></html>`],
  '/flutter_bootstrap.js': ['text/javascript', 'no-cache', `${LOADER_NOTES}
const build = {
  mainJsPath: "${MAIN_PATH.slice(1)}",
  canvasKitPath: "${CANVASKIT_PATH}",
};
window.CANVASKIT = build.canvasKitPath;
const script = document.createElement('script');
script.src = build.mainJsPath;
document.body.appendChild(script);`],
  [MAIN_PATH]: ['text/javascript', 'public, max-age=31536000',
    `const PAD = "${'x'.repeat(4 * MIB)}";
fetch(window.CANVASKIT).then((r) => r.arrayBuffer()).then((b) => WebAssembly.compile(b))
  .then(() => { document.getElementById('result').textContent = 'ok ' + PAD.length; })
  .catch((e) => { document.getElementById('result').textContent = 'error ' + e; });`],
  [CANVASKIT_PATH]: ['application/wasm', 'public, max-age=31536000', wasmOf(3 * MIB)],
};

export async function startBootstrapApp({ key, cert, delayMs = 0, mbit = 0 }) {
  const hits = new Map();
  let bytesSent = 0;
  const server = https.createServer({ key, cert }, (req, res) => {
    hits.set(req.url, (hits.get(req.url) ?? 0) + 1);
    const file = files[req.url];
    setTimeout(() => {
      if (!file) {
        res.writeHead(404, { 'content-length': 0 });
        return res.end();
      }
      const [type, cacheControl, text] = file;
      if (req.headers['if-none-match'] === '"1"') {
        res.writeHead(304, { 'cache-control': cacheControl, etag: '"1"' });
        return res.end();
      }
      const body = Buffer.isBuffer(text) ? text : Buffer.from(text);
      bytesSent += body.length;
      res.writeHead(200, { 'content-type': type, 'cache-control': cacheControl, 'content-length': body.length, etag: '"1"' });
      if (!mbit) return res.end(body);
      // Paced: a chunk every `interval` ms keeps the connection at `mbit`.
      const chunk = 64 * 1024;
      const interval = (chunk * 8) / (mbit * 1000);
      let offset = 0;
      const send = () => {
        if (offset >= body.length) return res.end();
        res.write(body.subarray(offset, offset + chunk));
        offset += chunk;
        setTimeout(send, interval);
      };
      send();
    }, delayMs);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: (path) => `https://127.0.0.1:${server.address().port}${path}`,
    hits: (path) => hits.get(path) ?? 0,
    get bytesSent() { return bytesSent; },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
