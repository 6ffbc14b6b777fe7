//! `Tiers`: the cache's parts held together — the memory tier, the disk store and its writer,
//! the version and vary indexes, the fills in flight, the shared tier — opened and started
//! here. How a request finds an entry in them is `lookup`'s; how entries go in is `store`'s.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::cache::disk::index::DiskIndex;
use crate::cache::disk::layout::{self, Opened};
use crate::cache::disk::neighbours::NeighbourLock;
use crate::cache::disk::vary_store::VaryIndex;
use crate::cache::disk::writer::{DiskWriter, Limits as WriterLimits};
use crate::cache::disk::{index_error, DiskError, DiskStore, DiskTier, Wanted};
use crate::cache::entry::CachedResponse;
use crate::cache::inflight::InFlight;
use crate::cache::invalidated::Invalidated;
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
    /// When this process opened the cache: a refreshing run fetches again what is older.
    pub(crate) opened_ms: u64,
    /// URLs unsafe requests invalidated lately.
    pub(crate) invalidated: Invalidated,
}

/// What opening the tiers found, for the threads that start with them.
pub(crate) struct Opening {
    /// The index was lost and must be rebuilt from the files.
    pub(crate) index_lost: bool,
    /// Another process has the directory open.
    pub(crate) shared_directory: bool,
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
        let writer = DiskWriter::start(
            store.clone(),
            still_held(&versions),
            WriterLimits::beside(config.memory_max_bytes),
        )
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
            opened_ms: crate::cache::entry::now_ms(),
            invalidated: Invalidated::default(),
        };
        let opening = Opening {
            index_lost: learned.lost,
            shared_directory: report.shared_with_another_process,
        };
        Ok((tiers, opening))
    }

    /// Hands an entry to the disk writer, waiting for room in its queue; counts it when it
    /// cannot be queued.
    /// A fill's lock among neighbours, when given, is let go once the entry is written.
    pub(crate) async fn queue_write(
        &self,
        entry: Arc<CachedResponse>,
        neighbour_lock: Option<NeighbourLock>,
    ) {
        let pending = self.pending();
        if let Err(why) = self.writer.store(entry, neighbour_lock, pending).await {
            self.stats.disk_writes_skipped.inc();
            debug!(?why, "entry not queued for the disk; kept in memory only");
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
