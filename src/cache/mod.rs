//! The cache facade, the only door the proxy uses: `lookup` (memory, then disk, promoting disk
//! hits), `begin_fill` (coalescing), and `commit` (version index, memory, disk — off the
//! request path). A cache failure never fails a request: it is logged, counted, and becomes a
//! miss.

pub mod disk;
pub mod entry;
pub mod inflight;
pub mod inventory;
pub mod key;
pub mod memory;
pub mod policy;
pub mod tee;
pub mod vary;
pub mod version;
pub mod versions;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use url::Url;

use crate::config::CacheConfig;
use crate::stats::Stats;
use disk::{DiskError, DiskTier};
pub use entry::CachedResponse;
use entry::{EntryMeta, Lifetime};
use inflight::{Fill, FillOutcome, FillPermit, InFlight};
use key::CacheKey;
use memory::MemoryTier;
use policy::CachePlan;
use vary::VaryIndex;
use version::{AssetId, Version};
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
    vary: Arc<VaryIndex>,
    inflight: InFlight,
    stats: Arc<Stats>,
    /// Commits still writing; `settled` waits for zero.
    pending: watch::Sender<usize>,
}

/// What is stored with a body: how the request was classified, what was asked of the
/// origin, what it answered, and the entry this one replaces.
pub struct FillPlan {
    /// How the request was classified.
    pub plan: CachePlan,
    /// The request as sent to the origin (its headers pick the Vary variant).
    pub request: Request<()>,
    /// Response status.
    pub status: StatusCode,
    /// End-to-end response headers.
    pub headers: HeaderMap,
    /// How long the entry may be served.
    pub lifetime: Lifetime,
    /// The stale entry this response replaces, if any.
    pub previous: Option<Arc<CachedResponse>>,
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
        let vary = VaryIndex::new(disk.root());
        Ok(Cache {
            inner: Arc::new(Inner {
                config: config.clone(),
                memory: MemoryTier::new(config.memory_max_bytes, config.memory_idle),
                disk: Arc::new(disk),
                index: Arc::new(index),
                vary: Arc::new(vary),
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

    /// The key of a request for `url`: its coding class, and the values of the headers this
    /// URL's responses vary on.
    pub async fn key_for(&self, url: &Url, headers: &HeaderMap, plan: &CachePlan) -> CacheKey {
        let names = match self.inner.vary.cached(url.as_str()) {
            Some(names) => names,
            None => {
                let (vary, owned) = (self.inner.vary.clone(), url.as_str().to_owned());
                tokio::task::spawn_blocking(move || vary.names(&owned))
                    .await
                    .unwrap_or_default()
            }
        };
        CacheKey::for_request(url, headers, &names, plan.share_credentials)
    }

    /// The entry for `key` if the memory tier holds it.
    pub fn memory_entry(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        self.inner.memory.get(key)
    }

    /// The entry for `key`, fresh or not, from memory, else from disk (then promoted).
    pub async fn lookup(&self, key: &CacheKey) -> Option<(Arc<CachedResponse>, Tier)> {
        let inner = &self.inner;
        if let Some(entry) = inner.memory.get(key) {
            return Some((entry, Tier::Memory));
        }
        let disk = inner.disk.clone();
        let owned_key = key.clone();
        let read = tokio::task::spawn_blocking(move || disk.read(&owned_key)).await;
        match read {
            Ok(Ok(Some(entry))) => {
                let entry = Arc::new(entry);
                inner.memory.insert(entry.clone());
                Some((entry, Tier::Disk))
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                match e {
                    DiskError::Corrupt { .. } => inner.stats.corrupt_entries.inc(),
                    DiskError::Io { .. } => inner.stats.disk_errors.inc(),
                }
                warn!(error = %e, key = %key, "disk tier read failed; treated as a miss");
                None
            }
            Err(e) => {
                warn!(error = %e, "disk read task failed");
                None
            }
        }
    }

    /// Replaces an entry's metadata after a 304 (the body stays), then wakes the followers.
    pub fn refresh(&self, permit: FillPermit, entry: &CachedResponse, meta: EntryMeta) {
        let refreshed = Arc::new(CachedResponse {
            meta,
            body: entry.body.clone(),
        });
        self.inner.memory.insert(refreshed.clone());
        permit.complete(FillOutcome::Stored);
        let (disk, stats) = (self.inner.disk.clone(), self.inner.stats.clone());
        let guard = self.pending();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = disk.write(&refreshed) {
                stats.disk_errors.inc();
                warn!(error = %e, "disk tier write failed; entry kept in memory only");
            }
            drop(guard);
        });
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
    pub fn commit(&self, permit: FillPermit, fill: FillPlan, body: Bytes, guard: PendingGuard) {
        let cache = self.clone();
        tokio::spawn(async move {
            cache.store(permit, fill, body).await;
            drop(guard);
        });
    }

    /// Counts a fill as under way until the guard drops: `settled` waits for it, so a
    /// shutdown lets a body still streaming in finish and be stored.
    pub fn pending(&self) -> PendingGuard {
        PendingGuard::new(&self.inner.pending)
    }

    /// Resolves once no fill is streaming and no commit is writing. For shutdown and tests.
    pub async fn settled(&self) {
        let mut receiver = self.inner.pending.subscribe();
        let _ = receiver.wait_for(|pending| *pending == 0).await;
    }

    /// Memory first, so waiting requests are answered at once; then the version index, which
    /// may say the entry is an older version after all (it then leaves memory again), then
    /// the disk write and the evictions.
    async fn store(&self, permit: FillPermit, fill: FillPlan, body: Bytes) {
        let inner = &self.inner;
        let key = self.variant_key(permit.key(), &fill).await;
        let now = SystemTime::now();
        let versioned = fill.plan.versioned.clone().map(|v| (v.asset, v.version));
        let mut meta = EntryMeta::new(
            key.clone(),
            fill.status,
            &fill.headers,
            fill.lifetime,
            now,
            &body,
        );
        (meta.asset, meta.version) = versioned.clone().unzip();
        if let Some(previous) = &fill.previous {
            self.note_content_change(&previous.meta, &meta);
        }
        let entry = Arc::new(CachedResponse { meta, body });
        inner.memory.insert(entry.clone());
        permit.complete(FillOutcome::Stored);

        // A 404 for a new version must not evict the version that works.
        let admitted = versioned.filter(|_| fill.status == StatusCode::OK);
        let evicted = match admitted {
            None => Vec::new(),
            Some((asset, version)) => match self.admit(&asset, &version, &key, now).await {
                Ok(Admission::Older) => {
                    debug!(key = %key, "older version of an asset; served, not stored");
                    inner.memory.remove(&key);
                    return;
                }
                Ok(Admission::Store { change, evicted }) => {
                    if let Some((old, new)) = change {
                        inner.stats.version_changes.inc();
                        inner.stats.activity.version_changed(
                            asset.as_str(),
                            old.as_str(),
                            new.as_str(),
                        );
                        info!(asset = %asset, old = %old, new = %new, "asset version changed");
                    }
                    evicted
                }
                Err(e) => {
                    inner.stats.disk_errors.inc();
                    warn!(error = %e, key = %key, "version index update failed; storing without it");
                    Vec::new()
                }
            },
        };
        inner.stats.stored.inc();

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

    async fn admit(
        &self,
        asset: &AssetId,
        version: &Version,
        key: &CacheKey,
        now: SystemTime,
    ) -> Result<Admission, DiskError> {
        let (index, asset, version, key) = (
            self.inner.index.clone(),
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
}

impl Cache {
    /// The key to store a response under: the request's variant for the headers the
    /// response varies on, recorded for the URL when they changed.
    async fn variant_key(&self, fill_key: &CacheKey, fill: &FillPlan) -> CacheKey {
        let names = vary::vary_names(&fill.headers).unwrap_or_default();
        let Ok(url) = Url::parse(fill_key.url()) else {
            return fill_key.clone();
        };
        let key = CacheKey::for_request(
            &url,
            fill.request.headers(),
            &names,
            fill.plan.share_credentials,
        );
        if key == *fill_key {
            return key;
        }
        let (index, owned_url) = (self.inner.vary.clone(), fill_key.url().to_owned());
        let recorded = tokio::task::spawn_blocking(move || index.record(&owned_url, &names)).await;
        if let Ok(Err(e)) = recorded {
            self.inner.stats.disk_errors.inc();
            warn!(error = %e, "vary index write failed");
        }
        key
    }

    /// Logs and counts a changed body of an unversioned URL: a new version of that asset.
    fn note_content_change(&self, old: &EntryMeta, new: &EntryMeta) {
        if new.version.is_some() {
            return;
        }
        let (before, after) = (policy::content_identity(old), policy::content_identity(new));
        if before != after {
            self.inner.stats.version_changes.inc();
            self.inner
                .stats
                .activity
                .version_changed(new.key.url(), &before, &after);
            info!(asset = %new.key.url(), old = %before, new = %after, "asset version changed");
        }
    }
}

/// Counts one fill or commit as pending for as long as it lives.
pub struct PendingGuard(watch::Sender<usize>);

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
