#!/usr/bin/env bash
# The disk-tier benchmark: start time over 100,000 entries (with and without the index, against
# a one-entry cache) and peak resident memory under sustained load against memory.max_mb + 64 MiB.
# Loopback only; bounded in time. Sizes: DISK_BENCH_ENTRIES, DISK_BENCH_LOAD_SECS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench disk_tier
