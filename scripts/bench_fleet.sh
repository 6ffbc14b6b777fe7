#!/usr/bin/env bash
# The fleet row of the benchmark (scripts/bench_fleet.py): N proxies with and without the
# shared tier on Redis. Installs redis-server (Debian) when missing. Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
fi
cargo build --release --bin proxy
exec python3 scripts/bench_fleet.py
