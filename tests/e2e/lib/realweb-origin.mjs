// A third-party production web build — Swagger UI, as the swagger-ui-dist npm package
// ships it — served the way a plain static host serves files: ETag and Last-Modified from
// the file, no Cache-Control, the HTML revalidated on every load. Like real sites, the HTML
// sets a session cookie, so every later request of the page carries it. The page also opens
// a WebSocket to the origin (the `ws` package), as chat widgets and live-reload do.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import http2 from 'node:http2';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { WebSocketServer } from 'ws';

import { listenOnLoopback } from './listen.mjs';

const require = createRequire(import.meta.url);
const DIST = dirname(require.resolve('swagger-ui-dist/package.json'));

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'application/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.json': 'application/json',
};

// The deployment's own files: its API description, its initializer (which every Swagger UI
// deployment replaces), and the page's socket.
const SPEC = JSON.stringify({
  openapi: '3.0.3',
  info: { title: 'Real web through asset-proxy', version: '1.0.0' },
  paths: { '/pets': { get: { summary: 'List pets', responses: { 200: { description: 'pets' } } } } },
});
const INITIALIZER = `window.onload = function () {
  window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout" });
};`;
const LIVE = `(() => {
  const status = document.createElement('div');
  status.id = 'live';
  status.textContent = 'connecting';
  document.body.appendChild(status);
  const socket = new WebSocket('wss://' + location.host + '/live');
  socket.onopen = () => socket.send('ping');
  socket.onmessage = (event) => { status.textContent = event.data; socket.close(); };
  socket.onerror = () => { status.textContent = 'socket error'; };
})();`;

function file(name) {
  const path = join(DIST, name);
  const body = readFileSync(path);
  return { body, modified: statSync(path).mtime.toUTCString(), etag: `"${createHash('sha256').update(body).digest('hex').slice(0, 20)}"` };
}

function page() {
  const html = readFileSync(join(DIST, 'index.html'), 'utf8')
    .replace('</body>', '  <script src="./live.js"></script>\n  </body>');
  return Buffer.from(html);
}

export async function startRealWebOrigin({ key, cert }) {
  const state = { bytes: 0, requests: 0, cookiesSeen: 0, sockets: 0, messages: [] };
  const generated = {
    '/openapi.json': { body: Buffer.from(SPEC), type: TYPES['.json'] },
    '/swagger-initializer.js': { body: Buffer.from(INITIALIZER), type: TYPES['.js'] },
    '/live.js': { body: Buffer.from(LIVE), type: TYPES['.js'] },
  };
  const handler = (req, res) => {
    const url = new URL(req.url, 'https://localhost');
    state.requests += 1;
    if (req.headers.cookie?.includes('sid=')) state.cookiesSeen += 1;
    const send = (status, headers, body) => {
      state.bytes += body.length;
      res.writeHead(status, { 'content-length': body.length, ...headers });
      res.end(body);
    };
    if (url.pathname === '/' || url.pathname === '/index.html') {
      // Every visitor without a session gets one.
      const headers = { 'content-type': TYPES['.html'], 'cache-control': 'no-cache' };
      if (!req.headers.cookie?.includes('sid=')) {
        headers['set-cookie'] = `sid=${randomBytes(12).toString('hex')}; Path=/; Secure; HttpOnly; SameSite=Lax`;
      }
      return send(200, headers, page());
    }
    if (generated[url.pathname]) {
      const { body, type } = generated[url.pathname];
      return send(200, { 'content-type': type, 'cache-control': 'no-cache', etag: `"${body.length}"` }, body);
    }
    const name = url.pathname.slice(1);
    const type = TYPES[name.slice(name.lastIndexOf('.'))];
    if (!/^[\w.-]+$/.test(name) || !type) return send(404, {}, Buffer.from('not found'));
    let found;
    try {
      found = file(name);
    } catch {
      return send(404, {}, Buffer.from('not found'));
    }
    const headers = { 'content-type': type, etag: found.etag, 'last-modified': found.modified };
    if (req.headers['if-none-match'] === found.etag) {
      res.writeHead(304, headers);
      return res.end();
    }
    return send(200, headers, found.body);
  };
  const server = http2.createSecureServer({ key, cert, allowHTTP1: true }, handler);
  const sockets = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    if (new URL(req.url, 'https://localhost').pathname !== '/live') return socket.destroy();
    sockets.handleUpgrade(req, socket, head, (ws) => {
      state.sockets += 1;
      ws.on('message', (message) => {
        state.messages.push(String(message));
        ws.send('pong: ' + message);
      });
    });
  });
  const { port, close } = await listenOnLoopback(server);
  return {
    url: (path = '/') => `https://localhost:${port}${path}`,
    state,
    resetBytes() {
      state.bytes = 0;
    },
    close: () => {
      sockets.close();
      return close();
    },
  };
}
