//! The admin API's data: `/stats` (JSON), `/metrics` (Prometheus text), `/activity` (what the
//! status page draws), `/entries`.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::proxy::Context;
use crate::stats::Histogram;

/// Entries listed when the query names no limit.
const DEFAULT_ENTRY_LIMIT: usize = 1000;

/// Every figure of `/stats`.
pub async fn stats(ctx: &Context) -> Value {
    let s = &ctx.stats;
    let usage = ctx.cache.usage().await;
    json!({
        "uptime_secs": s.started.elapsed().as_secs(),
        "requests": s.requests.get(),
        "hits": {
            "memory": s.hits_memory.get(),
            "disk": s.hits_disk.get(),
            "shared": s.hits_shared.get(),
        },
        "misses": s.misses.get(),
        "bypasses": s.bypasses.get(),
        "coalesced_waits": s.coalesced_waits.get(),
        "revalidations": s.revalidations.get(),
        "not_modified": s.not_modified.get(),
        "stale_served": s.stale_served.get(),
        "hit_ratio": round(s.hit_ratio()),
        "bytes_from_cache": s.bytes_from_cache.get(),
        "bytes_from_upstream": s.bytes_from_upstream.get(),
        "upstream_proxy": {
            "url": ctx.upstream.chain().map(|p| p.display().to_owned()),
            "bytes_through": s.bytes_via_upstream_proxy.get(),
            "bytes_not_through": s.bytes_from_cache.get(),
        },
        "shared": shared(ctx),
        "prefetch": prefetch(ctx),
        "bytes_saved_by_revalidation": s.bytes_saved_by_revalidation.get(),
        "bandwidth_saved_percent": round(s.bandwidth_saved() * 100.0),
        "stored": s.stored.get(),
        "prewarmed": { "entries": s.prewarmed_entries.get(), "bytes": s.prewarmed_bytes.get() },
        "tiers": usage,
        "version_changes": s.version_changes.get(),
        "version_evictions": s.version_evictions.get(),
        "disk_errors": s.disk_errors.get(),
        "disk_writes": s.disk_writes.get(),
        "disk_writes_skipped": s.disk_writes_skipped.get(),
        "disk_compressed_writes": s.disk_compressed_writes.get(),
        "disk_bytes_saved_by_compression": s.disk_bytes_saved_by_compression.get(),
        "encoded_responses": s.encoded_responses.get(),
        "disk_evictions": s.disk_evictions.get(),
        "disk_evicted_bytes": s.disk_evicted_bytes.get(),
        "corrupt_entries": s.corrupt_entries.get(),
        "upstream_errors": s.upstream_errors.get(),
        "latency": { "hits": s.latency_hits, "misses": s.latency_misses },
    })
}

/// The shared tier's figures (`redis` is null when none is configured).
fn shared(ctx: &Context) -> Value {
    let s = &ctx.stats;
    let tier = ctx.cache.shared();
    json!({
        "redis": tier.map(|t| t.display()),
        "up": tier.is_some_and(|t| t.is_up()),
        "hits": s.hits_shared.get(),
        "misses": s.shared_misses.get(),
        "writes": s.shared_writes.get(),
        "writes_skipped": s.shared_writes_skipped.get(),
        "errors": s.shared_errors.get(),
        "corrupt": s.shared_corrupt.get(),
        "fleet_waits": s.shared_lock_waits.get(),
        "versions_received": s.shared_versions_received.get(),
    })
}

/// Predictive prefetch's figures.
fn prefetch(ctx: &Context) -> Value {
    ctx.prefetcher.sweep(std::time::Instant::now());
    let s = &ctx.stats;
    json!({
        "enabled": ctx.prefetcher.config().enabled,
        "scans": s.prefetch_scans.get(),
        "fetches": s.prefetch_fetches.get(),
        "prefetched": s.prefetched.get(),
        "prefetched_bytes": s.prefetched_bytes.get(),
        "used": s.prefetch_used.get(),
        "used_bytes": s.prefetch_used_bytes.get(),
        "wasted_bytes": s.prefetch_wasted_bytes.get(),
        "dropped": s.prefetch_dropped.get(),
    })
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

/// What the status page draws besides `/stats`.
pub fn activity(ctx: &Context) -> Value {
    let activity = &ctx.stats.activity;
    let top: Vec<Value> = activity
        .top_assets(10)
        .into_iter()
        .map(|(asset, bytes)| json!({ "asset": asset, "bytes": bytes }))
        .collect();
    json!({
        "requests_per_second": activity.per_second(),
        "top_assets": top,
        "version_changes": activity.changes(),
    })
}

/// `/entries?prefix=P&limit=N`.
pub async fn entries(ctx: &Context, query: &str) -> Value {
    let mut prefix = String::new();
    let mut limit = DEFAULT_ENTRY_LIMIT;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "prefix" => prefix = value.into_owned(),
            "limit" => limit = value.parse().unwrap_or(DEFAULT_ENTRY_LIMIT),
            _ => {}
        }
    }
    json!({ "entries": ctx.cache.entries(&prefix, limit).await })
}

/// The Prometheus text exposition of every figure.
pub async fn metrics(ctx: &Context) -> String {
    let s = &ctx.stats;
    let usage = ctx.cache.usage().await;
    let mut out = String::new();
    ctx.prefetcher.sweep(std::time::Instant::now());
    let counters: [(&str, &str, u64); 37] = [
        (
            "requests",
            "Requests answered (CONNECTs excluded).",
            s.requests.get(),
        ),
        (
            "hits_memory",
            "Requests answered from the memory tier.",
            s.hits_memory.get(),
        ),
        (
            "hits_disk",
            "Requests answered from the disk tier.",
            s.hits_disk.get(),
        ),
        (
            "hits_shared",
            "Requests answered from the shared tier (Redis).",
            s.hits_shared.get(),
        ),
        (
            "shared_misses",
            "Cold keys the shared tier did not hold.",
            s.shared_misses.get(),
        ),
        (
            "shared_writes",
            "Entries written to the shared tier.",
            s.shared_writes.get(),
        ),
        (
            "shared_writes_skipped",
            "Entries not written to the shared tier (down or busy).",
            s.shared_writes_skipped.get(),
        ),
        (
            "shared_errors",
            "Shared-tier commands that failed or timed out, and lost connections.",
            s.shared_errors.get(),
        ),
        (
            "shared_fleet_waits",
            "Cold requests that waited for another proxy of the fleet to fetch.",
            s.shared_lock_waits.get(),
        ),
        (
            "shared_versions_received",
            "Version announcements received from other proxies of the fleet.",
            s.shared_versions_received.get(),
        ),
        (
            "prefetch_scans",
            "Documents and bootstrap scripts scanned for references.",
            s.prefetch_scans.get(),
        ),
        (
            "prefetched",
            "Entries fetched ahead of any client's request and stored.",
            s.prefetched.get(),
        ),
        (
            "prefetch_used",
            "Prefetched entries a client then used.",
            s.prefetch_used.get(),
        ),
        (
            "prefetch_wasted_bytes",
            "Bytes of prefetched entries no client used within five minutes.",
            s.prefetch_wasted_bytes.get(),
        ),
        (
            "prefetch_dropped",
            "References not prefetched because too many prefetches were waiting.",
            s.prefetch_dropped.get(),
        ),
        (
            "misses",
            "Cacheable requests fetched from the origin.",
            s.misses.get(),
        ),
        (
            "bypasses",
            "Requests forwarded without the cache.",
            s.bypasses.get(),
        ),
        (
            "coalesced_waits",
            "Requests that waited for another's fetch.",
            s.coalesced_waits.get(),
        ),
        (
            "revalidations",
            "Stale entries checked with the origin.",
            s.revalidations.get(),
        ),
        (
            "not_modified",
            "Revalidations answered 304.",
            s.not_modified.get(),
        ),
        (
            "stale_served",
            "Stale entries served.",
            s.stale_served.get(),
        ),
        ("stored", "Entries stored.", s.stored.get()),
        (
            "version_changes",
            "Asset version changes seen.",
            s.version_changes.get(),
        ),
        (
            "disk_errors",
            "Disk tier reads or writes that failed.",
            s.disk_errors.get(),
        ),
        (
            "corrupt_entries",
            "Disk entries that failed verification.",
            s.corrupt_entries.get(),
        ),
        (
            "disk_writes",
            "Entries written to disk.",
            s.disk_writes.get(),
        ),
        (
            "disk_writes_skipped",
            "Entries not written to disk because the write queue was full.",
            s.disk_writes_skipped.get(),
        ),
        (
            "disk_compressed_writes",
            "Entries written to disk zstd-compressed.",
            s.disk_compressed_writes.get(),
        ),
        (
            "disk_compression_saved_bytes",
            "Bytes compressed entry files are smaller than their bodies.",
            s.disk_bytes_saved_by_compression.get(),
        ),
        (
            "encoded_responses",
            "Responses sent from the cache in a coding the proxy made (zstd, br, gzip).",
            s.encoded_responses.get(),
        ),
        (
            "disk_evictions",
            "Entries removed from disk to keep it under disk.max_mb.",
            s.disk_evictions.get(),
        ),
        (
            "disk_evicted_bytes",
            "Bytes of entries removed from disk to keep it under disk.max_mb.",
            s.disk_evicted_bytes.get(),
        ),
        (
            "upstream_errors",
            "Origin requests that failed.",
            s.upstream_errors.get(),
        ),
        (
            "cache_bytes",
            "Body bytes sent to clients from the cache.",
            s.bytes_from_cache.get(),
        ),
        (
            "upstream_bytes",
            "Body bytes received from origins.",
            s.bytes_from_upstream.get(),
        ),
        (
            "upstream_proxy_bytes",
            "Body bytes received from origins through the upstream proxy.",
            s.bytes_via_upstream_proxy.get(),
        ),
        (
            "revalidation_saved_bytes",
            "Body bytes origins did not send thanks to a 304.",
            s.bytes_saved_by_revalidation.get(),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP asset_proxy_{name}_total {help}\n# TYPE asset_proxy_{name}_total counter\nasset_proxy_{name}_total {value}");
    }
    let shared_up = ctx.cache.shared().is_some_and(|t| t.is_up());
    let gauges: [(&str, &str, f64); 9] = [
        (
            "memory_entries",
            "Entries in the memory tier.",
            usage.memory_entries as f64,
        ),
        (
            "memory_bytes",
            "Bytes in the memory tier.",
            usage.memory_bytes as f64,
        ),
        (
            "disk_entries",
            "Entries in the disk tier.",
            usage.disk_entries as f64,
        ),
        (
            "disk_bytes",
            "Bytes in the disk tier.",
            usage.disk_bytes as f64,
        ),
        (
            "disk_max_bytes",
            "Capacity of the disk tier (disk.max_mb).",
            usage.disk_max_bytes as f64,
        ),
        (
            "disk_write_queue_entries",
            "Entries waiting for the disk writer.",
            usage.write_queue_entries as f64,
        ),
        (
            "shared_up",
            "1 when the shared tier (Redis) is connected.",
            f64::from(u8::from(shared_up)),
        ),
        ("hit_ratio", "Hits over cacheable requests.", s.hit_ratio()),
        (
            "uptime_seconds",
            "Seconds since start.",
            s.started.elapsed().as_secs_f64(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP asset_proxy_{name} {help}\n# TYPE asset_proxy_{name} gauge\nasset_proxy_{name} {value}");
    }
    let name = "asset_proxy_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from request to the end of the response body.\n# TYPE {name} histogram"
    );
    for (outcome, histogram) in [("hit", &s.latency_hits), ("miss", &s.latency_misses)] {
        histogram_lines(&mut out, name, outcome, histogram);
    }
    out
}

fn histogram_lines(out: &mut String, name: &str, outcome: &str, histogram: &Histogram) {
    let (buckets, count) = histogram.cumulative();
    for (bound_ms, n) in buckets {
        let le = bound_ms as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{name}_bucket{{outcome=\"{outcome}\",le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{outcome=\"{outcome}\",le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "{name}_sum{{outcome=\"{outcome}\"}} {}",
        histogram.sum_secs()
    );
    let _ = writeln!(out, "{name}_count{{outcome=\"{outcome}\"}} {count}");
}
