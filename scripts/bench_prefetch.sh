#!/usr/bin/env bash
# Cold page loads in headless Chromium with and without predictive prefetch
# (scripts/bench_prefetch.mjs). Installs Chromium, certutil and the e2e npm packages when
# missing. Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v certutil >/dev/null || need+=(libnss3-tools)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
[ -d tests/e2e/node_modules ] || (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --bin proxy
ASSET_PROXY_BIN="$PWD/target/release/proxy" exec node scripts/bench_prefetch.mjs
