#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
# Installs what the tests use when it is missing (Debian packages via apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v curl >/dev/null || need_packages+=(curl)
command -v python3 >/dev/null || need_packages+=(python3)
if ((${#need_packages[@]})); then
    echo "installing: ${need_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast
else
    cargo test --no-fail-fast
fi
