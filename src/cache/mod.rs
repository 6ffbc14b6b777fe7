//! The cache facade, the only door the proxy uses: `lookup` (memory, then disk, promoting disk
//! hits), `begin_fill` (coalescing), and `commit` (version index, memory, disk — off the
//! request path). A cache failure never fails a request: it is logged, counted, and becomes a
//! miss.

pub mod disk;
pub mod entry;
pub mod inflight;
pub mod key;
pub mod memory;
pub mod policy;
pub mod tee;
pub mod version;
pub mod versions;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::CacheConfig;
use crate::stats::Stats;
use disk::{DiskError, DiskTier};
pub use entry::CachedResponse;
use entry::EntryMeta;
use inflight::{Fill, FillOutcome, FillPermit, InFlight};
use key::CacheKey;
use memory::MemoryTier;
use policy::CachePlan;
use versions::{Admission, VersionIndex};

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The memory tier.
    Memory,
    /// The disk tier.
    Disk,
}

impl Tier {
    /// The tier's name in headers, logs and stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
        }
    }
}

/// The result of a lookup.
pub enum Lookup {
    /// A fresh entry.
    Hit(Arc<CachedResponse>, Tier),
    /// Nothing fresh.
    Miss,
}

/// The memory and disk tiers with their version index and fills in flight.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    config: CacheConfig,
    memory: MemoryTier,
    disk: Arc<DiskTier>,
    index: Arc<VersionIndex>,
    inflight: InFlight,
    stats: Arc<Stats>,
    /// Commits still writing; `settled` waits for zero.
    pending: watch::Sender<usize>,
}

/// The parts of an origin response that are stored with its body.
pub struct FillPlan {
    /// How the request was classified.
    pub plan: CachePlan,
    /// Response status.
    pub status: StatusCode,
    /// End-to-end response headers.
    pub headers: HeaderMap,
}

impl Cache {
    /// Opens the cache; blocking (directory creation, temp cleanup).
    pub fn open(config: &CacheConfig, stats: Arc<Stats>) -> Result<Cache, DiskError> {
        let (disk, report) = DiskTier::open(&config.dir)?;
        if report.temps_removed > 0 {
            info!(
                count = report.temps_removed,
                "removed temp files left by an interrupted write"
            );
        }
        if report.shared_with_another_process {
            info!(dir = %config.dir.display(), "cache directory shared with another running proxy");
        }
        let index = VersionIndex::new(disk.root(), config.keep_versions);
        Ok(Cache {
            inner: Arc::new(Inner {
                config: config.clone(),
                memory: MemoryTier::new(config.memory_max_bytes, config.memory_idle),
                disk: Arc::new(disk),
                index: Arc::new(index),
                inflight: InFlight::default(),
                stats,
                pending: watch::channel(0).0,
            }),
        })
    }

    /// The configuration the cache runs with.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Where the entry for `key` lives on disk.
    pub fn disk_path(&self, key: &CacheKey) -> std::path::PathBuf {
        self.inner.disk.path_of(key)
    }

    /// A fresh entry for `key` from memory, else from disk (then promoted into memory).
    pub async fn lookup(&self, key: &CacheKey, now: SystemTime) -> Lookup {
        let inner = &self.inner;
        if let Some(entry) = inner.memory.get(key) {
            if is_fresh(&entry.meta, now) {
                return Lookup::Hit(entry, Tier::Memory);
            }
            inner.memory.remove(key);
        }
        let disk = inner.disk.clone();
        let owned_key = key.clone();
        let read = tokio::task::spawn_blocking(move || disk.read(&owned_key)).await;
        match read {
            Ok(Ok(Some(entry))) if is_fresh(&entry.meta, now) => {
                let entry = Arc::new(entry);
                inner.memory.insert(entry.clone());
                Lookup::Hit(entry, Tier::Disk)
            }
            Ok(Ok(_)) => Lookup::Miss,
            Ok(Err(e)) => {
                match e {
                    DiskError::Corrupt { .. } => inner.stats.corrupt_entries.inc(),
                    DiskError::Io { .. } => inner.stats.disk_errors.inc(),
                }
                warn!(error = %e, key = %key, "disk tier read failed; treated as a miss");
                Lookup::Miss
            }
            Err(e) => {
                warn!(error = %e, "disk read task failed");
                Lookup::Miss
            }
        }
    }

    /// Leads or follows the fill of `key`.
    pub fn begin_fill(&self, key: &CacheKey) -> Fill {
        self.inner.inflight.begin(key)
    }

    /// Whether the request is for a version of an asset that a newer one has replaced; such
    /// a request is served but not stored.
    pub async fn is_older_version(&self, plan: &CachePlan) -> bool {
        let Some(versioned) = plan.versioned.clone() else {
            return false;
        };
        let index = self.inner.index.clone();
        let checked = tokio::task::spawn_blocking(move || {
            index.is_retired(&versioned.asset, &versioned.version)
        })
        .await;
        match checked {
            Ok(Ok(retired)) => retired,
            Ok(Err(e)) => {
                self.inner.stats.disk_errors.inc();
                warn!(error = %e, "version index read failed");
                false
            }
            Err(_) => false,
        }
    }

    /// Stores a complete body in the background: version index, then memory (followers are
    /// woken), then disk. The caller never waits for it.
    pub fn commit(&self, permit: FillPermit, fill: FillPlan, body: Bytes) {
        let cache = self.clone();
        let guard = PendingGuard::new(&self.inner.pending);
        tokio::spawn(async move {
            cache.store(permit, fill, body).await;
            drop(guard);
        });
    }

    /// Resolves once no commit is writing. For shutdown and tests.
    pub async fn settled(&self) {
        let mut receiver = self.inner.pending.subscribe();
        let _ = receiver.wait_for(|pending| *pending == 0).await;
    }

    async fn store(&self, permit: FillPermit, fill: FillPlan, body: Bytes) {
        let inner = &self.inner;
        let key = permit.key().clone();
        let now = SystemTime::now();
        let versioned = fill.plan.versioned.clone().map(|v| (v.asset, v.version));
        let admission = match &versioned {
            None => Ok(Admission::Store {
                change: None,
                evicted: Vec::new(),
            }),
            Some((asset, version)) => {
                let (index, asset, version, key) = (
                    inner.index.clone(),
                    asset.clone(),
                    version.clone(),
                    key.clone(),
                );
                tokio::task::spawn_blocking(move || index.admit(&asset, &version, &key, now))
                    .await
                    .unwrap_or_else(|e| {
                        Err(DiskError::Io {
                            op: "index",
                            path: Default::default(),
                            source: std::io::Error::other(e),
                        })
                    })
            }
        };
        let evicted = match admission {
            Ok(Admission::Older) => {
                debug!(key = %key, "older version of an asset; served, not stored");
                permit.complete(FillOutcome::NotStorable);
                return;
            }
            Ok(Admission::Store { change, evicted }) => {
                if let (Some((old, new)), Some((asset, _))) = (change, &versioned) {
                    inner.stats.version_changes.inc();
                    info!(asset = %asset, old = %old, new = %new, "asset version changed");
                }
                evicted
            }
            Err(e) => {
                inner.stats.disk_errors.inc();
                warn!(error = %e, key = %key, "version index update failed; storing without it");
                Vec::new()
            }
        };
        let meta = EntryMeta::new(
            key,
            fill.status,
            &fill.headers,
            versioned,
            now,
            fill.plan.ttl,
            &body,
        );
        let entry = Arc::new(CachedResponse { meta, body });
        inner.memory.insert(entry.clone());
        inner.stats.stored.inc();
        permit.complete(FillOutcome::Stored);

        let disk = inner.disk.clone();
        let to_evict = evicted.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut errors = Vec::new();
            if let Err(e) = disk.write(&entry) {
                errors.push(e);
            }
            for key in &to_evict {
                if let Err(e) = disk.remove(key) {
                    errors.push(e);
                }
            }
            errors
        })
        .await
        .unwrap_or_default();
        for e in written {
            inner.stats.disk_errors.inc();
            warn!(error = %e, "disk tier write failed; entry kept in memory only");
        }
        for key in &evicted {
            inner.memory.remove(key);
            inner.stats.version_evictions.inc();
        }
    }
}

fn is_fresh(meta: &EntryMeta, now: SystemTime) -> bool {
    policy::is_fresh(meta.stored_at(), meta.ttl(), now)
}

/// Counts one commit as pending for as long as it lives.
struct PendingGuard(watch::Sender<usize>);

impl PendingGuard {
    fn new(pending: &watch::Sender<usize>) -> PendingGuard {
        pending.send_modify(|n| *n += 1);
        PendingGuard(pending.clone())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}
