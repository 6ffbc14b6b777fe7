#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after another, on the corpus in
# fuzz/corpus/ (new interesting inputs are added to it) and the inputs of past crashes in
# fuzz/regressions/. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). A crash stops the run and leaves its input in
# fuzz/artifacts/<target>/.
#   scripts/fuzz.sh            # 10 minutes per target
#   scripts/fuzz.sh 10         # the short run of the test command
#   scripts/fuzz.sh 600 config # one target
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(version_and_url config entry_decode proxy_connection admin_request socks_handshake)
log="$(mktemp)"
scratch="$(mktemp -d)"
trap 'rm -rf "$log" "$scratch"' EXIT
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "corpus/$target" "regressions/$target"
    # New inputs go to the kept corpus on real runs; a short run (the test command's) leaves
    # the work tree as it was.
    output="corpus/$target"
    if [ "$seconds" -lt 60 ]; then
        output="$scratch/$target"
        mkdir -p "$output"
    fi
    extra=()
    # Connection tasks may outlive one input by design; see the target's doc.
    case "$target" in proxy_connection | admin_request | socks_handshake) extra+=(-detect_leaks=0) ;; esac
    if ! cargo +nightly fuzz run --release "$target" "$output" "corpus/$target" "regressions/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target failed"
        exit 1
    fi
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)' "$log" || true
done
