//! Keeping the disk tier under `disk.max_mb`: the least recently used entries are removed
//! until usage is at the low-water mark. The writer makes room before each write, so usage
//! stays under the cap even under sustained writes; the upkeep also evicts when other
//! processes sharing the directory pushed usage over. One process evicts at a time
//! (`v1/evict.lock`), so two do not both remove for the same excess.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::cache::disk::journal::{Digest, Removal};
use crate::cache::disk::DiskStore;
use crate::file_lock::LockFile;

/// Eviction brings usage down to this share of the cap, so it does not run for every write.
const LOW_WATER_PERCENT: u64 = 90;
/// Eviction summaries are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The cap and the state of eviction.
pub struct Eviction {
    max_bytes: u64,
    lock: Mutex<Option<LockFile>>,
    log: Mutex<Summary>,
}

#[derive(Default)]
struct Summary {
    last_logged: Option<Instant>,
    entries: u64,
    bytes: u64,
}

impl Eviction {
    /// Eviction for a tier of at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Eviction {
        Eviction {
            max_bytes,
            lock: Mutex::new(None),
            log: Mutex::new(Summary::default()),
        }
    }

    /// The cap.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Removes least recently used entries when usage plus `incoming` bytes would pass the
    /// cap. Returns how many entries it removed.
    pub fn make_room(&self, store: &DiskStore, incoming: u64) -> usize {
        let (_, used) = store.index.usage();
        if used.saturating_add(incoming) <= self.max_bytes {
            return 0;
        }
        let mut lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if lock.is_none() {
            *lock = LockFile::open(&store.tier.root().join("evict.lock")).ok();
        }
        let Some(held) = lock.as_ref() else { return 0 };
        if !held.try_lock_exclusive().unwrap_or(false) {
            return 0;
        }
        // Entries served just now must not look idle.
        store.record_uses();
        let target = (self.max_bytes / 100 * LOW_WATER_PERCENT).saturating_sub(incoming);
        let victims = store.index.victims(target);
        let digests: Vec<Digest> = victims.iter().map(|(digest, _)| *digest).collect();
        let bytes: u64 = victims.iter().map(|(_, slot)| slot.size).sum();
        store.remove(&digests, Removal::Capacity);
        let _ = held.unlock();
        drop(lock);
        store.stats.disk_evictions.add(digests.len() as u64);
        store.stats.disk_evicted_bytes.add(bytes);
        self.report(digests.len() as u64, bytes);
        digests.len()
    }

    fn report(&self, entries: u64, bytes: u64) {
        debug!(entries, bytes, "disk tier at its cap; evicted");
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.entries += entries;
        log.bytes += bytes;
        if log.last_logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        log.last_logged = Some(Instant::now());
        let (entries, bytes) = (
            std::mem::take(&mut log.entries),
            std::mem::take(&mut log.bytes),
        );
        drop(log);
        info!(
            entries,
            bytes,
            cap_bytes = self.max_bytes,
            "disk tier at its cap: least recently used entries evicted"
        );
    }
}
