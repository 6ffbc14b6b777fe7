#!/usr/bin/env bash
# Server-sent events and WebSocket round trips through the proxy beside the origin directly
# (scripts/bench_realweb.mjs). Installs the e2e npm packages when missing. Not part of the
# test command.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d tests/e2e/node_modules ] || (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --bin proxy
ASSET_PROXY_BIN="$PWD/target/release/proxy" exec node scripts/bench_realweb.mjs
