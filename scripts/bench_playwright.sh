#!/usr/bin/env bash
# A Playwright Test suite with no proxy and through asset-proxy, cold and warm
# (scripts/bench_playwright.mjs). Installs Chromium and the e2e npm packages when missing. Not
# part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/bin/chromium ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
[ -d tests/e2e/node_modules ] || (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --bin proxy
ASSET_PROXY_BIN="$PWD/target/release/proxy" exec node scripts/bench_playwright.mjs
