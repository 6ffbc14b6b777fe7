#!/usr/bin/env python3
"""The fleet row of the benchmark: N asset-proxy instances (each with its own cache directory,
as on N machines) and M workers, each worker a fresh browser context that loads every asset of
an app through its machine's proxy. Measured with and without the shared tier on Redis: origin
fetches and origin bytes per asset, and the wall time until every worker is done. Run by
scripts/bench_fleet.sh, which installs redis-server and builds the release binary.

Loopback only; the origin waits ORIGIN_DELAY_MS before each answer, as a distant origin does.
Every run is bounded: each worker makes ASSETS requests, each with a 60 s limit.
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port, wait_port  # noqa: E402 - the side-by-side benchmark's helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY_BIN = os.environ.get("ASSET_PROXY_BIN", os.path.join(ROOT, "target/release/proxy"))
INSTANCES = int(os.environ.get("FLEET_INSTANCES", "3"))
WORKERS = int(os.environ.get("FLEET_WORKERS", "24"))
ASSETS = int(os.environ.get("FLEET_ASSETS", "16"))
ASSET_BYTES = int(os.environ.get("FLEET_ASSET_KIB", "1024")) * 1024
ORIGIN_DELAY_MS = int(os.environ.get("FLEET_ORIGIN_DELAY_MS", "50"))


class Origin:
    """Serves the app's assets after a delay and counts requests and bytes per path."""

    def __init__(self):
        self.bodies = {f"/assets/chunk{i}.js?v=1": os.urandom(ASSET_BYTES) for i in range(ASSETS)}
        self.fetches, self.bytes = {}, {}
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                time.sleep(ORIGIN_DELAY_MS / 1000)
                body = origin.bodies.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                with origin.lock:
                    origin.fetches[self.path] = origin.fetches.get(self.path, 0) + 1
                    origin.bytes[self.path] = origin.bytes.get(self.path, 0) + len(body)
                self.send_response(200)
                self.send_header("Content-Type", "text/javascript")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self):
        with self.lock:
            self.fetches, self.bytes = {}, {}

    def stop(self):
        self.server.shutdown()


def start(argv, port, what):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_port(port, what)
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_fleet(work, origin, redis_url):
    """Starts the instances, lets every worker load every asset, stops them; returns the wall
    time and the failures."""
    label = "shared" if redis_url else "alone"
    procs, ports, admins = [], [], []
    for n in range(INSTANCES):
        port, admin = free_port(), free_port()
        argv = [PROXY_BIN, "--port", str(port), "--admin-port", str(admin), "--log", "warn",
                "--cache-dir", os.path.join(work, f"{label}-{n}", "cache"),
                "--ca-dir", os.path.join(work, "certs")]
        if redis_url:
            argv += ["--shared-cache", redis_url]
        procs.append(start(argv, port, f"asset-proxy {n}"))
        ports.append(port)
        admins.append(admin)
    if redis_url:
        # Connected once the admin API says so (bounded).
        for admin in admins:
            deadline = time.time() + 20
            while b'"up":true' not in admin_stats(admin):
                if time.time() > deadline:
                    sys.exit("bench: an instance never connected to Redis")
                time.sleep(0.05)
    failures = []
    paths = list(origin.bodies)

    def worker(w):
        port = ports[w % INSTANCES]
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"}))
        order = paths[:]
        random.Random(w).shuffle(order)
        for path in order:
            try:
                with opener.open(f"http://127.0.0.1:{origin.port}{path}", timeout=60) as r:
                    if r.read() != origin.bodies[path]:
                        failures.append(f"{path}: wrong body")
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                failures.append(f"{path}: {e}")

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    for proc in procs:
        stop(proc)
    return wall, failures


def admin_stats(admin):
    """The /stats document of the instance whose admin API is on port `admin`, unspaced."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats", timeout=5) as r:
            return r.read().replace(b" ", b"")
    except OSError:
        return b""


def main():
    if not os.path.exists(PROXY_BIN):
        sys.exit(f"bench: {PROXY_BIN} missing; run scripts/bench_fleet.sh")
    work = tempfile.mkdtemp(prefix="asset-proxy-fleet-")
    origin = Origin()
    redis_port = free_port()
    redis = start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", work], redis_port, "redis-server")
    try:
        rows = []
        for redis_url in (None, f"redis://127.0.0.1:{redis_port}"):
            origin.reset()
            wall, failures = run_fleet(work, origin, redis_url)
            if failures:
                sys.exit(f"bench: {len(failures)} failed requests, e.g. {failures[:3]}")
            fetches = sum(origin.fetches.values()) / ASSETS
            mib = sum(origin.bytes.values()) / ASSETS / (1 << 20)
            rows.append(("with the shared tier (Redis)" if redis_url else "local tiers only",
                         fetches, mib, wall))
        print(f"\n### Fleet: {INSTANCES} instances, {WORKERS} workers, {ASSETS} assets of "
              f"{ASSET_BYTES >> 10} KiB, origin {ORIGIN_DELAY_MS} ms away\n")
        print("| setup | origin fetches per asset | origin MiB per asset | wall time (s) |")
        print("|---|---|---|---|")
        for name, fetches, mib, wall in rows:
            print(f"| {name} | {fetches:.2f} | {mib:.2f} | {wall:.2f} |")
        (_, f0, m0, w0), (_, f1, m1, w1) = rows
        print(f"| ratio shared / local only | {f1 / f0:.2f}x | {m1 / m0:.2f}x | {w1 / w0:.2f}x |")
    finally:
        stop(redis)
        origin.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
