//! The cache facade, the only door the proxy uses: `lookup` (memory, then disk, promoting disk
//! hits), `begin_fill` (coalescing), and `commit` (memory, version index, then the disk
//! writer's queue — off the request path). A cache failure never fails a request: it is
//! logged, counted, and becomes a miss.

mod commit;
pub mod compress;
pub mod disk;
pub mod entry;
pub mod http;
pub mod inflight;
pub mod inventory;
pub mod memory;
mod retirement;
pub mod shared;
pub mod tee;
pub mod version_index;

use std::sync::{Arc, Mutex};

use ::http::{HeaderMap, Request, StatusCode};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use url::Url;

use crate::config::CacheConfig;
use crate::stats::Stats;
use disk::index::DiskIndex;
use disk::layout::{self, Opened};
use disk::vary_store::VaryIndex;
use disk::writer::DiskWriter;
use disk::{index_error, prewarm, upkeep, DiskError, DiskStore, DiskTier};
pub use entry::CachedResponse;
use entry::{now_ms, EntryMeta, Lifetime, PrefetchMark};
use http::key::CacheKey;
use http::policy::{CachePlan, Sharing};
use inflight::{Fill, FillOutcome, FillPermit, InFlight};
use memory::MemoryTier;
use shared::{FleetLock, SharedTier, VersionNews};
use version_index::{RetireRule, VersionIndex};

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The memory tier.
    Memory,
    /// The disk tier.
    Disk,
    /// The fleet's shared tier (Redis).
    Shared,
}

impl Tier {
    /// The tier's name in headers, logs and stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Shared => "shared",
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
    store: Arc<DiskStore>,
    writer: DiskWriter,
    versions: Arc<VersionIndex>,
    /// Which assets the retirement rule is applied to next.
    retirement: retirement::Retirement,
    /// Whether the sweep task runs.
    sweeping: std::sync::atomic::AtomicBool,
    vary: Arc<VaryIndex>,
    inflight: InFlight,
    stats: Arc<Stats>,
    /// The fleet's shared tier, when configured.
    shared: Option<SharedTier>,
    /// Other proxies' version announcements, until `start_sharing` takes them.
    news: Mutex<Option<mpsc::Receiver<VersionNews>>>,
    /// Fills streaming and disk jobs queued or running; `settled` waits for zero.
    pending: watch::Sender<usize>,
}

/// The keys a request may be answered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKeys {
    /// The key every client shares (a cookie enters it only when the answers vary on it).
    pub shared: CacheKey,
    /// The key kept for the request's cookie, when it carries one and not every answer to it
    /// is shared.
    pub own: Option<CacheKey>,
}

impl RequestKeys {
    /// The key a fill for this request is led on: the shared one for assets, so sessions
    /// with different cookies wait for one fetch; the cookie's own for anything else.
    pub fn fill_key(&self, plan: &CachePlan) -> &CacheKey {
        match &self.own {
            Some(own) if !plan.asset_request => own,
            _ => &self.shared,
        }
    }
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
    /// The fleet's fill lock for this key, let go once the entry is in the shared tier.
    pub fleet_lock: Option<FleetLock>,
    /// Set when the fetch is a prefetch: the entry carries the mark.
    pub prefetched: Option<Arc<PrefetchMark>>,
}

impl Cache {
    /// Opens the cache; blocking (layout check, directory creation, temp cleanup, reading
    /// the index journal). Starts the disk writer and upkeep threads.
    pub fn open(config: &CacheConfig, stats: Arc<Stats>) -> Result<Cache, DiskError> {
        let (tier, report) = DiskTier::open(&config.dir)?;
        if let Opened::Migrated { from } = report.layout {
            let what = if from < 2 {
                "cache layout migrated; the index is rebuilt from the entries in the background"
            } else {
                "cache layout migrated; entries are kept, new ones may be stored compressed"
            };
            info!(dir = %config.dir.display(), from, to = layout::LAYOUT, "{what}");
        }
        if report.temps_removed > 0 {
            info!(
                count = report.temps_removed,
                "removed temp files left by an interrupted write"
            );
        }
        if report.shared_with_another_process {
            info!(dir = %config.dir.display(), "cache directory shared with another running proxy");
        }
        let rule = RetireRule {
            keep: config.keep_versions,
            after: config.retire_after,
        };
        let versions = VersionIndex::new(tier.root(), rule);
        let vary = VaryIndex::new(tier.root());
        let (index, learned) = DiskIndex::open(tier.root()).map_err(index_error)?;
        if learned.lost && report.layout == Opened::Current {
            warn!("cache index missing or unreadable; rebuilding it from the entry files in the background");
        }
        let versions = Arc::new(versions);
        let memory = MemoryTier::new(config.memory_max_bytes, config.memory_idle);
        let store = Arc::new(
            DiskStore::new(
                tier,
                index,
                versions.clone(),
                memory.clone(),
                stats.clone(),
                config.disk_max_bytes,
            )
            .compressing(config.disk_compress),
        );
        let start_error = |source| DiskError::Io {
            op: "start a thread for",
            path: config.dir.clone(),
            source,
        };
        let writer = DiskWriter::start(store.clone()).map_err(start_error)?;
        let (shared, news) = if config.shared.nodes.is_empty() {
            (None, None)
        } else {
            let (tier, news) = SharedTier::new(config.shared.clone(), stats.clone());
            (Some(tier), Some(news))
        };
        let inner = Arc::new(Inner {
            config: config.clone(),
            memory,
            store,
            writer,
            versions,
            retirement: retirement::Retirement::default(),
            sweeping: std::sync::atomic::AtomicBool::new(false),
            vary: Arc::new(vary),
            inflight: InFlight::default(),
            stats,
            shared,
            news: Mutex::new(news),
            pending: watch::channel(0).0,
        });
        // The first process on a directory checks the index against the files before it
        // serves: a crash may have left a file the journal does not know of, or a record of
        // one it removed. That reads no bodies and only the metadata of unknown files. A lost
        // index is rebuilt in the background instead: that reads every entry's metadata.
        if !report.shared_with_another_process && !learned.lost {
            upkeep::reconcile_logged(&inner.store);
        }
        upkeep::start(Arc::downgrade(&inner), learned.lost).map_err(start_error)?;
        if config.prewarm {
            prewarm::start(Arc::downgrade(&inner)).map_err(start_error)?;
        }
        Ok(Cache { inner })
    }

    /// Makes the disk index agree with the entry files now (the upkeep does it in the
    /// background at start). Blocking. For commands working on a directory.
    pub fn reconcile_now(&self) -> upkeep::Reconciled {
        upkeep::reconcile(&self.inner.store)
    }

    /// The configuration the cache runs with.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Where the entry for `key` lives on disk.
    pub fn disk_path(&self, key: &CacheKey) -> std::path::PathBuf {
        self.inner.store.tier.path_of(key)
    }

    /// The keys a request for `url` may be answered from: its coding class and the values of
    /// the headers this URL's responses vary on; with a cookie, also the cookie's own key.
    pub async fn keys_for(&self, url: &Url, headers: &HeaderMap, plan: &CachePlan) -> RequestKeys {
        let names = match self.inner.vary.cached(url.as_str()) {
            Some(names) => names,
            None => {
                let (vary, owned) = (self.inner.vary.clone(), url.as_str().to_owned());
                tokio::task::spawn_blocking(move || vary.names(&owned))
                    .await
                    .unwrap_or_default()
            }
        };
        let shared = CacheKey::for_request(url, headers, &names, true);
        let own = CacheKey::for_request(url, headers, &names, plan.sharing == Sharing::Always);
        RequestKeys {
            own: (own != shared).then_some(own),
            shared,
        }
    }

    /// The entry a request may be answered from, fresh or not: the one every client shares
    /// when it may serve this request (always, without a cookie; for an asset, with one),
    /// else the one kept for the request's cookie.
    pub async fn find(
        &self,
        keys: &RequestKeys,
        plan: &CachePlan,
    ) -> Option<(Arc<CachedResponse>, Tier)> {
        if let Some((entry, tier)) = self.lookup(&keys.shared).await {
            if keys.own.is_none()
                || http::policy::shared_across_cookies(plan, entry.meta.header_map())
            {
                return Some((entry, tier));
            }
        }
        match &keys.own {
            Some(own) => self.lookup(own).await,
            None => None,
        }
    }

    /// The entry for `key` if the memory tier holds it.
    pub fn memory_entry(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let entry = self.inner.memory.get(key)?;
        entry.used.mark(now_ms());
        Some(entry)
    }

    /// The entry for `key`, fresh or not, from memory, else from disk (then promoted). A disk
    /// entry of a version that another process (or a crash before its removal) left behind
    /// after a newer one arrived is removed instead.
    pub async fn lookup(&self, key: &CacheKey) -> Option<(Arc<CachedResponse>, Tier)> {
        if let Some(entry) = self.memory_entry(key) {
            return Some((entry, Tier::Memory));
        }
        let inner = &self.inner;
        let (store, owned_key) = (inner.store.clone(), key.clone());
        let read = tokio::task::spawn_blocking(move || store.read(&owned_key)).await;
        let entry = Arc::new(read.ok().flatten()?);
        let now = now_ms();
        entry.used.mark(now);
        inner.store.note_disk_use(key.digest_bytes(), now);
        inner.memory.insert(entry.clone());
        Some((entry, Tier::Disk))
    }

    /// Replaces an entry's metadata after a 304 (the body stays), then wakes the followers.
    pub fn refresh(&self, permit: FillPermit, entry: &CachedResponse, meta: EntryMeta) {
        let refreshed = Arc::new(entry.with_meta(meta));
        self.inner.memory.insert(refreshed.clone());
        permit.complete(FillOutcome::Stored);
        self.queue_write(refreshed);
    }

    /// Hands an entry to the disk writer; counts it when the queue is full.
    fn queue_write(&self, entry: Arc<CachedResponse>) {
        if !self.inner.writer.store(entry, self.pending()) {
            self.inner.stats.disk_writes_skipped.inc();
            debug!("disk write queue full; entry kept in memory only");
        }
    }

    /// Entries and bytes waiting for the disk writer.
    pub fn write_queue(&self) -> (usize, u64) {
        self.inner.writer.depth()
    }

    /// Leads or follows the fill of `key`.
    pub fn begin_fill(&self, key: &CacheKey) -> Fill {
        self.inner.inflight.begin(key)
    }

    /// Fills `key` without waiting for, or keeping waiting, anyone else's fetch of it.
    pub fn solo_fill(&self, key: &CacheKey) -> FillPermit {
        self.inner.inflight.solo(key)
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
