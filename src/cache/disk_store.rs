//! The disk tier as the rest of the cache uses it: the entry files, their index and the
//! tier's health together, so that every write and removal is recorded in the index and
//! every failure is counted and reported in one place. Blocking.

use std::sync::Arc;

use super::disk::{DiskError, DiskTier};
use super::entry::{now_ms, CachedResponse};
use super::health::DiskHealth;
use super::index::DiskIndex;
use super::journal::{Digest, Removal};
use super::key::CacheKey;
use super::versions::VersionIndex;
use crate::stats::Stats;

/// Entry files, index and health.
pub struct DiskStore {
    /// The entry files.
    pub tier: DiskTier,
    /// What they are, their sizes and last uses.
    pub index: DiskIndex,
    /// Whether the disk works.
    pub health: DiskHealth,
    /// Which versions of each asset are current.
    pub versions: Arc<VersionIndex>,
    /// Counters.
    pub stats: Arc<Stats>,
}

impl DiskStore {
    /// Writes `entry` and records it; a failure is reported and the entry stays in memory
    /// only. A version that became retired while it waited is removed again: another process
    /// may have retired it and removed its file before this write landed.
    pub fn write(&self, entry: &CachedResponse) {
        self.write_file(entry);
        if let (Some(asset), Some(version)) = (&entry.meta.asset, &entry.meta.version) {
            if self.versions.is_retired(asset, version).unwrap_or(false) {
                self.remove_keys(std::slice::from_ref(&entry.meta.key), Removal::OlderVersion);
            }
        }
    }

    fn write_file(&self, entry: &CachedResponse) {
        let size = match self.tier.write(entry) {
            Ok(size) => size,
            Err(e) => return self.health.failed(&e),
        };
        self.stats.disk_writes.inc();
        let digest = entry.meta.key.digest_bytes();
        match self.index.put(&[(digest, size, now_ms())]) {
            Ok(_) => self.health.succeeded(),
            Err(e) => self.health.failed(&index_error(e)),
        }
    }

    /// Removes the entries of `keys` and records why.
    pub fn remove_keys(&self, keys: &[CacheKey], why: Removal) {
        let digests: Vec<Digest> = keys.iter().map(CacheKey::digest_bytes).collect();
        self.remove(&digests, why);
    }

    /// Removes the entries named by `digests` and records why.
    pub fn remove(&self, digests: &[Digest], why: Removal) {
        for digest in digests {
            if let Err(e) = self.tier.remove_digest(digest) {
                self.health.failed(&e);
            }
        }
        if let Err(e) = self.index.remove(digests, why, now_ms()) {
            self.health.failed(&index_error(e));
        }
    }

    /// The verified entry for `key`, if the disk holds one. A damaged entry is removed (and
    /// counted); a failure is a miss.
    pub fn read(&self, key: &CacheKey) -> Option<CachedResponse> {
        match self.tier.read(key) {
            Ok(entry) => entry,
            Err(e) => {
                if let DiskError::Corrupt { .. } = e {
                    let _ = self
                        .index
                        .remove(&[key.digest_bytes()], Removal::Damaged, now_ms());
                }
                self.health.failed(&e);
                None
            }
        }
    }
}

/// An index failure, in the tier's error type.
pub fn index_error(source: std::io::Error) -> DiskError {
    DiskError::Io {
        op: "update index",
        path: "index.journal".into(),
        source,
    }
}
