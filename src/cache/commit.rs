//! Putting an entry in, the one way every fetched body enters the cache: a complete body
//! from memory (`commit`), or a body a fill spilled to a temp file (`commit_spilled`). Either
//! way the entry is built, its version held in the version index (which may retire other
//! versions), it is kept in memory (large spilled bodies stay on disk only), written to disk,
//! and handed to the shared tier — and the requests waiting for the fill are woken as soon as
//! some tier can answer them.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;
use tracing::{debug, info, warn};
use url::Url;

use crate::cache::disk::journal::Removal;
use crate::cache::disk::spill::Spilled;
use crate::cache::disk::DiskError;
use crate::cache::entry::{CachedResponse, EntryMeta, PrefetchMark};
use crate::cache::http::content::{self, ContentKind};
use crate::cache::http::key::CacheKey;
use crate::cache::http::policy;
use crate::cache::http::vary;
use crate::cache::http::version::{AssetId, Version};
use crate::cache::inflight::{FillOutcome, FillPermit};
use crate::cache::version_index::{Outcome, Use};
use crate::cache::{Cache, FillPlan, PendingGuard};

/// Spilled bodies up to this share of the memory tier are kept in memory too; larger ones are
/// served from disk.
const MEMORY_SHARE_OF_SPILLED: u64 = 8;

impl Cache {
    /// Stores a complete body in the background: memory (followers are woken), version
    /// index, then the disk writer's queue. The caller never waits for it.
    pub fn commit(&self, permit: FillPermit, fill: FillPlan, body: Bytes, guard: PendingGuard) {
        let cache = self.clone();
        tokio::spawn(async move {
            cache.store(permit, fill, body).await;
            drop(guard);
        });
    }

    /// Builds the entry of a fetched body and keeps it (`keep`), then hands it to the
    /// shared tier with the fleet's fill lock.
    async fn store(&self, permit: FillPermit, fill: FillPlan, body: Bytes) {
        let meta = self
            .entry_meta(
                &permit,
                &fill,
                body.len() as u64,
                xxhash_rust::xxh3::xxh3_64(&body),
            )
            .await;
        let mut entry = CachedResponse::new(meta, body);
        entry.prefetched = self.mark_prefetched(fill.prefetched, entry.body.len() as u64);
        let entry = Arc::new(entry);
        self.keep(permit, entry.clone()).await;
        if let Some(shared) = &self.inner.shared {
            let ttl = policy::time_left(&entry.meta, SystemTime::now());
            shared.put(entry, ttl, fill.fleet_lock);
        }
    }

    /// Stores a body a fill spilled to a temp file, in the background: the entry file is
    /// built from it (compressed when that pays), then memory (for a body small enough),
    /// version index and shared tier; the followers are woken once the file is in place.
    pub fn commit_spilled(
        &self,
        permit: FillPermit,
        fill: FillPlan,
        spilled: Spilled,
        guard: PendingGuard,
    ) {
        let cache = self.clone();
        tokio::spawn(async move {
            cache.store_spilled(permit, fill, spilled).await;
            drop(guard);
        });
    }

    async fn store_spilled(&self, permit: FillPermit, fill: FillPlan, spilled: Spilled) {
        let meta = self
            .entry_meta(&permit, &fill, spilled.len, spilled.xxh3)
            .await;
        let in_memory = spilled.len <= self.inner.config.memory_max_bytes / MEMORY_SHARE_OF_SPILLED;
        let store = self.inner.store.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut spilled = spilled;
            let path = store.write_spilled(&meta, &mut spilled)?;
            let body = if in_memory {
                Some(read_all(&mut spilled)?)
            } else {
                None
            };
            Ok::<_, DiskError>((meta, path, body))
        })
        .await;
        let (meta, path, body) = match written {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => return self.inner.store.health.failed(&e),
            Err(e) => return warn!(error = %e, "storing a spilled body failed"),
        };
        let mark = self.mark_prefetched(fill.prefetched, meta.body_len);
        let entry = body.map(|body| {
            let mut entry = CachedResponse::new(meta.clone(), body);
            entry.prefetched = mark;
            Arc::new(entry)
        });
        if let Some(entry) = &entry {
            self.inner.memory.insert(entry.clone());
        }
        permit.complete(FillOutcome::Stored);
        self.hold_version(&meta).await;
        self.inner.stats.stored.inc();
        if let Some(shared) = &self.inner.shared {
            let ttl = policy::time_left(&meta, SystemTime::now());
            shared.put_file(&meta.key, path, ttl, fill.fleet_lock);
        }
    }

    /// A spill that could not be finished (disk full, unwritable): counted, not stored.
    pub fn spill_failed(&self, error: &std::io::Error) {
        self.inner.stats.disk_errors.inc();
        debug!(error = %error, "a spilled body could not be finished; not stored");
    }

    /// Where fills spill their bodies: the disk tier's own directory, so that a crash leaves
    /// nothing behind that the next start does not clean.
    pub fn spill_dir(&self) -> std::path::PathBuf {
        self.inner.store.tier.root().to_owned()
    }

    /// The metadata of a fetched body of `len` bytes hashing to `xxh3`.
    async fn entry_meta(
        &self,
        permit: &FillPermit,
        fill: &FillPlan,
        len: u64,
        xxh3: u64,
    ) -> EntryMeta {
        let key = self.variant_key(permit.key(), fill).await;
        let versioned = fill.plan.versioned.clone().map(|v| (v.asset, v.version));
        let mut meta = EntryMeta::for_body(
            key,
            fill.status,
            &fill.headers,
            fill.lifetime.clone(),
            SystemTime::now(),
            len,
            xxh3,
        );
        (meta.asset, meta.version) = versioned.unzip();
        if let Some(previous) = &fill.previous {
            self.note_content_change(&previous.meta, &meta);
        }
        meta
    }

    /// Counts a prefetched entry of `bytes` and returns its mark.
    fn mark_prefetched(
        &self,
        mark: Option<Arc<PrefetchMark>>,
        bytes: u64,
    ) -> Option<Arc<PrefetchMark>> {
        let mark = mark?;
        mark.set_bytes(bytes);
        self.inner.stats.prefetched.inc();
        self.inner.stats.prefetched_bytes.add(bytes);
        Some(mark)
    }

    /// Keeps an entry: memory first, so waiting requests are answered at once; then its
    /// version in the version index; then the disk writer's queue.
    pub(super) async fn keep(&self, permit: FillPermit, entry: Arc<CachedResponse>) {
        self.inner.memory.insert(entry.clone());
        permit.complete(FillOutcome::Stored);
        self.hold_version(&entry.meta).await;
        self.inner.stats.stored.inc();
        self.queue_write(entry);
    }

    /// For a version of an asset, holds it in the version index, which may retire other
    /// versions (their entries leave every tier). A 404 for a new version holds nothing: it
    /// must not retire the version that works.
    async fn hold_version(&self, meta: &EntryMeta) {
        let (Some(asset), Some(version)) = (&meta.asset, &meta.version) else {
            return;
        };
        if meta.status != StatusCode::OK.as_u16() {
            return;
        }
        match self.admit(asset, version, &meta.key).await {
            Ok(outcome) => self.apply_retirement(asset, &outcome),
            Err(e) => {
                self.inner.stats.disk_errors.inc();
                warn!(error = %e, key = %meta.key, "version index update failed; storing without it");
            }
        }
        self.inner.retirement.used_here(asset);
    }

    /// Drops the entries of retired versions from memory, has the writer remove them from
    /// disk and the shared tier forget them, and counts and logs what the retirement means.
    pub(super) fn apply_retirement(&self, asset: &AssetId, outcome: &Outcome) {
        let inner = &self.inner;
        let keys = outcome.retired_keys();
        for key in &keys {
            inner.memory.remove(key);
        }
        inner.stats.version_evictions.add(keys.len() as u64);
        for retired in &outcome.retired {
            if retired.one_off {
                inner.stats.one_off_versions.inc();
            }
            debug!(asset = %asset, version = %retired.version, one_off = retired.one_off, "version retired");
        }
        if let Some((old, new)) = &outcome.took_over {
            self.note_version_change(asset, old, new, "asset version changed");
        }
        if keys.is_empty() {
            return;
        }
        if let Some(shared) = &inner.shared {
            shared.remove(&keys);
        }
        inner
            .writer
            .remove(keys, Removal::OlderVersion, self.pending());
    }

    /// Counts, shows and logs a new version of an asset.
    fn note_version_change(&self, asset: &AssetId, old: &Version, new: &Version, what: &str) {
        let stats = &self.inner.stats;
        stats.version_changes.inc();
        stats
            .activity
            .version_changed(asset.as_str(), old.as_str(), new.as_str());
        info!(asset = %asset, old = %old, new = %new, "{what}");
    }

    async fn admit(
        &self,
        asset: &AssetId,
        version: &Version,
        key: &CacheKey,
    ) -> Result<Outcome, DiskError> {
        let (cache, asset, version, key) =
            (self.clone(), asset.clone(), version.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            let (store, memory) = (&cache.inner.store, &cache.inner.memory);
            // Memory hits reach the disk index in batches; the entries' own stamps are newer.
            let last_use = |key: &CacheKey| {
                let slot = store.index.get(&key.digest_bytes());
                let stamp = memory.get(key).map(|entry| entry.used.clone());
                if slot.is_none() && stamp.is_none() {
                    return None;
                }
                Some(Use {
                    at_ms: slot
                        .map_or(0, |s| s.used_ms)
                        .max(stamp.as_ref().map_or(0, |s| s.get())),
                    count: slot
                        .map_or(0, |s| s.uses)
                        .max(stamp.map_or(0, |s| s.count())),
                })
            };
            cache
                .inner
                .versions
                .admit(&asset, &version, &key, SystemTime::now(), &last_use)
        })
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
        let shared = policy::shared_across_cookies(&fill.plan, &fill.headers);
        let key = CacheKey::for_request(&url, fill.request.headers(), &names, shared);
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
        // Versioned assets change by URL; data answers are not assets at all.
        if new.version.is_some() || content::kind_of(new.header_map()) == ContentKind::Data {
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

/// The whole of a spilled body, read back into memory.
fn read_all(spilled: &mut Spilled) -> Result<Bytes, DiskError> {
    use std::io::{Read, Seek};
    let path = spilled.file.path().to_owned();
    let io = |source| DiskError::Io {
        op: "read back",
        path: path.clone(),
        source,
    };
    let file = spilled.file.as_file_mut();
    file.rewind().map_err(io)?;
    let mut body = Vec::with_capacity(usize::try_from(spilled.len).unwrap_or(0));
    file.read_to_end(&mut body).map_err(io)?;
    Ok(Bytes::from(body))
}
