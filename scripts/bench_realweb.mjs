// Streams and sockets through the proxy, beside the same client talking to the origin
// directly, in one run: how long a server-sent event takes from the origin's write to the
// client (plain HTTP and inside an intercepted tunnel), and a WebSocket echo's round trip.
// Prints a Markdown table for BENCHMARKS.md. Run by scripts/bench_realweb.sh.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../tests/e2e/package.json', import.meta.url));
const { WebSocketServer, WebSocket } = require('ws');

const PROXY_BIN = process.env.ASSET_PROXY_BIN;
const EVENTS = 300;
const EVENT_GAP_MS = 10;
const ROUND_TRIPS = 2000;
const now = () => Number(process.hrtime.bigint()) / 1e6;

function percentile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function certificates(dir) {
  const run = (args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=bench CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  run(['req', '-new', ...ec, '-keyout', 'o.key', '-out', 'o.csr', '-subj', '/CN=localhost']);
  execFileSync('sh', ['-c', 'printf "subjectAltName=DNS:localhost\\n" > ext'], { cwd: dir });
  run(['x509', '-req', '-in', 'o.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext', '-out', 'o.pem']);
  return { key: readFileSync(join(dir, 'o.key')), cert: readFileSync(join(dir, 'o.pem')), caPath: join(dir, 'ca.pem') };
}

// An origin (HTTP and HTTPS) sending one event every EVENT_GAP_MS, stamped with when it was
// written, and echoing WebSocket messages.
async function startOrigins(certs) {
  const handler = (req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let sent = 0;
    const timer = setInterval(() => {
      res.write(`data: ${now()}\n\n`);
      if (++sent === EVENTS) {
        clearInterval(timer);
        res.end();
      }
    }, EVENT_GAP_MS);
  };
  const plain = http.createServer(handler);
  const secure = https.createServer({ key: certs.key, cert: certs.cert }, handler);
  const sockets = new WebSocketServer({ server: plain });
  sockets.on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
  await Promise.all([plain, secure].map((s) => new Promise((r) => s.listen(0, '127.0.0.1', r))));
  return { plain, secure, close: () => { sockets.close(); plain.close(); secure.close(); } };
}

async function startProxy(dir, originCa) {
  const child = spawn(PROXY_BIN, ['--port', '0', '--cache-dir', join(dir, 'cache'), '--ca-dir', join(dir, 'certs'),
    '--upstream-ca', originCa, '--log', 'warn,asset_proxy::app=info'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const port = await new Promise((resolve, reject) => {
    let text = '';
    child.stderr.on('data', (chunk) => {
      text += chunk;
      const match = /: listening addr=127\.0\.0\.1:(\d+)/.exec(text);
      if (match) resolve(Number(match[1]));
    });
    child.on('exit', (code) => reject(new Error(`proxy exited ${code}: ${text}`)));
  });
  return { port, ca: readFileSync(join(dir, 'certs', 'ca.pem')), stop: () => child.kill('SIGTERM') };
}

// A TLS socket to `host:port` inside a CONNECT tunnel through the proxy.
function tunnel(proxyPort, port, ca) {
  return new Promise((resolve, reject) => {
    const request = http.request({ host: '127.0.0.1', port: proxyPort, method: 'CONNECT', path: `localhost:${port}` });
    request.on('connect', (res, socket) => {
      if (res.statusCode !== 200) return reject(new Error(`CONNECT ${res.statusCode}`));
      resolve(tls.connect({ socket, servername: 'localhost', ca, ALPNProtocols: ['http/1.1'] }));
    });
    request.on('error', reject);
    request.end();
  });
}

// Event delays (ms) for one stream read with `options`.
function eventDelays(get, options) {
  return new Promise((resolve, reject) => {
    const delays = [];
    const request = get(options, (res) => {
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        const arrived = now();
        buffer += chunk;
        const events = buffer.split('\n\n');
        buffer = events.pop();
        for (const event of events) delays.push(arrived - Number(event.slice('data: '.length)));
      });
      res.on('end', () => resolve(delays));
    });
    request.on('error', reject);
  });
}

async function echoRoundTrips(url, options) {
  const ws = new WebSocket(url, options);
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const times = [];
  for (let i = 0; i < ROUND_TRIPS; i += 1) {
    const start = now();
    await new Promise((resolve) => { ws.once('message', resolve); ws.send(`m${i}`); });
    times.push(now() - start);
  }
  ws.close();
  return times;
}

const dir = mkdtempSync(join(tmpdir(), 'bench-realweb-'));
const certs = certificates(dir);
const origins = await startOrigins(certs);
const proxy = await startProxy(dir, certs.caPath);
const plainPort = origins.plain.address().port;
const securePort = origins.secure.address().port;
const originCa = readFileSync(certs.caPath);
const rows = [];
const row = (what, peer, ours, target, met) => rows.push({ what, peer, ours, target, met });
try {
  const direct = await eventDelays(http.get, { host: '127.0.0.1', port: plainPort, path: '/events' });
  const viaProxy = await eventDelays(http.get, { host: '127.0.0.1', port: proxy.port, path: `http://127.0.0.1:${plainPort}/events`, headers: { host: `127.0.0.1:${plainPort}` } });
  const socket = await tunnel(proxy.port, securePort, proxy.ca);
  const viaMitm = await eventDelays(http.get, { host: 'localhost', port: securePort, path: '/events', createConnection: () => socket });
  const directTls = await eventDelays(https.get, { host: 'localhost', port: securePort, path: '/events', ca: originCa, agent: false });
  const fmt = (values) => `p50 ${percentile(values, 0.5).toFixed(2)} ms, p99 ${percentile(values, 0.99).toFixed(2)} ms`;
  row('server-sent event, origin write to client read, plain HTTP', fmt(direct), fmt(viaProxy), 'p99 ≤ 50 ms', percentile(viaProxy, 0.99) <= 50);
  row('server-sent event, HTTPS, intercepted tunnel', fmt(directTls), fmt(viaMitm), 'p99 ≤ 50 ms', percentile(viaMitm, 0.99) <= 50);
  const wsDirect = await echoRoundTrips(`ws://127.0.0.1:${plainPort}/`);
  // ws:// inside a CONNECT tunnel to the plain port, as browsers send it through a proxy.
  const plainTunnel = await new Promise((resolve, reject) => {
    const request = http.request({ host: '127.0.0.1', port: proxy.port, method: 'CONNECT', path: `127.0.0.1:${plainPort}` });
    request.on('connect', (res, socket) => (res.statusCode === 200 ? resolve(socket) : reject(new Error(`CONNECT ${res.statusCode}`))));
    request.on('error', reject);
    request.end();
  });
  const ws = await echoRoundTrips(`ws://127.0.0.1:${plainPort}/`, { createConnection: () => plainTunnel });
  const p50 = (values) => percentile(values, 0.5);
  row('WebSocket echo round trip (ws:// in a CONNECT tunnel)', `p50 ${p50(wsDirect).toFixed(3)} ms`, `p50 ${p50(ws).toFixed(3)} ms`,
    'adds ≤ 0.5 ms at p50', p50(ws) - p50(wsDirect) <= 0.5);
} finally {
  proxy.stop();
  origins.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(`\n${EVENTS} events ${EVENT_GAP_MS} ms apart per stream; ${ROUND_TRIPS} echo round trips.\n`);
console.log('| what | origin directly | through asset-proxy | target | met |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.what} | ${r.peer} | ${r.ours} | ${r.target} | ${r.met ? 'met' : 'not met'} |`);
process.exit(0);
