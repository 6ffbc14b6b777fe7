//! `Tiers`: the cache's parts held together — the memory tier, the disk store and its writer,
//! the version and vary indexes, the fills in flight, the shared tier — and the two plain
//! ways to read them: an entry by key (memory, then disk, promoting a disk hit) and the keys
//! a request may be answered from. What a request does with them is `lookup`; how entries
//! go in is `store`.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use http::HeaderMap;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use url::Url;

use crate::cache::disk::index::DiskIndex;
use crate::cache::disk::layout::{self, Opened};
use crate::cache::disk::vary_store::VaryIndex;
use crate::cache::disk::writer::DiskWriter;
use crate::cache::disk::{index_error, DiskError, DiskStore, DiskTier, Wanted};
use crate::cache::entry::{now_ms, CachedResponse};
use crate::cache::http::key::CacheKey;
use crate::cache::http::policy::{self, CachePlan, Sharing};
use crate::cache::inflight::InFlight;
use crate::cache::memory::MemoryTier;
use crate::cache::pending::{Pending, PendingGuard};
use crate::cache::shared::{SharedTier, VersionNews};
use crate::cache::sweep_list::SweepList;
use crate::cache::version_index::{RetireRule, VersionIndex};
use crate::config::CacheConfig;
use crate::stats::Stats;

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

/// The cache's parts.
pub(crate) struct Tiers {
    pub(crate) config: CacheConfig,
    pub(crate) memory: MemoryTier,
    pub(crate) store: Arc<DiskStore>,
    pub(crate) writer: DiskWriter,
    pub(crate) versions: Arc<VersionIndex>,
    /// Which assets the retirement rule is applied to next.
    pub(crate) sweep_list: SweepList,
    /// Whether the background tasks run.
    pub(crate) started: AtomicBool,
    pub(crate) vary: Arc<VaryIndex>,
    pub(crate) inflight: InFlight,
    pub(crate) stats: Arc<Stats>,
    /// The fleet's shared tier, when configured.
    pub(crate) shared: Option<SharedTier>,
    /// Other proxies' use reports, until the background tasks take them.
    pub(crate) news: Mutex<Option<mpsc::Receiver<VersionNews>>>,
    /// Fills streaming and disk jobs queued or running.
    pub(crate) pending: Pending,
}

/// What opening the tiers found, for the threads that start with them.
pub(crate) struct Opening {
    /// The index was lost and must be rebuilt from the files.
    pub(crate) index_lost: bool,
    /// Another process has the directory open.
    pub(crate) shared_directory: bool,
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

impl Tiers {
    /// Opens the tiers on `config.dir`; blocking (layout check, directory creation, temp
    /// cleanup, reading the index journal). Starts the disk writer.
    pub(crate) fn open(
        config: &CacheConfig,
        stats: Arc<Stats>,
    ) -> Result<(Tiers, Opening), DiskError> {
        let (tier, report) = DiskTier::open(&config.dir)?;
        log_opening(config, &report);
        let rule = RetireRule {
            keep: config.keep_versions,
            after: config.retire_after,
        };
        let versions = Arc::new(VersionIndex::new(tier.root(), rule));
        let vary = VaryIndex::new(tier.root());
        let (index, learned) = DiskIndex::open(tier.root()).map_err(index_error)?;
        if learned.lost && report.layout == Opened::Current {
            warn!("cache index missing or unreadable; rebuilding it from the entry files in the background");
        }
        let memory = MemoryTier::new(config.memory_max_bytes, config.memory_idle);
        let store = Arc::new(
            DiskStore::new(
                tier,
                index,
                memory.clone(),
                stats.clone(),
                config.disk_max_bytes,
            )
            .compressing(config.disk_compress),
        );
        let writer = DiskWriter::start(store.clone(), still_held(&versions))
            .map_err(|source| thread_error(config, source))?;
        let (shared, news) = if config.shared.nodes.is_empty() {
            (None, None)
        } else {
            let (tier, news) = SharedTier::new(config.shared.clone(), stats.clone());
            (Some(tier), Some(news))
        };
        let tiers = Tiers {
            config: config.clone(),
            memory,
            store,
            writer,
            versions,
            sweep_list: SweepList::default(),
            started: AtomicBool::new(false),
            vary: Arc::new(vary),
            inflight: InFlight::default(),
            stats,
            shared,
            news: Mutex::new(news),
            pending: Pending::default(),
        };
        let opening = Opening {
            index_lost: learned.lost,
            shared_directory: report.shared_with_another_process,
        };
        Ok((tiers, opening))
    }

    /// The keys a request for `url` may be answered from: its coding class and the values of
    /// the headers this URL's responses vary on; with a cookie, also the cookie's own key.
    pub(crate) async fn keys_for(
        &self,
        url: &Url,
        headers: &HeaderMap,
        plan: &CachePlan,
    ) -> RequestKeys {
        let names = match self.vary.cached(url.as_str()) {
            Some(names) => names,
            None => {
                let (vary, owned) = (self.vary.clone(), url.as_str().to_owned());
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
    pub(crate) async fn find(
        &self,
        keys: &RequestKeys,
        plan: &CachePlan,
    ) -> Option<(Arc<CachedResponse>, Tier)> {
        if let Some((entry, tier)) = self.get(&keys.shared).await {
            if keys.own.is_none() || policy::shared_across_cookies(plan, entry.meta.header_map()) {
                return Some((entry, tier));
            }
        }
        match &keys.own {
            Some(own) => self.get(own).await,
            None => None,
        }
    }

    /// The entry for `key` if the memory tier holds it; the use is noted.
    pub(crate) fn memory_entry(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let entry = self.memory.get(key)?;
        entry.used.mark(now_ms());
        Some(entry)
    }

    /// The entry for `key`, fresh or not, from memory, else from disk (then promoted).
    pub(crate) async fn get(&self, key: &CacheKey) -> Option<(Arc<CachedResponse>, Tier)> {
        if let Some(entry) = self.memory_entry(key) {
            return Some((entry, Tier::Memory));
        }
        let (store, owned_key) = (self.store.clone(), key.clone());
        let read = tokio::task::spawn_blocking(move || store.read(&owned_key)).await;
        let entry = Arc::new(read.ok().flatten()?);
        let now = now_ms();
        entry.used.mark(now);
        self.store.note_disk_use(key.digest_bytes(), now);
        self.memory.insert(entry.clone());
        Some((entry, Tier::Disk))
    }

    /// Hands an entry to the disk writer; counts it when the queue is full.
    pub(crate) fn queue_write(&self, entry: Arc<CachedResponse>) {
        if !self.writer.store(entry, self.pending()) {
            self.stats.disk_writes_skipped.inc();
            debug!("disk write queue full; entry kept in memory only");
        }
    }

    /// Counts a piece of work as under way until the guard drops.
    pub(crate) fn pending(&self) -> PendingGuard {
        self.pending.guard()
    }

    /// What an entry written or pre-warmed must still be: of a version the index holds (an
    /// answer that holds no version, a 404 say, always is).
    pub(crate) fn still_held(&self) -> Wanted {
        still_held(&self.versions)
    }
}

fn still_held(versions: &Arc<VersionIndex>) -> Wanted {
    let versions = versions.clone();
    Arc::new(move |meta| match (&meta.asset, &meta.version) {
        (Some(asset), Some(version)) if meta.status == http::StatusCode::OK.as_u16() => {
            versions.is_held(asset, version).unwrap_or(true)
        }
        _ => true,
    })
}

fn log_opening(config: &CacheConfig, report: &crate::cache::disk::files::OpenReport) {
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
}

/// A thread that could not start, as a disk-tier error naming the directory.
pub(crate) fn thread_error(config: &CacheConfig, source: std::io::Error) -> DiskError {
    DiskError::Io {
        op: "start a thread for",
        path: config.dir.clone(),
        source,
    }
}
