// CanvasKit — Skia compiled to WebAssembly, the renderer Flutter web ships — as the
// canvaskit-wasm npm package ships it (a 7 MB module and its loader), served the way Flutter
// web hosts serve it: under a directory named by the build's hash, with ETag and no
// Cache-Control. The page loads the module (Chromium compiles it as it streams in, which
// needs `Content-Type: application/wasm`), draws a rectangle with it in software and puts the
// colour of one drawn pixel in its title.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import { listenOnLoopback } from './listen.mjs';

const require = createRequire(import.meta.url);
const BIN = dirname(require.resolve('canvaskit-wasm'));

const loader = readFileSync(join(BIN, 'canvaskit.js'));
const wasm = readFileSync(join(BIN, 'canvaskit.wasm'));
const BUILD = createHash('sha256').update(wasm).digest('hex').slice(0, 40);
export const CANVASKIT_DIR = `/canvaskit/${BUILD}/`;

const PAGE = `<!doctype html>
<html><head><title>loading</title></head><body>
<canvas id="drawing" width="64" height="64"></canvas>
<script src="${CANVASKIT_DIR}canvaskit.js"></script>
<script>
CanvasKitInit({ locateFile: (file) => '${CANVASKIT_DIR}' + file }).then((CanvasKit) => {
  const surface = CanvasKit.MakeSWCanvasSurface('drawing');
  const paint = new CanvasKit.Paint();
  paint.setColor(CanvasKit.Color(200, 30, 60, 1));
  surface.getCanvas().drawRect(CanvasKit.LTRBRect(8, 8, 56, 56), paint);
  surface.flush();
  const pixel = document.getElementById('drawing').getContext('2d').getImageData(32, 32, 1, 1).data;
  document.title = 'drawn ' + Array.from(pixel).join(',');
}).catch((error) => { document.title = 'failed ' + error; });
</script>
</body></html>`;

const FILES = {
  '/': { body: Buffer.from(PAGE), type: 'text/html; charset=utf-8' },
  [`${CANVASKIT_DIR}canvaskit.js`]: { body: loader, type: 'application/javascript' },
  [`${CANVASKIT_DIR}canvaskit.wasm`]: { body: wasm, type: 'application/wasm' },
};
for (const file of Object.values(FILES)) {
  file.etag = `"${createHash('sha256').update(file.body).digest('hex').slice(0, 16)}"`;
}

export async function startCanvasKitOrigin({ key, cert }) {
  const state = { wasmSent: 0, bytes: 0 };
  const handler = (req, res) => {
    const path = new URL(req.url, 'https://localhost').pathname;
    const file = FILES[path];
    if (!file) {
      res.writeHead(404);
      return res.end();
    }
    const headers = { 'content-type': file.type, etag: file.etag };
    if (req.headers['if-none-match'] === file.etag) {
      res.writeHead(304, headers);
      return res.end();
    }
    if (path.endsWith('.wasm')) state.wasmSent += 1;
    state.bytes += file.body.length;
    res.writeHead(200, { ...headers, 'content-length': file.body.length });
    return res.end(file.body);
  };
  const server = http2.createSecureServer({ key, cert, allowHTTP1: true }, handler);
  const { port, close } = await listenOnLoopback(server);
  return {
    url: (path = '/') => `https://localhost:${port}${path}`,
    state,
    close,
  };
}
