#!/usr/bin/env python3
"""Which source files one request runs through, measured on the running proxy.

Runs a debug build of the proxy under valgrind's callgrind, with a loopback origin (plain HTTP
and HTTPS with a throwaway CA). For each case it warms what the case needs, zeroes the counts,
sends the one request (and, for a miss, waits until the entry file is written), and dumps the
counts; an idle window of the same length is measured too, so that what the proxy does by
itself meanwhile (the activity sampler, the upkeep thread) is not counted. A file counts when
a function defined in it ran for the request.

Two figures per case:
  files run    every file of src/ with a function that ran for the request (data types,
               counters and pure helpers included);
  route files  the files the request passes through: those of the functions on the call stack
               (callgrind records each function with its callers) at one of the case's steps —
               for a memory hit, reading the memory tier and building the answer; for a miss,
               sending to the origin, streaming the body to the client, putting the entry in,
               and the writer thread's entry file and index journal. Helpers that are only
               consulted on the way (the key, freshness, counters) are run, not route.

  scripts/request_files.py [TREE/target/debug/proxy]   (the tree's src/ is what is counted)

Needs valgrind, curl and openssl. Slow (valgrind): about a minute.
"""

import http.server
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = str(ROOT / "src") + "/"  # of the binary measured: <tree>/target/debug/proxy
BODY = b"console.log('asset');\n" * 2000


class Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/javascript")
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Cache-Control", "max-age=3600")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_origin(context=None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    if context:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def make_origin_ca(dir):
    """A CA and a leaf for 127.0.0.1, made with openssl."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=dir, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=origin test CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1")
    Path(dir, "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "ext.cnf")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(Path(dir, "leaf.pem"), Path(dir, "leaf.key"))
    return context


def curl(proxy_port, url, cacert=None):
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %header{cache-status}",
            "--max-time", "120", "-x", f"http://127.0.0.1:{proxy_port}", url]
    if cacert:
        args += ["--cacert", cacert]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def entry_files(cache_dir):
    return {p for p in Path(cache_dir).rglob("*") if p.is_file() and "/e/" in str(p)}


def dump(pid, dir, label):
    before = set(Path(dir).glob(f"callgrind.out.{pid}*"))
    subprocess.run(["callgrind_control", "-d", label, str(pid)], check=True, capture_output=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        new = set(Path(dir).glob(f"callgrind.out.{pid}*")) - before
        if new:
            time.sleep(0.5)
            return new.pop()
        time.sleep(0.2)
    sys.exit(f"no dump for {label}")


def zero(pid):
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)


NAMED = re.compile(r"^(fl|fi|fe|fn|cfi|cfl|cfn)=\((\d+)\)(?: (.*))?$")


def read_dump(path):
    """{function: [file it is defined in, instructions it ran itself]} of a callgrind dump
    (compressed names; with --separate-callers a function is "name'caller'caller...")."""
    names, files, functions = {}, {}, {}
    fn_file = current_fn = None
    in_call = False
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = NAMED.match(line)
            if m:
                kind, id, name = m.groups()
                table = names if kind in ("fn", "cfn") else files
                if name:
                    table[id] = name
                if kind == "fl":
                    fn_file = files.get(id)
                elif kind == "fn":
                    current_fn = names.get(id)
                    functions.setdefault(current_fn, [fn_file, 0])
                elif kind == "cfn":
                    in_call = True
                continue
            # Cost lines: a position (absolute, +/- relative, or * for the same) and the cost;
            # the one after `calls=` is the call's inclusive cost, not the caller's own.
            if line and line[0] in "0123456789+-*":
                parts = line.split()
                if not in_call and current_fn is not None and len(parts) >= 2:
                    functions[current_fn][1] += int(parts[1])
                in_call = False
    return functions


def ours(file):
    return file is not None and file.startswith(SRC)


# Callers recorded with each function: deeper than any stack of the proxy.
STACK = 150

# The steps of each case, as function-name patterns.
STEPS = {
    "memory-hit": [r"MemoryTier::get$", r"respond::respond$"],
    "mitm-miss": [
        r"Target::intercept::\{\{closure\}\}$",
        r"Upstream::send::\{\{closure\}\}$",
        r"TeeBody<B> as http_body::Body>::poll_frame$",
        r"MemoryTier::insert$",
        r"VersionIndex::admit$",
        r"DiskTier::write$",
        r"LockedJournal::append$",
    ],
}


def measure(pid, dir, label, action):
    zero(pid)
    started = time.time()
    action()
    busy = dump(pid, dir, label)
    elapsed = time.time() - started
    zero(pid)
    time.sleep(elapsed)
    idle = dump(pid, dir, label + "-idle")
    run = read_dump(busy)
    idle_run = read_dump(idle)
    # Each function is recorded once per stack it ran on: "name'caller'caller's caller...".
    file_of = {}
    for fn, (file, _) in list(run.items()) + list(idle_run.items()):
        file_of.setdefault(fn.split("'")[0], file)
    background = {fn.split("'")[0] for fn, (_, cost) in idle_run.items() if cost > 0}
    cost = {}
    for fn, (_, spent) in run.items():
        cost[fn.split("'")[0]] = cost.get(fn.split("'")[0], 0) + spent
    idle_cost = {}
    for fn, (_, spent) in idle_run.items():
        idle_cost[fn.split("'")[0]] = idle_cost.get(fn.split("'")[0], 0) + spent
    ran = {fn for fn, spent in cost.items() if spent > 0 and ours(file_of.get(fn))}
    # A function the proxy also ran while idle counts only when the request made it run more.
    ran = {fn for fn in ran if fn not in background or cost[fn] > 3 * idle_cost[fn]}
    files = {file_of[fn] for fn in ran}
    route, seen = set(), set()
    for fn in run:
        base, *callers = fn.split("'")
        matched = [p for p in STEPS[label] if re.search(p, base)]
        if not matched or base not in ran:
            continue
        seen.update(matched)
        route.update(file_of[f] for f in [base, *callers] if ours(file_of.get(f)))
    missing = [p for p in STEPS[label] if p not in seen]
    if missing:
        print(f"  (steps not seen, check the names: {missing})")
    return sorted(files), sorted(route)


def main():
    global SRC
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target/debug/proxy").resolve()
    SRC = str(binary.parents[2] / "src") + "/"
    for tool in ("valgrind", "callgrind_control", "curl", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"needs {tool}")
    dir = tempfile.mkdtemp(prefix="request-files-")
    context = make_origin_ca(dir)
    plain = start_origin()
    tls = start_origin(context)
    port = free_port()
    admin = free_port()
    proxy = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--collect-atstart=yes", f"--separate-callers={STACK}", "--trace-children=no",
         f"--callgrind-out-file={dir}/callgrind.out.%p", str(binary),
         "--port", str(port), "--admin-port", str(admin), "--cache-dir", f"{dir}/cache",
         "--ca-dir", f"{dir}/certs", "--upstream-ca", f"{dir}/ca.pem", "--log", "warn"],
        cwd=dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        cacert = f"{dir}/certs/ca.pem"
        hit_url = f"http://127.0.0.1:{plain}/main.3f2a9c1b.js"
        print("warm:", curl(port, hit_url))
        # A first intercepted request, so that the one measured is an ordinary miss, not the
        # first use of the TLS machinery.
        print("warm:", curl(port, f"https://127.0.0.1:{tls}/warm.11111111.js", cacert))
        time.sleep(2)

        def memory_hit():
            print("memory hit:", curl(port, hit_url))

        def mitm_miss():
            before = entry_files(f"{dir}/cache")
            print("MITM miss:", curl(port, f"https://127.0.0.1:{tls}/app.22222222.js", cacert))
            deadline = time.time() + 60
            while time.time() < deadline and not entry_files(f"{dir}/cache") - before:
                time.sleep(0.2)
            time.sleep(1)  # the index journal is appended to after the file is renamed

        for label, action in (("memory-hit", memory_hit), ("mitm-miss", mitm_miss)):
            files, route = measure(proxy.pid, dir, label, action)
            print(f"\n{label}: {len(files)} files run, {len(route)} route files")
            for file in files:
                mark = "route" if file in route else "     "
                print(f"  {mark}  {file[len(SRC):]}")
    finally:
        proxy.terminate()
        proxy.wait(timeout=120)
        if not os.environ.get("KEEP"):
            shutil.rmtree(dir, ignore_errors=True)
        else:
            print("kept", dir)


if __name__ == "__main__":
    main()
