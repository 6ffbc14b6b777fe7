//! Counters of what the proxy does, shared by every component. Lock-free; read with `snapshot`.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// Every counter of the proxy.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// Requests answered (CONNECTs excluded).
    pub requests: Counter,
    /// Answered from the memory tier.
    pub hits_memory: Counter,
    /// Answered from the disk tier.
    pub hits_disk: Counter,
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
    /// Origin requests that failed (connect, TLS, timeout, broken body).
    pub upstream_errors: Counter,
    /// Body bytes sent to clients from the cache.
    pub bytes_from_cache: Counter,
    /// Body bytes received from origins.
    pub bytes_from_upstream: Counter,
}

impl Stats {
    /// All counters as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}
