//! Background upkeep of the disk tier, on a thread of its own, every half second:
//! learn what other processes sharing the directory did (dropping from memory what they
//! retired or purged), record which entries were used, keep the tier under `disk.max_mb` by
//! removing the least recently used entries, rebuild the index from the files when it was
//! lost, and compact the journal. Nothing here is on a request's path.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Weak;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::disk::{digest_of_path, DiskError};
use super::disk_store::{index_error, DiskStore};
use super::entry::now_ms;
use super::journal::{Digest, Removal};
use super::Inner;
use crate::file_lock::LockFile;

const TICK: Duration = Duration::from_millis(500);
/// Uses are recorded every this many ticks (and before every eviction).
const TOUCH_EVERY: u64 = 4;
/// The journal is checked for compaction every this many ticks.
const COMPACT_EVERY: u64 = 120;
/// Eviction brings usage down to this share of the cap, so it does not run for every write.
const LOW_WATER_PERCENT: u64 = 90;
/// Eviction summaries are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Starts the upkeep thread; it ends when the cache is dropped.
pub(super) fn start(cache: Weak<Inner>, rebuild: bool) -> std::io::Result<()> {
    let mut upkeep = Upkeep {
        ticks: 0,
        touched_up_to: now_ms(),
        reconcile: rebuild,
        evict_lock: None,
        evicted_since_log: (0, 0),
        last_logged: None,
    };
    std::thread::Builder::new()
        .name("cache-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            let Some(inner) = cache.upgrade() else { return };
            upkeep.tick(&inner);
        })?;
    Ok(())
}

struct Upkeep {
    ticks: u64,
    /// Uses up to this time are recorded in the index.
    touched_up_to: u64,
    /// Whether the index must be checked against the files.
    reconcile: bool,
    evict_lock: Option<LockFile>,
    evicted_since_log: (u64, u64),
    last_logged: Option<Instant>,
}

impl Upkeep {
    fn tick(&mut self, inner: &Inner) {
        self.ticks += 1;
        let store = &inner.store;
        match store.index.sync() {
            Ok(learned) => {
                if !learned.invalidated.is_empty() {
                    drop_from_memory(inner, &learned.invalidated);
                }
                if learned.lost {
                    warn!("cache index missing or unreadable; rebuilding it from the entry files");
                    self.reconcile = true;
                }
            }
            Err(e) => store.health.failed(&index_error(e)),
        }
        if self.reconcile {
            self.reconcile = false;
            reconcile_logged(store);
        }
        let over_cap = store.index.usage().1 > inner.config.disk_max_bytes;
        if over_cap || self.ticks % TOUCH_EVERY == 0 {
            self.record_uses(inner);
        }
        if over_cap {
            self.evict(inner);
        }
        if self.ticks % COMPACT_EVERY == 0 {
            if let Err(e) = store.index.compact_if_long() {
                store.health.failed(&index_error(e));
            }
        }
    }

    /// Tells the index which entries in memory were served since the last time.
    fn record_uses(&mut self, inner: &Inner) {
        let since = self.touched_up_to;
        self.touched_up_to = now_ms();
        let mut used: Vec<(Digest, u64)> = inner
            .memory
            .used_since(since)
            .into_iter()
            .map(|(key, at)| (key.digest_bytes(), at))
            .collect();
        used.append(&mut inner.take_disk_uses());
        if used.is_empty() {
            return;
        }
        if let Err(e) = inner.store.index.touch(&used) {
            inner.store.health.failed(&index_error(e));
        }
    }

    /// Removes least recently used entries until the tier is under its low-water mark. One
    /// process at a time evicts (`v1/evict.lock`), so two do not both remove for the same
    /// excess.
    fn evict(&mut self, inner: &Inner) {
        let store = &inner.store;
        if !self.hold_evict_lock(store.tier.root()) {
            return;
        }
        let target = inner.config.disk_max_bytes / 100 * LOW_WATER_PERCENT;
        let victims = store.index.victims(target);
        let digests: Vec<Digest> = victims.iter().map(|(digest, _)| *digest).collect();
        let bytes: u64 = victims.iter().map(|(_, slot)| slot.size).sum();
        store.remove(&digests, Removal::Capacity);
        if let Some(lock) = &self.evict_lock {
            let _ = lock.unlock();
        }
        store.stats.disk_evictions.add(digests.len() as u64);
        store.stats.disk_evicted_bytes.add(bytes);
        debug!(
            entries = digests.len(),
            bytes, "disk tier over its cap; evicted"
        );
        self.evicted_since_log.0 += digests.len() as u64;
        self.evicted_since_log.1 += bytes;
        if self.last_logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            let (entries, bytes) = std::mem::take(&mut self.evicted_since_log);
            self.last_logged = Some(Instant::now());
            info!(
                entries,
                bytes,
                cap_bytes = inner.config.disk_max_bytes,
                "disk tier at its cap: least recently used entries evicted"
            );
        }
    }

    fn hold_evict_lock(&mut self, root: &Path) -> bool {
        if self.evict_lock.is_none() {
            self.evict_lock = LockFile::open(&root.join("evict.lock")).ok();
        }
        self.evict_lock
            .as_ref()
            .is_some_and(|lock| lock.try_lock_exclusive().unwrap_or(false))
    }
}

fn drop_from_memory(inner: &Inner, digests: &[Digest]) {
    let doomed: HashSet<&Digest> = digests.iter().collect();
    let dropped = inner
        .memory
        .remove_matching(|entry| doomed.contains(&entry.meta.key.digest_bytes()));
    if dropped > 0 {
        debug!(
            dropped,
            "entries retired or purged by another process left memory"
        );
    }
}

/// What checking the index against the files found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Entry files the index lacked, now recorded.
    pub added: u64,
    /// Index records without a file, now removed.
    pub dropped: u64,
    /// Entry files whose metadata failed verification, removed.
    pub damaged: u64,
}

/// Reconciles, and logs what was corrected.
pub fn reconcile_logged(store: &DiskStore) {
    let started = Instant::now();
    let found = reconcile(store);
    if found != Reconciled::default() {
        let (entries, bytes) = store.index.usage();
        info!(
            added = found.added,
            dropped = found.dropped,
            damaged = found.damaged,
            entries,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "cache index checked against the entry files and corrected"
        );
    }
}

/// Makes the index agree with the entry files: files it lacks are read (metadata only) and
/// recorded, records without a file are dropped. Entries written meanwhile are left alone.
pub fn reconcile(store: &DiskStore) -> Reconciled {
    let mut found = Reconciled::default();
    let known = store.index.snapshot();
    let mut on_disk = HashSet::new();
    let mut batch = Vec::new();
    for path in store.tier.entry_paths() {
        let Some(digest) = digest_of_path(&path) else {
            continue;
        };
        on_disk.insert(digest);
        if known.contains_key(&digest) {
            continue;
        }
        match store.tier.read_meta(&path) {
            Ok((meta, size)) => batch.push((digest, size, meta.stored_at_ms)),
            Err(DiskError::Corrupt { .. }) => {
                let _ = store.tier.remove_path(&path);
                found.damaged += 1;
            }
            // Removed meanwhile, or unreadable: not recorded.
            Err(_) => continue,
        }
        if batch.len() >= 1024 {
            found.added += put(store, &mut batch);
        }
    }
    found.added += put(store, &mut batch);
    let gone: Vec<Digest> = known
        .keys()
        .filter(|digest| !on_disk.contains(*digest))
        .filter(|digest| !store.tier.path_of_digest(digest).exists())
        .copied()
        .collect();
    if !gone.is_empty() {
        found.dropped = gone.len() as u64;
        if let Err(e) = store.index.remove(&gone, Removal::Damaged, now_ms()) {
            store.health.failed(&index_error(e));
        }
    }
    found
}

fn put(store: &DiskStore, batch: &mut Vec<(Digest, u64, u64)>) -> u64 {
    let count = batch.len() as u64;
    if count == 0 {
        return 0;
    }
    let result = store.index.put(batch);
    batch.clear();
    match result {
        Ok(_) => count,
        Err(e) => {
            store.health.failed(&index_error(e));
            0
        }
    }
}
