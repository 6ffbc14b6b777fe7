//! The cache, and its one door. A request goes in through `Cache::lookup`, which says what to
//! do (`Lookup`): answer with a fresh entry, serve a stale one while it is refreshed, or fill
//! — lead the fetch under a `Fill`, whose `answered` stores the origin's answer as it streams
//! (or `not_modified` refreshes the stale entry) — or pass. Operators read it through
//! `usage`, `entries`, `assets` and `purge`. A cache failure never fails a request: it is
//! logged, counted, and becomes a miss.
//!
//! The rooms: `http/` decides (keys, vary, storability, freshness, kinds of answer, versioned
//! URLs; pure); `request`, `lookup` and `fill` are one request's phases; `inflight` owns the
//! fill lock (coalescing); `tee` keeps a copy of a body as it streams; `store` puts entries in
//! (`Tiers::put`, the one way in); `tiers` holds the parts; `memory`, `disk/` (entry files,
//! index and journal, the writer that writes to disk, eviction, upkeep, verify) and `shared/`
//! (the fleet's Redis) are the tiers; `entry/` is a stored response and its byte layout;
//! `compress` makes the codings served; `version_index/`, `sweep_list` and `retirement` hold
//! and retire versions; `inventory` is what operators see; `pending` lets shutdown wait.

pub mod compress;
pub mod disk;
pub mod entry;
mod fill;
pub mod http;
mod inflight;
mod invalidated;
mod inventory;
mod lookup;
pub mod memory;
mod pending;
mod request;
mod retirement;
pub mod shared;
mod store;
mod sweep_list;
mod tee;
mod tiers;
pub mod version_index;

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::config::CacheConfig;
use crate::stats::Stats;
use disk::{prewarm, upkeep, DiskError};
use shared::SharedTier;
use tiers::{thread_error, Tiers};

pub use entry::CachedResponse;
pub use fill::{Answered, Fill, StaleEntry};
pub use http::key::CacheKey;
pub use inventory::{EntrySummary, InNamespace, NamespaceUsage, Purge, PurgeReport, Usage};
pub use lookup::Lookup;
pub use request::{CacheRequest, Hit};
pub use tee::TeeBody;
pub use tiers::Tier;
pub use version_index::AssetSummary;

/// The cache: memory, disk and shared tiers behind one door. Cloning shares it.
#[derive(Clone)]
pub struct Cache {
    tiers: Arc<Tiers>,
}

impl Cache {
    /// Opens the cache; blocking (layout check, directory creation, temp cleanup, reading
    /// the index journal). Starts the disk writer, upkeep and pre-warming threads.
    pub fn open(config: &CacheConfig, stats: Arc<Stats>) -> Result<Cache, DiskError> {
        let (tiers, opening) = Tiers::open(config, stats)?;
        // The first process on a directory checks the index against the files before it
        // serves: a crash may have left a file the journal does not know of, or a record of
        // one it removed. That reads no bodies and only the metadata of unknown files. A lost
        // index is rebuilt in the background instead: that reads every entry's metadata.
        if !opening.shared_directory && !opening.index_lost {
            upkeep::reconcile_logged(&tiers.store);
        }
        let store = Arc::downgrade(&tiers.store);
        upkeep::start(store.clone(), opening.index_lost)
            .map_err(|source| thread_error(config, source))?;
        if config.prewarm {
            prewarm::start(store, config.memory_max_bytes, tiers.still_held())
                .map_err(|source| thread_error(config, source))?;
        }
        Ok(Cache {
            tiers: Arc::new(tiers),
        })
    }

    /// Starts the background tasks that need a tokio runtime: the version sweep, and, with a
    /// shared tier, its connection and the fleet's use reports. Once (later calls do nothing).
    pub fn start_background(&self) {
        let tiers = &self.tiers;
        if tiers.started.swap(true, Ordering::Relaxed) {
            return;
        }
        tokio::spawn(retirement::run(Arc::downgrade(tiers)));
        let news = tiers
            .news
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let (Some(shared), Some(news)) = (&tiers.shared, news) {
            shared.start();
            tokio::spawn(retirement::follow_fleet(Arc::downgrade(tiers), news));
        }
    }

    /// What to do with a request: see `Lookup`.
    pub async fn lookup(&self, request: &CacheRequest<'_>) -> Lookup {
        lookup::lookup(&self.tiers, request).await
    }

    /// The configuration the cache runs with.
    pub fn config(&self) -> &CacheConfig {
        &self.tiers.config
    }

    /// The shared tier, when configured.
    pub fn shared(&self) -> Option<&SharedTier> {
        self.tiers.shared.as_ref()
    }

    /// The entry held in memory under `key`, as it is (for inspection: no freshness is
    /// judged).
    pub fn memory_entry(&self, key: &CacheKey) -> Option<std::sync::Arc<CachedResponse>> {
        self.tiers.memory.get(key)
    }

    /// Stores an answer obtained elsewhere (an archive) as if it had just been fetched for
    /// `request`, under the same rules; `Err` says why it was not stored.
    pub async fn store_answer(
        &self,
        request: ::http::Request<()>,
        status: ::http::StatusCode,
        headers: ::http::HeaderMap,
        body: bytes::Bytes,
        policy: &crate::config::PolicyConfig,
    ) -> Result<(), http::policy::NoCacheReason> {
        self.tiers
            .put_answer(request, status, headers, body, policy)
            .await
    }

    /// Every entry on disk whose URL starts with `prefix`, read whole and checked.
    pub async fn read_entries(&self, prefix: &str) -> Vec<Arc<CachedResponse>> {
        self.tiers.read_entries(prefix).await
    }

    /// Makes `coding` of `entry`'s body in the background (once: the caller claimed it), and
    /// has the memory tier count it.
    pub fn make_coding(&self, entry: Arc<CachedResponse>, coding: compress::Coding) {
        let memory = self.tiers.memory.clone();
        tokio::task::spawn_blocking(move || {
            match coding {
                compress::Coding::Zstd => {
                    entry.stored_zstd();
                }
                coding => entry.encodings.set(
                    coding,
                    entry.body().and_then(|body| compress::encode(coding, body)),
                ),
            }
            memory.reweigh(&entry);
        });
    }

    /// `entry`'s body as it is: decoded from its stored frame if it was kept as that (the
    /// memory tier then weighs the body too). `None` when the frame does not decode to the
    /// body its metadata names: the entry is dropped from memory and disk, counted and logged,
    /// so the next request fetches it again. Decoding blocks, once per entry.
    pub fn body_of<'a>(&self, entry: &'a Arc<CachedResponse>) -> Option<&'a bytes::Bytes> {
        let decoding = !entry.body_is_at_hand();
        let body = entry.body();
        match body {
            Some(_) if decoding => self.tiers.memory.reweigh(entry),
            Some(_) => {}
            // Whoever decoded it first (a request, or the making of a coding), it is damaged.
            None => {
                self.tiers.memory.remove_stored(&entry.meta);
                let (store, found) = (self.tiers.store.clone(), entry.meta.clone());
                tokio::task::spawn_blocking(move || store.damaged(&found));
            }
        }
        body
    }

    /// Where the entry for `key` lives on disk.
    pub fn disk_path(&self, key: &CacheKey) -> std::path::PathBuf {
        self.tiers.store.tier.path_of(key)
    }

    /// Makes the disk index agree with the entry files now (the upkeep does it in the
    /// background at start). Blocking. For commands working on a directory.
    pub fn reconcile_now(&self) -> upkeep::Reconciled {
        upkeep::reconcile(&self.tiers.store)
    }

    /// Resolves once no fill is streaming and no commit is writing. For shutdown and tests.
    pub async fn settled(&self) {
        self.tiers.pending.settled().await;
    }

    /// Entries and bytes held by each tier, and the disk writer's queue.
    pub async fn usage(&self) -> Usage {
        self.tiers.usage().await
    }

    /// Entries on disk in `namespace` whose URL starts with `prefix`, at most `limit`.
    pub async fn entries(
        &self,
        prefix: &str,
        namespace: InNamespace,
        limit: usize,
    ) -> Vec<EntrySummary> {
        self.tiers.entries(prefix, namespace, limit).await
    }

    /// Entries and body bytes on disk in the namespace `name` (`default` for the default one).
    pub async fn namespace_usage(&self, name: &str) -> NamespaceUsage {
        self.tiers.namespace_usage(name).await
    }

    /// Every asset in the version index, with the bytes each held version takes on disk.
    pub async fn assets(&self) -> Vec<AssetSummary> {
        self.tiers.assets().await
    }

    /// Invalidates what a request for `url` with `headers` would be answered from: called
    /// once an unsafe request (POST, PUT, DELETE, PATCH, …) to `url` got a non-error answer
    /// (RFC 9111 §4.4).
    pub async fn invalidate(&self, url: &url::Url, headers: &::http::HeaderMap) {
        self.tiers.invalidate(url, headers).await;
    }

    /// Removes what `what` names in `namespace` from memory and disk.
    pub async fn purge(&self, what: Purge, namespace: InNamespace) -> PurgeReport {
        self.tiers.purge(what, namespace).await
    }
}
