//! Counters of what the proxy does, shared by every component: lock-free counters, latency
//! histograms, every figure's names declared once (`figures!`), and the recent activity the
//! status page shows (`activity`), requests per namespace (`namespaces`) and the connections
//! each serving thread holds (`ThreadLoads`).

mod activity;
mod namespaces;

pub use activity::{Activity, VersionChange};
pub use namespaces::{NamespaceFigures, Namespaces};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Client connections each serving thread serves now: what the threads place connections by,
/// and how evenly they share the clients.
#[derive(Debug, Default)]
pub struct ThreadLoads(OnceLock<Arc<[AtomicUsize]>>);

impl ThreadLoads {
    /// One count per serving thread, all zero at first; the counts made by the first call
    /// when called again (a proxy starts its threads once).
    pub fn start(&self, threads: usize) -> Arc<[AtomicUsize]> {
        self.0
            .get_or_init(|| (0..threads).map(|_| AtomicUsize::new(0)).collect())
            .clone()
    }

    /// Connections per serving thread now; empty before the threads started.
    pub fn now(&self) -> Vec<usize> {
        self.0.get().map_or_else(Vec::new, |loads| {
            loads.iter().map(|l| l.load(Ordering::Relaxed)).collect()
        })
    }
}

/// A figure that goes up and down (connections open now).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away (never below zero).
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: [u64; 14] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound; the last slot counts those above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let ms = duration.as_secs_f64() * 1000.0;
        let slot = LATENCY_BUCKETS_MS
            .iter()
            .position(|bound| ms <= *bound as f64)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound (the Prometheus shape), then the total.
    pub fn cumulative(&self) -> (Vec<(u64, u64)>, u64) {
        let mut running = 0;
        let mut out = Vec::with_capacity(LATENCY_BUCKETS_MS.len());
        for (bound, bucket) in LATENCY_BUCKETS_MS.iter().zip(&self.buckets) {
            running += bucket.load(Ordering::Relaxed);
            out.push((*bound, running));
        }
        (out, self.count.load(Ordering::Relaxed))
    }

    /// Sum of all observations, in seconds.
    pub fn sum_secs(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// The bucket bound (ms) below which a fraction `q` of observations fall; `None` when
    /// nothing was observed, `u64::MAX` when above the last bound.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let (buckets, count) = self.cumulative();
        if count == 0 {
            return None;
        }
        let wanted = (q * count as f64).ceil() as u64;
        Some(
            buckets
                .iter()
                .find(|(_, n)| *n >= wanted)
                .map_or(u64::MAX, |(bound, _)| *bound),
        )
    }
}

impl Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3))?;
        for (name, q) in [("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)] {
            map.serialize_entry(name, &self.quantile_ms(q))?;
        }
        map.end()
    }
}

/// Declares every figure once: its field, its place in `/stats` (a dotted path), its
/// Prometheus name (`asset_proxy_<name>_total` for counters, `asset_proxy_<name>` for gauges)
/// and its help text. Adding a figure is one line here.
macro_rules! figures {
    ($($kind:ident $field:ident, $json:literal, $prom:literal, $help:literal;)*) => {
        /// Every counter and gauge of the proxy.
        #[derive(Debug)]
        pub struct Stats {
            /// When the proxy started.
            pub started: Instant,
            /// Recent activity.
            pub activity: Activity,
            /// Latency of requests answered from the cache.
            pub latency_hits: Histogram,
            /// Latency of requests that went to the origin.
            pub latency_misses: Histogram,
            /// Requests per namespace.
            pub namespaces: Namespaces,
            /// Connections per serving thread.
            pub thread_loads: ThreadLoads,
            $(#[doc = $help] pub $field: figures!(@type $kind),)*
        }

        impl Default for Stats {
            fn default() -> Self {
                Stats {
                    started: Instant::now(),
                    activity: Activity::default(),
                    latency_hits: Histogram::default(),
                    latency_misses: Histogram::default(),
                    namespaces: Namespaces::default(),
                    thread_loads: ThreadLoads::default(),
                    $($field: Default::default(),)*
                }
            }
        }

        impl Stats {
            /// Every figure with its names and help, in declaration order.
            pub fn figures(&self) -> Vec<Figure> {
                vec![$(Figure {
                    json_path: $json,
                    prometheus: $prom,
                    help: $help,
                    kind: FigureKind::$kind,
                    value: self.$field.get(),
                },)*]
            }
        }
    };
    (@type Counter) => { Counter };
    (@type Gauge) => { Gauge };
}

/// Whether a figure only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FigureKind {
    /// Only grows (Prometheus `counter`, named `..._total`).
    Counter,
    /// Goes up and down (Prometheus `gauge`).
    Gauge,
}

/// One figure as `/stats` and `/metrics` show it.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// Where it sits in `/stats`: dot-separated object keys.
    pub json_path: &'static str,
    /// Its Prometheus name without the `asset_proxy_` prefix (and `_total` suffix).
    pub prometheus: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: FigureKind,
    /// The value now.
    pub value: u64,
}

figures! {
    Counter requests, "requests", "requests", "Requests answered (CONNECTs excluded).";
    Counter hits_memory, "hits.memory", "hits_memory", "Requests answered from the memory tier.";
    Counter hits_disk, "hits.disk", "hits_disk", "Requests answered from the disk tier.";
    Counter hits_shared, "hits.shared", "hits_shared", "Requests answered from the shared tier (Redis).";
    Counter misses, "misses", "misses", "Cacheable requests fetched from the origin.";
    Counter bypasses, "bypasses", "bypasses", "Requests forwarded without the cache.";
    Counter coalesced_waits, "coalesced_waits", "coalesced_waits", "Requests that waited for another's fetch of the same key.";
    Counter stored, "stored", "stored", "Entries stored.";
    Counter revalidations, "revalidations", "revalidations", "Stale entries checked with the origin.";
    Counter not_modified, "not_modified", "not_modified", "Revalidations answered 304: the stored body was still current.";
    Counter bytes_saved_by_revalidation, "bytes_saved_by_revalidation", "revalidation_saved_bytes", "Body bytes origins did not send thanks to a 304.";
    Counter stale_served, "stale_served", "stale_served", "Stale entries served (stale-while-revalidate, stale-if-error, offline).";
    Counter version_changes, "version_changes", "version_changes", "Asset version changes seen.";
    Counter version_evictions, "version_evictions", "version_evictions", "Entries evicted because their version retired.";
    Counter one_off_versions, "one_off_versions", "one_off_versions", "Versions retired without ever taking over: one-off requests, canaries that were dropped.";
    Counter corrupt_entries, "corrupt_entries", "corrupt_entries", "Disk entries that failed verification.";
    Counter disk_errors, "disk_errors", "disk_errors", "Disk tier reads or writes that failed.";
    Counter disk_writes, "disk_writes", "disk_writes", "Entries written to disk.";
    Counter disk_writes_skipped, "disk_writes_skipped", "disk_writes_skipped", "Entries not written to disk because the write queue was full (kept in memory).";
    Counter disk_compressed_writes, "disk_compressed_writes", "disk_compressed_writes", "Entries written to disk zstd-compressed.";
    Counter disk_bytes_saved_by_compression, "disk_bytes_saved_by_compression", "disk_compression_saved_bytes", "Bytes compressed entry files are smaller than their bodies.";
    Counter encoded_responses, "encoded_responses", "encoded_responses", "Responses sent from the cache in a coding the proxy made (zstd, br, gzip).";
    Counter disk_evictions, "disk_evictions", "disk_evictions", "Entries removed from disk to keep it under disk.max_mb.";
    Counter disk_evicted_bytes, "disk_evicted_bytes", "disk_evicted_bytes", "Bytes of entries removed from disk to keep it under disk.max_mb.";
    Counter socks_tunnels, "socks.tunnels", "socks_tunnels", "SOCKS5 clients whose CONNECT was accepted.";
    Counter socks_refused, "socks.refused", "socks_refused", "SOCKS5 clients refused: malformed or slow handshakes, wrong credentials, other commands, refused targets.";
    Counter blocked, "blocked", "blocked", "Requests and tunnels a block rule or the blocklist answered without contacting anything.";
    Counter upstream_errors, "upstream_errors", "upstream_errors", "Origin requests that failed (connect, TLS, timeout, broken body).";
    Counter bytes_from_cache, "bytes_from_cache", "cache_bytes", "Body bytes sent to clients from the cache.";
    Counter bytes_from_upstream, "bytes_from_upstream", "upstream_bytes", "Body bytes received from origins.";
    Counter bytes_via_upstream_proxy, "upstream_proxy.bytes_through", "upstream_proxy_bytes", "Body bytes received from origins through the upstream proxy.";
    Counter prewarmed_entries, "prewarmed.entries", "prewarmed_entries", "Entries the memory tier was filled with from disk at start.";
    Counter prewarmed_bytes, "prewarmed.bytes", "prewarmed_bytes", "Body bytes of the entries the memory tier was filled with at start.";
    Counter shared_misses, "shared.misses", "shared_misses", "Cold keys the shared tier did not hold.";
    Counter shared_writes, "shared.writes", "shared_writes", "Entries written to the shared tier.";
    Counter shared_writes_skipped, "shared.writes_skipped", "shared_writes_skipped", "Entries not written to the shared tier (down, or too many bytes being written).";
    Counter shared_errors, "shared.errors", "shared_errors", "Shared-tier commands that failed or timed out, and lost connections.";
    Counter shared_corrupt, "shared.corrupt", "shared_corrupt", "Shared-tier entries that failed verification.";
    Counter shared_lock_waits, "shared.fleet_waits", "shared_fleet_waits", "Cold requests that waited for another proxy of the fleet to fetch.";
    Counter shared_versions_received, "shared.versions_received", "shared_versions_received", "Version announcements received from other proxies of the fleet.";
    Counter prefetch_scans, "prefetch.scans", "prefetch_scans", "Documents and bootstrap scripts scanned for references.";
    Counter prefetch_fetches, "prefetch.fetches", "prefetch_fetches", "Prefetches sent to origins.";
    Counter prefetched, "prefetch.prefetched", "prefetched", "Entries fetched ahead of any client's request and stored.";
    Counter prefetched_bytes, "prefetch.prefetched_bytes", "prefetched_bytes", "Body bytes of the entries fetched ahead of any client's request.";
    Counter prefetch_used, "prefetch.used", "prefetch_used", "Prefetched entries a client then used.";
    Counter prefetch_used_bytes, "prefetch.used_bytes", "prefetch_used_bytes", "Body bytes of the prefetched entries a client then used.";
    Counter prefetch_wasted_bytes, "prefetch.wasted_bytes", "prefetch_wasted_bytes", "Bytes of prefetched entries no client used within five minutes.";
    Gauge clients_open, "clients.open", "clients_open", "Client connections open now: each intercepted tunnel counts once, as does each relayed tunnel and WebSocket.";
    Counter clients_closed_idle, "clients.closed_idle", "clients_closed_idle", "Client connections closed after clients.idle_timeout_secs with nothing in flight.";
    Counter clients_closed_for_descriptors, "clients.closed_for_descriptors", "clients_closed_for_descriptors", "Idle client connections and relays closed to keep file descriptors in reserve.";
    Counter tunnels_intercepted, "tunnels.intercepted", "tunnels_intercepted", "CONNECT tunnels whose requests the proxy served (TLS terminated, or plain HTTP inside).";
    Counter tunnels_opaque, "tunnels.opaque", "tunnels_opaque", "CONNECT tunnels relayed as they are (passthrough, server speaks first, not HTTP).";
    Counter tunnels_silent, "tunnels.silent", "tunnels_silent", "CONNECT tunnels closed because the client sent nothing within the TLS handshake timeout.";
    Counter websockets_opened, "websockets.opened", "websockets_opened", "WebSockets (and other upgraded connections) opened through the proxy.";
    Gauge websockets_open, "websockets.open", "websockets_open", "WebSockets open now.";
    Counter websocket_bytes_up, "websockets.bytes_up", "websocket_bytes_up", "Bytes WebSocket clients sent to origins.";
    Counter websocket_bytes_down, "websockets.bytes_down", "websocket_bytes_down", "Bytes origins sent to WebSocket clients.";
    Counter prefetch_dropped, "prefetch.dropped", "prefetch_dropped", "References not prefetched because too many prefetches were waiting.";
}

impl Stats {
    /// Every figure as nested JSON objects, by their dotted paths.
    pub fn figures_json(&self) -> serde_json::Value {
        let mut root = serde_json::Value::Object(serde_json::Map::new());
        for figure in self.figures() {
            insert_at(&mut root, figure.json_path, figure.value.into());
        }
        root
    }

    /// Hits over requests that could use the cache (hits, misses, stale serves).
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.hits_memory.get()
            + self.hits_disk.get()
            + self.hits_shared.get()
            + self.stale_served.get()
            + self.not_modified.get();
        let total = hits + self.misses.get();
        if total == 0 {
            0.0
        } else {
            hits as f64 / total as f64
        }
    }

    /// Bytes clients got without the origin sending them, over all bytes clients got.
    pub fn bandwidth_saved(&self) -> f64 {
        let saved = self.bytes_from_cache.get() + self.bytes_saved_by_revalidation.get();
        let total = saved + self.bytes_from_upstream.get();
        if total == 0 {
            0.0
        } else {
            saved as f64 / total as f64
        }
    }
}

/// Sets `value` at a dotted `path` of nested JSON objects, making the objects on the way.
pub fn insert_at(root: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut node = root;
    for part in path.split('.') {
        if !node.is_object() {
            *node = serde_json::Value::Object(serde_json::Map::new());
        }
        let serde_json::Value::Object(object) = node else {
            return;
        };
        node = object
            .entry(part.to_owned())
            .or_insert(serde_json::Value::Null);
    }
    *node = value;
}

#[cfg(test)]
mod tests;
