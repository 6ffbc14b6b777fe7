#!/usr/bin/env bash
# Load and soak of a release build on loopback: 2,000 connections held open, then a steady
# mixed load with WebSockets, cookie sessions and a flood of silent connections (default 10
# minutes) sampling resident memory and open descriptors. Prints a
# Markdown report (recorded in BENCHMARKS.md); the exit code says whether both stayed flat.
#   scripts/soak.sh                      # 2000 connections, 600 s soak
#   scripts/soak.sh --soak-seconds 60    # a shorter soak
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import websockets' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check websockets
cargo build --release --quiet --bin proxy
exec python3 scripts/soak.py target/release/proxy "$@"
