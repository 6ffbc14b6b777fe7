#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and integration tests, then the
# end-to-end suite in headless Chromium. Installs what the tests use when it is missing:
# Debian packages via apt-get, npm packages via npm ci, Python packages via pip.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v curl >/dev/null || need_packages+=(curl)
command -v openssl >/dev/null || need_packages+=(openssl)
command -v python3 >/dev/null || need_packages+=(python3 python3-pip)
command -v node >/dev/null || need_packages+=(nodejs npm)
command -v certutil >/dev/null || need_packages+=(libnss3-tools)
[ -x /usr/bin/chromium ] || need_packages+=(chromium)
command -v redis-server >/dev/null || need_packages+=(redis-server)
command -v microsocks >/dev/null || need_packages+=(microsocks)
if ((${#need_packages[@]})); then
    echo "== installing ${need_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi
if ! python3 -c 'import playwright, requests, httpx, pytest_playwright, socks, socksio' 2>/dev/null; then
    echo "== installing Python packages"
    python3 -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
fi
if [ ! -d tests/e2e/node_modules ]; then
    echo "== installing npm packages"
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "== Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast
else
    cargo test --no-fail-fast
fi

echo "== fuzzing, a short run per target"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
    scripts/fuzz.sh 10
else
    echo "skipped: no nightly toolchain (cargo fuzz needs it)"
fi

echo "== end-to-end tests (headless Chromium)"
cargo build --quiet --bin proxy
(cd tests/e2e && ASSET_PROXY_BIN="$PWD/../../target/debug/proxy" npm test --silent)
