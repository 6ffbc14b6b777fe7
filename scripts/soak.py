#!/usr/bin/env python3
"""Load and soak test of asset-proxy on loopback (the `websockets` package the only one
beyond the standard library).

1. Holds CONNECTIONS client connections open at once (default 2000), each fetching a cached
   asset, and reports how many were served, and the proxy's memory and open descriptors.
2. Soaks at a steady mixed load for SOAK_SECONDS (default 600): memory hits, new versioned
   assets (misses that are stored), and unversioned requests forwarded without the cache,
   half of them from sessions that carry their own cookie (static assets shared, documents
   kept per cookie); WebSockets opened through CONNECT tunnels, exchanging messages and
   closing; and a background flood of connections that send nothing, which the proxy's idle
   deadline must close. It samples the proxy's resident memory and open file descriptors
   every SAMPLE_SECONDS. The memory tier is small (--memory-mb, default 16) so that it is
   full early: after that, what grows is a leak, not the cache filling up.
   Both must stay flat: the last minute's average within 20 % (memory) / 50 descriptors of
   the first minute after warm-up; the slope over the run is reported.

Every loop is bounded in count and time. Prints a Markdown report for BENCHMARKS.md.

usage: scripts/soak.py PROXY_BINARY [--connections N] [--soak-seconds S] [--rate R]
"""
import argparse
import asyncio
import http.server
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import websockets.asyncio.client
import websockets.asyncio.server

ASSET = b"x" * 2048
PAGE = b"<!doctype html><title>session</title>" + b"p" * 2048


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        page = self.path.startswith("/page")
        body = PAGE if page else ASSET
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if page else "text/javascript")
        if page:
            self.send_header("Cache-Control", "public, max-age=600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_proxy(binary, workdir, memory_mb):
    port = free_port()
    admin = free_port()
    with open(os.path.join(workdir, "proxy.json"), "w") as config:
        config.write('{"memory": {"max_mb": %d}, "clients": {"idle_timeout_secs": 20}}' % memory_mb)
    proxy = subprocess.Popen(
        [binary, "--port", str(port), "--admin-port", str(admin), "--cache-dir", "cache",
         "--ca-dir", "certs", "--config", "proxy.json", "--log", "warn"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proxy, port
        except OSError:
            time.sleep(0.05)
    proxy.kill()
    sys.exit("the proxy did not start")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def fetch(reader, writer, url, cookie=None):
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    writer.write(f"GET {url} HTTP/1.1\r\nHost: origin\r\n{extra}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return head.split(b" ", 2)[1] == b"200"


async def hold_connections(port, origin, count, pid=None, rounds=3):
    """Opens `count` connections, then every one fetches `rounds` times while all are open;
    returns (opened, served, seconds, proxy MiB and descriptors while they were open)."""
    url = f"http://127.0.0.1:{origin}/app.3f2a9c1b.js"
    connections = await asyncio.gather(
        *[asyncio.open_connection("127.0.0.1", port) for _ in range(count)], return_exceptions=True)
    opened = [c for c in connections if not isinstance(c, Exception)]

    async def client(reader, writer):
        ok = 0
        for _ in range(rounds):
            try:
                ok += await asyncio.wait_for(fetch(reader, writer, url), 30)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                break
        return ok

    started = time.monotonic()
    served = await asyncio.gather(*[client(r, w) for r, w in opened])
    elapsed = time.monotonic() - started
    held = (rss_mib(pid), open_fds(pid)) if pid else (0.0, 0)
    for _, writer in opened:
        writer.close()
    return len(opened), sum(served), elapsed, held


async def connect_tunnel(port, authority):
    """A CONNECT tunnel through the proxy to `authority`: the socket, ready for a handshake."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(1024)
        if not chunk:
            raise OSError("the proxy closed the tunnel")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 200"):
        raise OSError(answer.split(b"\r\n")[0].decode())
    sock.setblocking(False)
    return sock


async def soak(port, origin, ws_port, pid, seconds, rate, sample_every):
    """Steady mixed load; returns the samples (elapsed, rss MiB, fds, requests so far)."""
    samples = []
    counts = {"requests": 0, "errors": 0, "sockets": 0, "socket_errors": 0, "idle_opened": 0}
    stop = time.monotonic() + seconds
    workers = 16
    interval = workers / rate

    async def worker(index):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        while time.monotonic() < stop:
            n += 1
            kind = n % 10
            # Half the workers are browser sessions with a cookie of their own.
            cookie = f"sid=session-{index}-{n // 100}" if index % 2 else None
            if kind < 7:
                url = f"http://127.0.0.1:{origin}/app.3f2a9c1b.js"
            elif kind == 7:
                url = f"http://127.0.0.1:{origin}/page.html"
            elif kind == 8:
                url = f"http://127.0.0.1:{origin}/main.dart.js?v={index}-{n}"
            else:
                url = f"http://127.0.0.1:{origin}/api/data?n={n}"
            began = time.monotonic()
            try:
                ok = await asyncio.wait_for(fetch(reader, writer, url, cookie), 30)
                counts["requests"] += 1
                counts["errors"] += 0 if ok else 1
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                counts["errors"] += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))
        writer.close()

    async def socket_user(index):
        """Opens a WebSocket through a CONNECT tunnel, exchanges ten messages, closes; again."""
        n = 0
        while time.monotonic() < stop:
            n += 1
            try:
                sock = await connect_tunnel(port, f"127.0.0.1:{ws_port}")
                async with websockets.asyncio.client.connect(
                        f"ws://127.0.0.1:{ws_port}/live", sock=sock, open_timeout=30) as ws:
                    for m in range(10):
                        await ws.send(f"{index}-{n}-{m}")
                        echoed = await asyncio.wait_for(ws.recv(), 30)
                        if echoed != f"{index}-{n}-{m}":
                            raise OSError("wrong echo")
                        await asyncio.sleep(0.05)
                counts["sockets"] += 1
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException):
                counts["socket_errors"] += 1
            await asyncio.sleep(0.5)

    async def idle_flood():
        """Every 30 s, 100 more connections that never send a byte."""
        held = []
        while time.monotonic() < stop:
            for _ in range(100):
                try:
                    held.append(await asyncio.open_connection("127.0.0.1", port))
                    counts["idle_opened"] += 1
                except OSError:
                    break
            await asyncio.sleep(min(30, max(0, stop - time.monotonic())))
            # What the proxy closed, close here too; keep the rest.
            alive = []
            for reader, writer in held:
                if reader.at_eof() or writer.is_closing():
                    writer.close()
                else:
                    alive.append((reader, writer))
            held = alive
        for _, writer in held:
            writer.close()

    async def sampler():
        started = time.monotonic()
        while time.monotonic() < stop:
            samples.append((time.monotonic() - started, rss_mib(pid), open_fds(pid), counts["requests"]))
            await asyncio.sleep(sample_every)

    await asyncio.gather(sampler(), idle_flood(), *[worker(i) for i in range(workers)],
                         *[socket_user(i) for i in range(4)])
    return samples, counts


async def echo(ws):
    async for message in ws:
        await ws.send(message)


def start_socket_origin():
    """A WebSocket echo origin on its own thread and event loop; returns its port."""
    ready = threading.Event()
    holder = {}

    def run():
        async def serve():
            async with websockets.asyncio.server.serve(echo, "127.0.0.1", 0) as server:
                holder["port"] = server.sockets[0].getsockname()[1]
                ready.set()
                await asyncio.Future()
        asyncio.run(serve())

    threading.Thread(target=run, daemon=True).start()
    if not ready.wait(10):
        sys.exit("the WebSocket origin did not start")
    return holder["port"]


def slope_per_hour(samples, column):
    """Least-squares slope of a sampled column, per hour."""
    xs = [s[0] for s in samples]
    ys = [s[column] for s in samples]
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.mean(xs), statistics.mean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var * 3600) if var else 0.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--soak-seconds", type=int, default=600)
    parser.add_argument("--rate", type=float, default=400.0, help="requests per second in the soak")
    parser.add_argument("--sample-seconds", type=int, default=10)
    parser.add_argument("--memory-mb", type=int, default=16,
                        help="memory tier size; small, so that it is full early in the soak")
    args = parser.parse_args()

    limit = args.connections * 2 + 1024
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    workdir = tempfile.mkdtemp(prefix="asset-proxy-soak-")
    origin = start_origin()
    ws_port = start_socket_origin()
    proxy, port = start_proxy(os.path.abspath(args.binary), workdir, args.memory_mb)
    origin_port = origin.server_address[1]
    try:
        # Warm the cached asset once.
        asyncio.run(hold_connections(port, origin_port, 1, rounds=1))
        opened, served, elapsed, (held_rss, held_fds) = asyncio.run(
            hold_connections(port, origin_port, args.connections, proxy.pid))
        print(f"## Load: {args.connections} connections held open\n")
        print(f"- connections opened: {opened} of {args.connections}")
        print(f"- requests served while all were open: {served} of {opened * 3} in {elapsed:.1f} s")
        print(f"- proxy while they were open: {held_rss:.1f} MiB resident, {held_fds} open descriptors\n")
        if served < opened * 3:
            sys.exit("some held connections were not served")

        samples, counts = asyncio.run(
            soak(port, origin_port, ws_port, proxy.pid, args.soak_seconds, args.rate, args.sample_seconds))
        print(f"## Soak: {args.soak_seconds} s at ~{args.rate:.0f} requests/s "
              "(70 % memory hits, 10 % documents, 10 % new versions stored, 10 % forwarded; half "
              "from cookie-carrying sessions), 4 WebSocket clients opening, echoing and closing "
              "sockets through CONNECT tunnels, 100 silent connections more every 30 s, "
              f"memory tier {args.memory_mb} MiB, idle deadline 20 s\n")
        print(f"- requests: {counts['requests']}, errors: {counts['errors']}")
        print(f"- WebSockets: {counts['sockets']} opened, echoed ten messages and closed; "
              f"{counts['socket_errors']} failed")
        print(f"- silent connections opened: {counts['idle_opened']}\n")
        print("| t (s) | resident MiB | open fds | requests |")
        print("|---:|---:|---:|---:|")
        for t, rss, fds, requests in samples:
            print(f"| {t:.0f} | {rss:.1f} | {fds} | {requests} |")
        per_minute = max(1, 60 // args.sample_seconds)
        settled = samples[per_minute:] if len(samples) > 2 * per_minute else samples
        first, last = settled[:per_minute], settled[-per_minute:]
        rss_first, rss_last = statistics.mean(s[1] for s in first), statistics.mean(s[1] for s in last)
        fds_first, fds_last = statistics.mean(s[2] for s in first), statistics.mean(s[2] for s in last)
        flat_rss = rss_last <= rss_first * 1.2 + 4
        flat_fds = fds_last <= fds_first + 50
        print(f"\n- resident memory: {rss_first:.1f} MiB in the first minute after warm-up, "
              f"{rss_last:.1f} MiB in the last: {'flat' if flat_rss else 'GROWING'}")
        print(f"- open descriptors: {fds_first:.0f} then {fds_last:.0f}: {'flat' if flat_fds else 'GROWING'}")
        print(f"- slope after warm-up: {slope_per_hour(settled, 1):+.2f} MiB/hour resident, "
              f"{slope_per_hour(settled, 2):+.1f} descriptors/hour")
        clean = counts["errors"] == 0 and counts["socket_errors"] == 0
        sys.exit(0 if flat_rss and flat_fds and clean else 1)
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proxy.kill()
        origin.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
