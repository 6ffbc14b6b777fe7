#!/usr/bin/env bash
# Side-by-side benchmark: asset-proxy against nginx proxy_cache, Varnish and mitmproxy, with the
# origin as the ceiling (scripts/bench.py). Installs what it needs: Debian nginx-light, varnish,
# wrk; oha with cargo install; mitmproxy from PyPI into its own virtualenv. Loopback only; each
# run lasts BENCH_SECS (10) seconds. Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in nginx:nginx-light varnishd:varnish wrk:wrk taskset:util-linux openssl:openssl; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
command -v oha >/dev/null || [ -x "$HOME/.cargo/bin/oha" ] || cargo install oha --locked
venv=/opt/asset-proxy-bench/venv
if ! command -v mitmdump >/dev/null && [ ! -x "$venv/bin/mitmdump" ]; then
    python3 -m venv "$venv" && "$venv/bin/pip" install -q mitmproxy
fi
cargo build --release --bin proxy
python3 scripts/bench.py
exec python3 scripts/bench_scale.py
