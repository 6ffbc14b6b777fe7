//! Background upkeep of the disk tier, on a thread of its own, every half second:
//! learn what other processes sharing the directory did (dropping from memory what they
//! retired or purged), record which entries were used, evict when other processes pushed the
//! tier over `disk.max_mb`, rebuild the index from the files when it was
//! lost, and compact the journal. Nothing here is on a request's path.

use std::collections::HashSet;
use std::sync::Weak;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::cache::disk::journal::{Digest, Removal};
use crate::cache::disk::{digest_of_path, DiskError};
use crate::cache::disk::{index_error, DiskStore};
use crate::cache::entry::now_ms;

const TICK: Duration = Duration::from_millis(500);
/// Uses are recorded every this many ticks (and before every eviction).
const TOUCH_EVERY: u64 = 4;
/// The journal is checked for compaction every this many ticks.
const COMPACT_EVERY: u64 = 120;

/// Starts the upkeep thread over `store`; it ends when the store is dropped.
pub fn start(store: Weak<DiskStore>, rebuild: bool) -> std::io::Result<()> {
    let mut upkeep = Upkeep {
        ticks: 0,
        reconcile: rebuild,
    };
    std::thread::Builder::new()
        .name("cache-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            let Some(store) = store.upgrade() else { return };
            upkeep.tick(&store);
        })?;
    Ok(())
}

struct Upkeep {
    ticks: u64,
    /// Whether the index must be checked against the files.
    reconcile: bool,
}

impl Upkeep {
    fn tick(&mut self, store: &DiskStore) {
        self.ticks += 1;
        match store.index.sync() {
            Ok(learned) => {
                if !learned.invalidated.is_empty() {
                    drop_from_memory(store, &learned.invalidated);
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
        let over_cap = store.index.usage().1 > store.eviction.max_bytes();
        if over_cap || self.ticks.is_multiple_of(TOUCH_EVERY) {
            store.record_uses();
        }
        if over_cap {
            store.eviction.make_room(store, 0);
        }
        if self.ticks.is_multiple_of(COMPACT_EVERY) {
            if let Err(e) = store.index.compact_if_long() {
                store.health.failed(&index_error(e));
            }
        }
    }
}

fn drop_from_memory(store: &DiskStore, digests: &[Digest]) {
    let doomed: HashSet<&Digest> = digests.iter().collect();
    let dropped = store
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
