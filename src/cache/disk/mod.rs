//! The disk tier as the rest of the cache uses it: the entry files, their index and the
//! tier's health together, so that every write and removal is recorded in the index and
//! every failure is counted and reported in one place. Blocking.

pub mod eviction;
pub mod files;
pub mod health;
pub mod index;
pub mod journal;
pub mod layout;
pub mod listing;
pub mod neighbours;
pub mod prewarm;
pub mod reading;
pub mod spill;
pub mod upkeep;
pub mod vary_store;
pub mod verify;
pub mod writer;

pub use files::{DiskError, DiskTier};
pub use listing::{digest_of_path, files_below, symlinks_below, temp_files};
pub use reading::ReadNow;

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::disk::eviction::Eviction;
use crate::cache::disk::health::DiskHealth;
use crate::cache::disk::index::DiskIndex;
use crate::cache::disk::journal::{Digest, Removal};
use crate::cache::disk::spill::Spilled;
use crate::cache::entry::{now_ms, CachedResponse, EntryMeta};
use crate::cache::http::key::CacheKey;
use crate::cache::memory::MemoryTier;
use crate::stats::Stats;

/// Whether an entry is still wanted once written (the version index says whether its version
/// is still held). Given by the cache, which knows what the disk tier does not.
pub type Wanted = Arc<dyn Fn(&EntryMeta) -> bool + Send + Sync>;

/// Entry files, index and health.
pub struct DiskStore {
    /// The entry files.
    pub tier: DiskTier,
    /// What they are, their sizes and last uses.
    pub index: DiskIndex,
    /// Whether the disk works.
    pub health: DiskHealth,
    /// The cap, kept by removing least recently used entries.
    pub eviction: Eviction,
    /// The memory tier: its entries carry when they were last served, and what other
    /// processes removed from disk leaves it.
    pub memory: MemoryTier,
    /// Uses not yet recorded in the index.
    uses: Mutex<Uses>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Store compressible bodies zstd-compressed.
    compress: bool,
    /// Turns to write a spilled body's entry file: see `SPILLED_WRITES_AT_ONCE`.
    spilled_writes: Arc<Semaphore>,
}

/// Spilled bodies whose entry files are written at once. Each may hold a zstd compressor of a
/// few MiB (its window as large as the body, up to 2 MiB, and its tables); fills spill while
/// the disk is behind, when more writers at once would not make it faster anyway.
const SPILLED_WRITES_AT_ONCE: usize = 2;

impl DiskStore {
    /// The tier with its index, counting into `stats`, capped at `max_bytes`.
    pub fn new(
        tier: DiskTier,
        index: DiskIndex,
        memory: MemoryTier,
        stats: Arc<Stats>,
        max_bytes: u64,
    ) -> DiskStore {
        DiskStore {
            tier,
            index,
            health: DiskHealth::new(stats.clone()),
            eviction: Eviction::new(max_bytes),
            memory,
            uses: Mutex::new(Uses {
                recorded_up_to: now_ms(),
                from_disk: Vec::new(),
            }),
            stats,
            compress: false,
            spilled_writes: Arc::new(Semaphore::new(SPILLED_WRITES_AT_ONCE)),
        }
    }

    /// Waits for a turn to write a spilled body's entry file; the turn ends when the permit
    /// is dropped.
    pub async fn spilled_write_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.spilled_writes.clone().acquire_owned().await.ok()
    }

    /// Stores compressible bodies zstd-compressed from now on (`disk.compress`).
    pub fn compressing(mut self, compress: bool) -> DiskStore {
        self.compress = compress;
        self
    }

    /// Tries the fill lock of `key` among the processes sharing the directory: `None` when
    /// the lock cannot be had (the fill goes on alone). Taken even when no other process has
    /// the directory open now: one may start during the fill, and a lock costs a cold fetch
    /// a few system calls.
    pub fn try_neighbours_lock(&self, key: &CacheKey) -> Option<neighbours::Attempt> {
        neighbours::try_lock(self.tier.root(), &key.digest_bytes())
            .map_err(|e| tracing::debug!(error = %e, "fill lock unavailable; fetching alone"))
            .ok()
    }

    /// Notes that an entry was served from disk (it may leave memory before its use is
    /// recorded).
    pub fn note_disk_use(&self, digest: Digest, at_ms: u64) {
        self.uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .from_disk
            .push((digest, at_ms));
    }

    /// Tells the index which entries were served since the last time: those in memory by
    /// their stamps, those read from disk from the notes. Called periodically and before
    /// every eviction, so recency costs the hot path no disk write.
    pub fn record_uses(&self) {
        let mut uses = self.uses.lock().unwrap_or_else(PoisonError::into_inner);
        let since = std::mem::replace(&mut uses.recorded_up_to, now_ms());
        let mut used = std::mem::take(&mut uses.from_disk);
        drop(uses);
        used.extend(
            self.memory
                .used_since(since)
                .into_iter()
                .map(|(key, at)| (key.digest_bytes(), at)),
        );
        if used.is_empty() {
            return;
        }
        if let Err(e) = self.index.touch(&used) {
            self.health.failed(&index_error(e));
        }
    }

    /// Writes `entry` and records it; a failure is reported and the entry stays in memory
    /// only. An entry `wanted` no longer accepts once written is removed again: its version
    /// may have retired, its file removed by another process, while the write waited.
    pub fn write(&self, entry: &CachedResponse, wanted: &Wanted) {
        self.write_file(entry);
        if !wanted(&entry.meta) {
            self.remove_keys(std::slice::from_ref(&entry.meta.key), Removal::OlderVersion);
        }
    }

    fn write_file(&self, entry: &CachedResponse) {
        let body_len = entry.meta.body_len;
        // Compressed here, on the writer's thread: never on a request's path.
        let frame_len = (self.compress && entry.meta.is_compressible())
            .then(|| entry.stored_zstd())
            .flatten()
            .map(|frame| frame.len() as u64);
        self.eviction.make_room(self, frame_len.unwrap_or(body_len));
        let size = match self.tier.write(entry) {
            Ok(size) => size,
            Err(e) => return self.health.failed(&e),
        };
        self.stats.disk_writes.inc();
        if let Some(frame_len) = frame_len {
            self.stats.disk_compressed_writes.inc();
            self.stats
                .disk_bytes_saved_by_compression
                .add(body_len.saturating_sub(frame_len));
        }
        let digest = entry.meta.key.digest_bytes();
        match self.index.put(&[(digest, size, now_ms())]) {
            Ok(_) => self.health.succeeded(),
            Err(e) => self.health.failed(&index_error(e)),
        }
    }

    /// Writes the entry of `meta` with the body a fill spilled, and records it; returns the
    /// entry file's path, and with `keep_frame` the zstd frame its body went as, if it did.
    pub fn write_spilled(
        &self,
        meta: &EntryMeta,
        spilled: &mut Spilled,
        keep_frame: bool,
    ) -> Result<(std::path::PathBuf, Option<bytes::Bytes>), DiskError> {
        let compress = self.compress && meta.is_compressible();
        self.eviction.make_room(self, meta.body_len);
        let written =
            self.tier
                .write_from(meta, spilled.file.as_file_mut(), compress, keep_frame)?;
        self.stats.disk_writes.inc();
        if written.compressed {
            self.stats.disk_compressed_writes.inc();
            self.stats
                .disk_bytes_saved_by_compression
                .add(meta.body_len.saturating_sub(written.size));
        }
        match self
            .index
            .put(&[(meta.key.digest_bytes(), written.size, now_ms())])
        {
            Ok(_) => self.health.succeeded(),
            Err(e) => self.health.failed(&index_error(e)),
        }
        Ok((written.path, written.frame))
    }

    /// Whether the index knows an entry file for `key`.
    pub fn holds(&self, key: &CacheKey) -> bool {
        self.index.get(&key.digest_bytes()).is_some()
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

    /// The entry for `key` if it can be read without waiting for the disk (see
    /// [`DiskTier::read_now`]); else `Later`, for [`DiskStore::read`].
    pub fn read_now(&self, key: &CacheKey) -> ReadNow<Option<CachedResponse>> {
        self.tier.read_now(key)
    }

    /// Removes the entry `found` names, found damaged after it was read (its frame does not
    /// decode to its body), and reports it like damage found by a read. A copy stored under
    /// its key since (the fill that the damage led to, done first) is another entry and stays.
    pub fn damaged(&self, found: &EntryMeta) {
        let path = self.tier.path_of(&found.key);
        if let Ok((now, _)) = self.tier.read_meta(&path) {
            if (now.stored_at_ms, now.body_xxh3) != (found.stored_at_ms, found.body_xxh3) {
                return;
            }
        }
        self.remove_keys(std::slice::from_ref(&found.key), Removal::Damaged);
        self.health.failed(&DiskError::Corrupt {
            path,
            reason: crate::cache::entry::CorruptEntry::Body,
        });
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

/// Uses waiting to be recorded.
struct Uses {
    /// Memory uses up to this time are recorded.
    recorded_up_to: u64,
    /// Disk reads since then.
    from_disk: Vec<(Digest, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Lifetime;

    fn store_in(dir: &std::path::Path) -> DiskStore {
        let (tier, _) = DiskTier::open(dir).expect("tier");
        let (index, _) = DiskIndex::open(tier.root()).expect("index");
        let memory = MemoryTier::new(0, std::time::Duration::from_secs(1));
        DiskStore::new(tier, index, memory, Arc::default(), u64::MAX)
    }

    #[test]
    fn an_entry_read_from_disk_counts_the_buffer_it_keeps() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_in(dir.path());
        // Below and above the size from which read buffers are reused (and rounded up).
        for body_len in [3_000, 300_000] {
            let url = url::Url::parse(&format!("https://a.test/{body_len}.bin?v=1")).expect("url");
            let key = CacheKey::new(&url, &http::HeaderMap::new());
            let body = bytes::Bytes::from(vec![7u8; body_len]);
            let meta = EntryMeta::new(
                key.clone(),
                http::StatusCode::OK,
                &http::HeaderMap::new(),
                Lifetime::Pinned { ttl_secs: 60 },
                std::time::SystemTime::now(),
                &body,
            );
            let file_len = store
                .tier
                .write(&CachedResponse::new(meta, body))
                .expect("write");
            let read = store.tier.read(&key).expect("read").expect("the entry");
            let buffer = if file_len < reading::POOLED_FROM {
                file_len
            } else {
                file_len.div_ceil(reading::GRAIN as u64) * reading::GRAIN as u64
            };
            assert_eq!(read.held_bytes(), buffer, "{body_len}-byte body");
        }
    }

    #[test]
    fn an_entry_found_damaged_is_removed_but_not_a_copy_stored_since() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_in(dir.path());
        let url = url::Url::parse("https://a.test/app.js?v=1").expect("url");
        let key = CacheKey::new(&url, &http::HeaderMap::new());
        let entry = |body: &'static [u8], at_secs: u64| {
            let body = bytes::Bytes::from_static(body);
            let meta = EntryMeta::new(
                key.clone(),
                http::StatusCode::OK,
                &http::HeaderMap::new(),
                Lifetime::Pinned { ttl_secs: 60 },
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(at_secs),
                &body,
            );
            CachedResponse::new(meta, body)
        };
        let (damaged, refetched) = (entry(b"first copy", 1_000), entry(b"second copy", 1_001));
        store.tier.write(&damaged).expect("write");
        store.tier.write(&refetched).expect("write again");
        // The damage found in the first copy is reported after the second was stored.
        store.damaged(&damaged.meta);
        let held = store.tier.read(&key).expect("read").expect("still held");
        assert_eq!(held.body().map(|b| &b[..]), Some(&b"second copy"[..]));
        store.damaged(&refetched.meta);
        assert!(store.tier.read(&key).expect("read").is_none());
    }

    #[tokio::test]
    async fn spilled_bodies_take_turns_to_be_written() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_in(dir.path());
        let mut turns = Vec::new();
        for _ in 0..SPILLED_WRITES_AT_ONCE {
            turns.push(store.spilled_write_turn().await.expect("a turn"));
        }
        let one_more = store.spilled_write_turn();
        tokio::pin!(one_more);
        let now = tokio::time::timeout(std::time::Duration::ZERO, &mut one_more).await;
        assert!(now.is_err(), "one more writer waits");
        drop(turns);
        assert!(one_more.await.is_some(), "its turn comes once one is done");
    }
}
