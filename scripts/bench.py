#!/usr/bin/env python3
"""Side-by-side benchmark of asset-proxy against nginx (proxy_cache), Varnish and mitmproxy,
with the origin itself as the ceiling. Run by scripts/bench.sh, which installs the tools.

Loopback only. Proxies are pinned to core 0 and the load generator to core 1 (taskset), so the
ratios are fair on a 2-core machine. Every load run is bounded in time. Prints one table per
scenario with each figure and the ratio asset-proxy / peer.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY_BIN = os.environ.get("ASSET_PROXY_BIN", os.path.join(ROOT, "target/release/proxy"))
DURATION = int(os.environ.get("BENCH_SECS", "10"))
PROXY_CORE, LOAD_CORE = "0", "1"
MITMDUMP = os.environ.get("MITMDUMP", shutil.which("mitmdump") or "/opt/asset-proxy-bench/venv/bin/mitmdump")
OHA = os.environ.get("OHA", shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: {what} did not listen on {port}")


def process_tree(pid):
    """`pid` and its descendants (nginx and Varnish serve from child processes)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def peak_rss_mib(pid):
    """Sum of the peak resident memory of the process and its descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Work:
    """Temporary files: certificates, the origin's files, configs."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="asset-proxy-bench-")
        # nginx's workers run as an unprivileged user and must read the origin's files.
        os.chmod(self.dir, 0o755)
        self.www = os.path.join(self.dir, "www")
        os.makedirs(self.www)
        with open(os.path.join(self.www, "small.js"), "wb") as f:
            f.write(os.urandom(2048))
        with open(os.path.join(self.www, "big.js"), "wb") as f:
            f.write(os.urandom(4 * 1024 * 1024))
        self.ca, self.cert, self.key = self.certificates()

    def path(self, name):
        return os.path.join(self.dir, name)

    def certificates(self):
        ca, ca_key = self.path("origin-ca.pem"), self.path("origin-ca-key.pem")
        cert, key = self.path("origin.pem"), self.path("origin-key.pem")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=bench origin CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
        csr = self.path("origin.csr")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
        ext = self.path("origin.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext)
        return ca, cert, key


class Process:
    def __init__(self, name, argv, port, env=None, cores=None, log=None):
        self.name = name
        self.port = port
        errors = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(["taskset", "-c", cores or PROXY_CORE] + argv, stdout=subprocess.DEVNULL,
                                     stderr=errors, env=env, start_new_session=True)
        if log:
            errors.close()
        wait_port(port, name)

    def pid(self):
        # taskset execs the program, so the pid is the program's own.
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def nginx_conf(work, name, body, workers=1):
    conf = work.path(f"{name}.conf")
    prefix = work.path(name)
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    with open(conf, "w") as f:
        f.write(f"""
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    {body}
}}
""")
    return conf, prefix


def start_origin(work, slow_port):
    http_port, https_port = free_port(), free_port()
    conf, prefix = nginx_conf(work, "origin", f"""
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl http2;
        ssl_certificate {work.cert};
        ssl_certificate_key {work.key};
        ssl_session_tickets on;
        root {work.www};
        location / {{ add_header Cache-Control "public, max-age=31536000, immutable"; }}
        location /slow/ {{ proxy_pass http://127.0.0.1:{slow_port}; }}
        location /burst/ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
            try_files /burst.bin =404;
        }}
    }}""")
    origin = Process("origin (nginx)", ["nginx", "-p", prefix, "-c", conf], http_port)
    wait_port(https_port, "origin https")
    origin.https_port = https_port
    return origin


def admin_stats(proxy):
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/stats", timeout=10) as r:
        return json.load(r)


def start_asset_proxy(work, origin, memory_mb=256, cores=None, log_level="warn", name="ap"):
    """asset-proxy logging at `log_level`: warn (nothing per request) unless asked; other levels
    log to a file, as an operator's would."""
    port, admin_port = free_port(), free_port()
    cache_dir = work.path(f"{name}-cache")
    config = work.path(f"{name}-{memory_mb}.json")
    with open(config, "w") as f:
        json.dump({"memory": {"max_mb": memory_mb}}, f)
    argv = [PROXY_BIN, "--port", str(port), "--admin-port", str(admin_port), "--cache-dir", cache_dir,
            "--ca-dir", work.path("ap-certs"), "--upstream-ca", work.ca, "--config", config, "--log", log_level]
    log = work.path(f"{name}.log") if log_level != "warn" else None
    proxy = Process("asset-proxy", argv, port, cores=cores, log=log)
    proxy.admin_port = admin_port
    return proxy


def start_nginx_cache(work, origin, workers=1, cores=None, name="nginx-cache", access_log=False):
    port = free_port()
    cache = work.path(name)
    log = f"access_log {work.path(name)}-access.log;" if access_log else ""
    conf, prefix = nginx_conf(work, name, f"""
    proxy_cache_path {cache} levels=1:2 keys_zone=assets:32m max_size=2g inactive=1h use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        {log}
        location / {{
            proxy_pass http://127.0.0.1:{origin.port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache assets;
            proxy_cache_key $scheme$host$request_uri;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache $upstream_cache_status;
        }}
    }}""", workers=workers)
    return Process("nginx proxy_cache", ["nginx", "-p", prefix, "-c", conf], port, cores=cores)


def start_varnish(work, origin):
    port = free_port()
    workdir = work.path("varnish")
    os.makedirs(workdir, exist_ok=True)
    argv = ["varnishd", "-F", "-n", workdir, "-a", f"127.0.0.1:{port}", "-b", f"127.0.0.1:{origin.port}",
            "-s", "malloc,1g", "-T", "none", "-p", "thread_pool_min=50"]
    return Process("Varnish", argv, port)


def start_mitmproxy(work):
    port = free_port()
    argv = [MITMDUMP, "--listen-host", "127.0.0.1", "--listen-port", str(port), "-q",
            "--set", f"confdir={work.path('mitm')}", "--set", "ssl_insecure=true"]
    return Process("mitmproxy", argv, port)


WRK_SCRIPT = """
wrk.path = "{url}"
wrk.headers["Host"] = "{host}"
"""


def wrk(port, url, connections):
    """wrk sending absolute-form requests (what a client configured with a proxy sends)."""
    host = re.sub(r"^https?://([^/]+).*$", r"\1", url)
    return wrk_script(port, WRK_SCRIPT.format(url=url, host=host), connections)


def wrk_script(port, lua, connections, duration=DURATION, cores=None, threads=1):
    """wrk on the load core (or `cores`) against `port`, its requests made by the Lua script
    `lua`."""
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(lua)
    script.close()
    out = subprocess.run(["taskset", "-c", cores or LOAD_CORE, "wrk", f"-t{threads}", f"-c{connections}",
                          f"-d{duration}s",
                          "--latency", "-s", script.name, f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    os.unlink(script.name)
    return parse_wrk(out)


def to_ms(value):
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def parse_wrk(out):
    try:
        return parse_wrk_figures(out)
    except (AttributeError, KeyError, ValueError):
        sys.exit(f"bench: unexpected wrk output:\n{out}")


def parse_wrk_figures(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    mb = float(transfer.group(1)) * {"B": 1e-6, "KB": 1.024e-3, "MB": 1.048576, "GB": 1073.741824}[transfer.group(2)]
    # wrk leaves its latency lines out when every request took about the same time.
    # Anchored at the line start: "+/- Stdev" columns such as "97.99%" also end in "99%".
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    p50 = to_ms(p50.group(1)) if p50 else float("nan")
    p99 = to_ms(p99.group(1)) if p99 else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "mbps": mb, "p50": p50, "p99": p99, "errors": int(errors.group(1)) if errors else 0}


def oha(proxy_port, url, connections, ca, keepalive=True):
    """oha through a CONNECT proxy (interception), or straight to the origin when no proxy."""
    argv = ["taskset", "-c", LOAD_CORE, OHA, "--no-tui", "--output-format", "json", "-z", f"{DURATION}s",
            "-c", str(connections), "--cacert", ca]
    if proxy_port:
        argv += ["-x", f"http://127.0.0.1:{proxy_port}"]
    if not keepalive:
        argv += ["--disable-keepalive"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=DURATION + 60)
    data = json.loads(out.stdout)
    summary = data["summary"]
    pct = data.get("latencyPercentiles", {})
    codes = data.get("statusCodeDistribution", {})
    return {"rps": summary["requestsPerSec"], "mbps": summary.get("sizePerSec", 0) / 1048576,
            "p50": (pct.get("p50") or 0) * 1000, "p99": (pct.get("p99") or 0) * 1000,
            # Requests still running when the time is up are cut off, not failed.
            "errors": sum(v for k, v in codes.items() if k != "200")
            + sum(v for k, v in data.get("errorDistribution", {}).items() if k != "aborted due to deadline")}


def warm(port, url, times=2):
    proxy = urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
    opener = urllib.request.build_opener(proxy)
    for _ in range(times):
        opener.open(url, timeout=30).read()


def table(title, rows, key, unit, higher_is_better=True):
    print(f"\n### {title}\n")
    print(f"| | {unit} | p50 ms | p99 ms | asset-proxy / peer |")
    print("|---|---:|---:|---:|---:|")
    ours = rows.get("asset-proxy")
    for name, r in rows.items():
        if r is None:
            print(f"| {name} | n/a | | | |")
            continue
        ratio = (ours[key] / r[key]) if (ours and r[key]) else 0
        print(f"| {name} | {r[key]:,.1f} | {r['p50']:.2f} | {r['p99']:.2f} | {ratio:.2f}x |"
              + (f" ({r['errors']} errors)" if r["errors"] else ""))


class SlowOrigin(BaseHTTPRequestHandler):
    """Answers after 1 s and counts requests: the cold-start scenario."""
    hits = 0
    answered_at = []

    def do_GET(self):
        type(self).hits += 1
        time.sleep(1)
        body = b"x" * 65536
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=3600")
        self.end_headers()
        type(self).answered_at.append(time.time())
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_slow_origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowOrigin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def cold_start(proxy_ports, origin_url, name):
    """50 concurrent cold requests for one asset whose origin takes 1 s (the origin nginx
    passes /slow/ to SlowOrigin), spread over one proxy's port or several."""
    ports = proxy_ports if isinstance(proxy_ports, list) else [proxy_ports]
    SlowOrigin.hits, SlowOrigin.answered_at = 0, []
    url = f"{origin_url}/slow/cold.js?v={re.sub('[^a-z]', '', name)}"
    done = []
    def fetch(port):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"}))
        opener.open(url, timeout=30).read()
        done.append(time.time())
    threads = [threading.Thread(target=fetch, args=(ports[n % len(ports)],)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    first_answer = min(SlowOrigin.answered_at) if SlowOrigin.answered_at else 0
    last_ms = (max(done) - first_answer) * 1000 if done else float("nan")
    return SlowOrigin.hits, last_ms, len(done)


def main():
    for tool in ["nginx", "varnishd", "wrk", "taskset", "openssl"]:
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (scripts/bench.sh installs it)")
    work = Work()
    slow = start_slow_origin()
    origin = start_origin(work, slow.server_address[1])
    o_http = f"http://127.0.0.1:{origin.port}"
    o_https = f"https://127.0.0.1:{origin.https_port}"
    small, big = "/small.js?v=1", "/big.js?v=1"
    procs = {}
    try:
        procs["asset-proxy"] = start_asset_proxy(work, origin)
        procs["nginx proxy_cache"] = start_nginx_cache(work, origin)
        procs["Varnish"] = start_varnish(work, origin)
        for name in ["asset-proxy", "nginx proxy_cache", "Varnish"]:
            warm(procs[name].port, o_http + small)
            warm(procs[name].port, o_http + big)

        print(f"asset-proxy benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
              f"{DURATION} s per run; proxies on core {PROXY_CORE}, load on core {LOAD_CORE}")
        targets = []
        rows = {n: wrk(p.port, o_http + small, 64) for n, p in procs.items()}
        rows["origin (ceiling)"] = wrk(origin.port, o_http + small, 64)
        table("(a) 2 KiB asset, memory hits, plain HTTP, 64 connections", rows, "rps", "requests/s")
        best = max(rows["nginx proxy_cache"], rows["Varnish"], key=lambda r: r["rps"])
        ours = rows["asset-proxy"]
        targets.append(("(a) >= 1.0x the better of nginx and Varnish in requests/s, p99 no worse",
                        f"{ours['rps'] / best['rps']:.2f}x, p99 {ours['p99']:.2f} vs {best['p99']:.2f} ms",
                        ours["rps"] >= best["rps"] and ours["p99"] <= best["p99"]))
        # (a) as shipped: asset-proxy at its default log level writes a line per request, nginx
        # with an access log does too (Varnish logs to shared memory whatever it is told, so its
        # row above is as shipped already). A harness that starts each server with its defaults
        # measures these.
        logged = {"asset-proxy": start_asset_proxy(work, origin, log_level="info", name="ap-logged"),
                  "nginx proxy_cache": start_nginx_cache(work, origin, name="nginx-logged", access_log=True)}
        try:
            for p in logged.values():
                warm(p.port, o_http + small)
            rows = {n: wrk(p.port, o_http + small, 64) for n, p in logged.items()}
        finally:
            for p in logged.values():
                p.stop()
        table("(a) logged as shipped: asset-proxy at --log info (its default), nginx with an access log; "
              "a line per request to a file, 64 connections", rows, "rps", "requests/s")
        ours, peer = rows["asset-proxy"], rows["nginx proxy_cache"]
        targets.append(("(a) logged as shipped: >= 1.0x nginx with its access log, p99 no worse",
                        f"{ours['rps'] / peer['rps']:.2f}x, p99 {ours['p99']:.2f} vs {peer['p99']:.2f} ms",
                        ours["rps"] >= peer["rps"] and ours["p99"] <= peer["p99"]))
        rows = {n: wrk(p.port, o_http + big, 8) for n, p in procs.items()}
        rows["origin (ceiling)"] = wrk(origin.port, o_http + big, 8)
        table("(b) 4 MiB asset, memory hits, plain HTTP, 8 connections", rows, "mbps", "MiB/s")
        b_ours = rows["asset-proxy"]["mbps"]
        best = max(rows["nginx proxy_cache"]["mbps"], rows["Varnish"]["mbps"])
        targets.append(("(b) >= 1.0x the better of nginx and Varnish in MiB/s",
                        f"{b_ours / best:.2f}x", b_ours >= best))

        if os.path.exists(OHA) and os.path.exists(MITMDUMP):
            procs["mitmproxy"] = start_mitmproxy(work)
            ap_ca = work.path("ap-certs/ca.pem")
            mitm_ca = work.path("mitm/mitmproxy-ca-cert.pem")
            for conns, path, label, keepalive in [(64, small, "2 KiB", True), (8, big, "4 MiB", True),
                                                  (8, small, "2 KiB, new connection + TLS handshake per request", False)]:
                rows = {"asset-proxy": oha(procs["asset-proxy"].port, o_https + path, conns, ap_ca, keepalive),
                        "mitmproxy (no cache)": oha(procs["mitmproxy"].port, o_https + path, conns, mitm_ca, keepalive),
                        "origin over HTTPS (ceiling)": oha(None, o_https + path, conns, work.ca, keepalive)}
                key, unit = ("mbps", "MiB/s") if path == big else ("rps", "requests/s")
                table(f"(c) {label}, through CONNECT with interception, {conns} connections", rows, key, unit)
                if keepalive:
                    ratio = rows["asset-proxy"][key] / rows["origin over HTTPS (ceiling)"][key]
                    targets.append((f"(c) {label} keep-alive MITM hits >= 0.8x the origin over HTTPS",
                                    f"{ratio:.2f}x", ratio >= 0.8))
        else:
            print("\n(c) skipped: oha or mitmdump missing (scripts/bench.sh installs them)")

        # (d) right after a restart the memory tier is empty: the first request for the asset
        # is a disk hit, which fills memory again. Then, for comparison, a memory tier too
        # small to hold a 4 MiB body, so that every hit is read from the disk tier.
        rows = {}
        ap_peaks = [peak_rss_mib(procs["asset-proxy"].pid())]
        for memory_mb, label in [(256, "restarted (disk hit, then memory)"),
                                 (1, "every hit from disk (memory tier too small)")]:
            procs.pop("asset-proxy").stop()
            ap = start_asset_proxy(work, origin, memory_mb=memory_mb)
            procs["asset-proxy"] = ap
            rows[label] = (wrk(ap.port, o_http + big, 8), admin_stats(ap))
            ap_peaks.append(peak_rss_mib(ap.pid()))
        print("\n### (d) 4 MiB asset after a restart, 8 connections\n")
        print("| asset-proxy | MiB/s | p50 ms | p99 ms | hits memory / disk | / (b) |\n|---|---:|---:|---:|---:|---:|")
        for label, (d, stats) in rows.items():
            hits = f"{stats['hits']['memory']} / {stats['hits']['disk']}"
            print(f"| {label} | {d['mbps']:,.1f} | {d['p50']:.2f} | {d['p99']:.2f} | {hits} | {d['mbps'] / b_ours:.2f}x |")
        restarted = rows["restarted (disk hit, then memory)"][0]["mbps"] / b_ours
        targets.append(("(d) after a restart >= 0.8x of (b)", f"{restarted:.2f}x", restarted >= 0.8))

        print("\n### (e) 50 concurrent cold requests, origin takes 1 s\n")
        print("| | origin requests | last client answered after the origin's answer (ms) | answered |")
        print("|---|---:|---:|---:|")
        for name in ["asset-proxy", "nginx proxy_cache", "Varnish"]:
            hits, last_ms, answered = cold_start(procs[name].port, o_http, name)
            print(f"| {name} | {hits} | {last_ms:,.0f} | {answered}/50 |")
            if name == "asset-proxy":
                targets.append(("(e) 1 origin request, every waiter answered within 50 ms of it",
                                f"{hits} request, last after {last_ms:.0f} ms, {answered}/50",
                                hits == 1 and last_ms <= 50 and answered == 50))

        print("\n### (f) peak resident memory\n")
        print("| | MiB |\n|---|---:|")
        for name, p in procs.items():
            peak = peak_rss_mib(p.pid())
            if name == "asset-proxy":
                # The largest of its runs (it was restarted for (d)).
                peak = max(ap_peaks + [peak])
                targets.append(("(f) peak resident memory <= memory.max_mb (256) + 64 MiB",
                                f"{peak:.0f} MiB", peak <= 256 + 64))
            print(f"| {name} | {peak:,.0f} |")

        print("\n### Targets\n")
        print("| target | measured | met |\n|---|---|---|")
        for name, figure, met in targets:
            print(f"| {name} | {figure} | {'yes' if met else 'NO'} |")
    finally:
        for p in procs.values():
            p.stop()
        origin.stop()
        shutil.rmtree(work.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
