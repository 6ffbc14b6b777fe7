//! Counters of what the proxy does, shared by every component: lock-free counters, latency
//! histograms, and the recent activity the status page shows.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

impl Serialize for Counter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.get())
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

/// A version change, for the status page.
#[derive(Debug, Clone, Serialize)]
pub struct VersionChange {
    /// Asset identity.
    pub asset: String,
    /// Previous version.
    pub old: String,
    /// New version.
    pub new: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

/// Recent activity: requests per second, bytes served per asset, the latest version changes.
#[derive(Debug, Default)]
pub struct Activity {
    per_second: Mutex<VecDeque<u64>>,
    last_requests: AtomicU64,
    served: Mutex<HashMap<String, u64>>,
    changes: Mutex<VecDeque<VersionChange>>,
}

/// Seconds of request rate kept.
const HISTORY_SECONDS: usize = 600;
/// Assets whose served bytes are tracked; beyond it, the least served are forgotten.
const TRACKED_ASSETS: usize = 1000;
/// Version changes kept.
const CHANGES_KEPT: usize = 50;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Activity {
    /// Records the requests of the last second, given the request counter now.
    pub fn tick(&self, requests: u64) {
        let previous = self.last_requests.swap(requests, Ordering::Relaxed);
        let mut history = lock(&self.per_second);
        history.push_back(requests.saturating_sub(previous));
        if history.len() > HISTORY_SECONDS {
            history.pop_front();
        }
    }

    /// Counts bytes served for an asset.
    pub fn served(&self, asset: &str, bytes: u64) {
        let mut served = lock(&self.served);
        if !served.contains_key(asset) && served.len() >= TRACKED_ASSETS {
            if let Some(least) = served
                .iter()
                .min_by_key(|(_, bytes)| **bytes)
                .map(|(k, _)| k.clone())
            {
                served.remove(&least);
            }
        }
        *served.entry(asset.to_owned()).or_default() += bytes;
    }

    /// Records a version change.
    pub fn version_changed(&self, asset: &str, old: &str, new: &str) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut changes = lock(&self.changes);
        changes.push_back(VersionChange {
            asset: asset.to_owned(),
            old: old.to_owned(),
            new: new.to_owned(),
            at,
        });
        if changes.len() > CHANGES_KEPT {
            changes.pop_front();
        }
    }

    /// Requests per second, oldest first.
    pub fn per_second(&self) -> Vec<u64> {
        lock(&self.per_second).iter().copied().collect()
    }

    /// The `n` assets with the most bytes served, most first.
    pub fn top_assets(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = lock(&self.served)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// The latest version changes, newest first.
    pub fn changes(&self) -> Vec<VersionChange> {
        lock(&self.changes).iter().rev().cloned().collect()
    }
}

/// Every counter of the proxy.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// When the proxy started.
    #[serde(skip)]
    pub started: Instant,
    /// Recent activity.
    #[serde(skip)]
    pub activity: Activity,
    /// Latency of requests answered from the cache.
    pub latency_hits: Histogram,
    /// Latency of requests that went to the origin.
    pub latency_misses: Histogram,
    /// Requests answered (CONNECTs excluded).
    pub requests: Counter,
    /// Answered from the memory tier.
    pub hits_memory: Counter,
    /// Answered from the disk tier.
    pub hits_disk: Counter,
    /// Answered from the shared tier (Redis).
    pub hits_shared: Counter,
    /// Cacheable requests fetched from the origin.
    pub misses: Counter,
    /// Requests forwarded without the cache.
    pub bypasses: Counter,
    /// Requests that waited for another's fetch of the same key.
    pub coalesced_waits: Counter,
    /// Entries stored.
    pub stored: Counter,
    /// Stale entries checked with the origin.
    pub revalidations: Counter,
    /// Revalidations answered 304: the stored body was still current.
    pub not_modified: Counter,
    /// Body bytes the origin did not send thanks to a 304.
    pub bytes_saved_by_revalidation: Counter,
    /// Stale entries served (stale-while-revalidate, stale-if-error, offline).
    pub stale_served: Counter,
    /// Asset version changes seen.
    pub version_changes: Counter,
    /// Entries evicted because a newer version arrived.
    pub version_evictions: Counter,
    /// Disk entries that failed verification.
    pub corrupt_entries: Counter,
    /// Disk reads or writes that failed.
    pub disk_errors: Counter,
    /// Entries written to disk.
    pub disk_writes: Counter,
    /// Entries not written to disk because the write queue was full (kept in memory).
    pub disk_writes_skipped: Counter,
    /// Entries written to disk zstd-compressed.
    pub disk_compressed_writes: Counter,
    /// Bytes those entries' files are smaller than their bodies.
    pub disk_bytes_saved_by_compression: Counter,
    /// Responses sent from the cache in a content coding the proxy made (zstd, br, gzip).
    pub encoded_responses: Counter,
    /// Entries removed from disk to keep it under `disk.max_mb`.
    pub disk_evictions: Counter,
    /// Bytes of those entries.
    pub disk_evicted_bytes: Counter,
    /// Origin requests that failed (connect, TLS, timeout, broken body).
    pub upstream_errors: Counter,
    /// Body bytes sent to clients from the cache.
    pub bytes_from_cache: Counter,
    /// Body bytes received from origins.
    pub bytes_from_upstream: Counter,
    /// Of those, the bytes that came through the upstream proxy.
    pub bytes_via_upstream_proxy: Counter,
    /// Entries the memory tier was filled with from disk at start.
    pub prewarmed_entries: Counter,
    /// Their body bytes.
    pub prewarmed_bytes: Counter,
    /// Cold keys the shared tier did not hold.
    pub shared_misses: Counter,
    /// Entries written to the shared tier.
    pub shared_writes: Counter,
    /// Entries not written to the shared tier (down, or too many bytes being written).
    pub shared_writes_skipped: Counter,
    /// Shared-tier commands that failed or timed out, and lost connections.
    pub shared_errors: Counter,
    /// Shared-tier entries that failed verification.
    pub shared_corrupt: Counter,
    /// Cold requests that waited for another proxy of the fleet to fetch.
    pub shared_lock_waits: Counter,
    /// Version announcements received from other proxies of the fleet.
    pub shared_versions_received: Counter,
    /// Documents and bootstrap scripts scanned for references.
    pub prefetch_scans: Counter,
    /// Prefetches sent to origins.
    pub prefetch_fetches: Counter,
    /// Prefetched entries stored.
    pub prefetched: Counter,
    /// Their body bytes.
    pub prefetched_bytes: Counter,
    /// Prefetched entries a client then used.
    pub prefetch_used: Counter,
    /// Their body bytes.
    pub prefetch_used_bytes: Counter,
    /// Body bytes of prefetched entries no client used within five minutes.
    pub prefetch_wasted_bytes: Counter,
    /// References not prefetched because too many prefetches were waiting.
    pub prefetch_dropped: Counter,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            activity: Activity::default(),
            latency_hits: Histogram::default(),
            latency_misses: Histogram::default(),
            requests: Counter::default(),
            hits_memory: Counter::default(),
            hits_disk: Counter::default(),
            hits_shared: Counter::default(),
            misses: Counter::default(),
            bypasses: Counter::default(),
            coalesced_waits: Counter::default(),
            stored: Counter::default(),
            revalidations: Counter::default(),
            not_modified: Counter::default(),
            bytes_saved_by_revalidation: Counter::default(),
            stale_served: Counter::default(),
            version_changes: Counter::default(),
            version_evictions: Counter::default(),
            corrupt_entries: Counter::default(),
            disk_errors: Counter::default(),
            disk_writes: Counter::default(),
            disk_writes_skipped: Counter::default(),
            disk_compressed_writes: Counter::default(),
            disk_bytes_saved_by_compression: Counter::default(),
            encoded_responses: Counter::default(),
            disk_evictions: Counter::default(),
            disk_evicted_bytes: Counter::default(),
            upstream_errors: Counter::default(),
            bytes_from_cache: Counter::default(),
            bytes_from_upstream: Counter::default(),
            bytes_via_upstream_proxy: Counter::default(),
            prewarmed_entries: Counter::default(),
            prewarmed_bytes: Counter::default(),
            shared_misses: Counter::default(),
            shared_writes: Counter::default(),
            shared_writes_skipped: Counter::default(),
            shared_errors: Counter::default(),
            shared_corrupt: Counter::default(),
            shared_lock_waits: Counter::default(),
            shared_versions_received: Counter::default(),
            prefetch_scans: Counter::default(),
            prefetch_fetches: Counter::default(),
            prefetched: Counter::default(),
            prefetched_bytes: Counter::default(),
            prefetch_used: Counter::default(),
            prefetch_used_bytes: Counter::default(),
            prefetch_wasted_bytes: Counter::default(),
            prefetch_dropped: Counter::default(),
        }
    }
}

impl Stats {
    /// All counters as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let histogram = Histogram::default();
        assert_eq!(histogram.quantile_ms(0.5), None);
        for ms in [0.5, 3.0, 3.0, 40.0, 40.0, 40.0, 40.0, 40.0, 40.0, 900.0] {
            histogram.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        assert_eq!(histogram.quantile_ms(0.1), Some(1));
        assert_eq!(histogram.quantile_ms(0.3), Some(5));
        assert_eq!(histogram.quantile_ms(0.5), Some(50));
        assert_eq!(histogram.quantile_ms(0.99), Some(1000));
        let (buckets, count) = histogram.cumulative();
        assert_eq!(count, 10);
        assert_eq!(buckets.last(), Some(&(30_000, 10)));
    }

    #[test]
    fn activity_keeps_the_most_served_assets() {
        let activity = Activity::default();
        activity.served("a", 10);
        activity.served("b", 30);
        activity.served("a", 25);
        assert_eq!(activity.top_assets(1), vec![("a".to_owned(), 35)]);
        activity.tick(5);
        activity.tick(12);
        assert_eq!(activity.per_second(), vec![5, 7]);
    }
}
