//! Write-behind: disk writes and removals run on one thread of their own, fed by a queue, so
//! no client ever waits for a file or an fsync.
//!
//! The queue holds at most `Limits::queued` bytes of entries, which a disk drains in well under
//! a second: that is the window in which a completed download can be lost to a crash. When it
//! is full, a new entry waits for room (its fill is over; only the background task that
//! stores it waits), so a burst of new assets is written at the disk's pace instead of being
//! dropped. Only when more than `Limits::waiting` bytes are already waiting, or the disk does
//! not make room within `MAX_WAIT`, is an entry not written (it stays in memory) and counted.
//! Both are held beside the memory tier, which may already have let go of those entries, so
//! both scale with it: a small memory tier is asked for because memory is short.
//! Fills that start while the queue is nearly full do not come here at all: they write their
//! body to disk as it arrives (see `spill`), at the pace the disk takes it. Removals are
//! never refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::cache::disk::journal::Removal;
use crate::cache::disk::neighbours::NeighbourLock;
use crate::cache::disk::{DiskStore, Wanted};
use crate::cache::entry::CachedResponse;
use crate::cache::http::key::CacheKey;
use crate::cache::pending::PendingGuard;

const MIB: u64 = 1024 * 1024;

/// What the writer may hold in memory: with the memory tier's bound, the most its entries can
/// add to resident memory when the tier lets go of them before they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of entries queued for writing, at most.
    pub queued: u64,
    /// Bytes of entries waiting for room in the queue, at most.
    pub waiting: u64,
}

impl Limits {
    /// The limits beside a memory tier of `memory_max_bytes`: a sixteenth of it queued and
    /// three sixteenths waiting, at least 1 + 3 MiB (an entry larger than the queue takes all
    /// of it) and at most 16 + 48 MiB (a second of a fast disk's writes, and a burst's worth).
    pub fn beside(memory_max_bytes: u64) -> Limits {
        Limits {
            queued: (memory_max_bytes / 16).clamp(MIB, 16 * MIB),
            waiting: (memory_max_bytes / 16 * 3).clamp(3 * MIB, 48 * MIB),
        }
    }
}

/// How long an entry waits for room before it is given up: a disk that slow is failing.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// The queue's room is counted in units of this many bytes (a semaphore's permits).
const ROOM_UNIT: u64 = 1024;

enum Job {
    /// An entry, with the room it takes in the queue and its fill's lock among neighbours,
    /// both given back once it is written.
    Store {
        entry: Arc<CachedResponse>,
        /// Its bytes as counted when queued (writing may add a coding to it).
        size: u64,
        _room: OwnedSemaphorePermit,
        _neighbour_lock: Option<NeighbourLock>,
    },
    Remove(Vec<CacheKey>, Removal),
}

struct Queued {
    job: Job,
    /// Keeps the cache unsettled until the job is done.
    _pending: PendingGuard,
}

/// Why an entry was not queued for writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    /// Too many bytes were already waiting for room.
    TooMuchWaiting,
    /// The disk did not make room in time.
    TimedOut,
    /// The writer has stopped.
    Closed,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Queued>,
    stores: usize,
    bytes: u64,
    closed: bool,
}

struct Queue {
    state: Mutex<State>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer thread's queue; the thread ends when this is dropped and the queue is empty.
pub struct DiskWriter {
    queue: Arc<Queue>,
    /// What it may hold.
    limits: Limits,
    /// The queue's free room, in `ROOM_UNIT`s.
    room: Arc<Semaphore>,
    /// Bytes of entries waiting for room.
    waiting: AtomicU64,
}

impl DiskWriter {
    /// Starts the writer thread over `store`, holding at most `limits`; a written entry
    /// `wanted` refuses is removed.
    pub fn start(
        store: Arc<DiskStore>,
        wanted: Wanted,
        limits: Limits,
    ) -> std::io::Result<DiskWriter> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
        });
        let worker = queue.clone();
        std::thread::Builder::new()
            .name("cache-disk-writer".into())
            .spawn(move || run(&worker, &store, &wanted))?;
        Ok(DiskWriter {
            queue,
            limits,
            room: Arc::new(Semaphore::new(room_units(limits.queued) as usize)),
            waiting: AtomicU64::new(0),
        })
    }

    /// Queues `entry` for writing, waiting for room when the queue is full.
    pub async fn store(
        &self,
        entry: Arc<CachedResponse>,
        neighbour_lock: Option<NeighbourLock>,
        pending: PendingGuard,
    ) -> Result<(), NotQueued> {
        let size = entry.held_bytes();
        // An entry larger than the whole queue takes all of it.
        let units = room_units(size).min(room_units(self.limits.queued));
        let room = match self.room.clone().try_acquire_many_owned(units) {
            Ok(room) => room,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(NotQueued::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let waiting = self.waiting.fetch_add(size, Ordering::Relaxed);
                let room = if waiting + size > self.limits.waiting {
                    Err(NotQueued::TooMuchWaiting)
                } else {
                    let acquired = self.room.clone().acquire_many_owned(units);
                    match tokio::time::timeout(MAX_WAIT, acquired).await {
                        Ok(Ok(room)) => Ok(room),
                        Ok(Err(_)) => Err(NotQueued::Closed),
                        Err(_) => Err(NotQueued::TimedOut),
                    }
                };
                self.waiting.fetch_sub(size, Ordering::Relaxed);
                room?
            }
        };
        let mut state = self.queue.lock();
        state.stores += 1;
        state.bytes += size;
        state.jobs.push_back(Queued {
            job: Job::Store {
                entry,
                size,
                _room: room,
                _neighbour_lock: neighbour_lock,
            },
            _pending: pending,
        });
        drop(state);
        self.queue.ready.notify_one();
        Ok(())
    }

    /// Queues the removal of `keys`' entries. Never refused.
    pub fn remove(&self, keys: Vec<CacheKey>, why: Removal, pending: PendingGuard) {
        if keys.is_empty() {
            return;
        }
        self.queue.lock().jobs.push_back(Queued {
            job: Job::Remove(keys, why),
            _pending: pending,
        });
        self.queue.ready.notify_one();
    }

    /// Whether less than a quarter of the queue is free: a fill starting now had better
    /// write its body to disk as it arrives (spill) than wait for the queue.
    pub fn is_congested(&self) -> bool {
        self.room.available_permits() < room_units(self.limits.queued) as usize / 4
    }

    /// Entries and bytes queued to be written, and bytes waiting for room.
    pub fn depth(&self) -> (usize, u64, u64) {
        let state = self.queue.lock();
        (
            state.stores,
            state.bytes,
            self.waiting.load(Ordering::Relaxed),
        )
    }
}

/// The room `bytes` take in the queue, in `ROOM_UNIT`s (at least one: an empty body is an
/// entry too).
fn room_units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(ROOM_UNIT).max(1)).unwrap_or(u32::MAX)
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        self.room.close();
        self.queue.lock().closed = true;
        self.queue.ready.notify_one();
    }
}

fn run(queue: &Queue, store: &DiskStore, wanted: &Wanted) {
    loop {
        let mut state = queue.lock();
        let queued = loop {
            if let Some(queued) = state.jobs.pop_front() {
                break queued;
            }
            if state.closed {
                return;
            }
            state = queue
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        };
        drop(state);
        // A panic in one job must not stop every later write.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &queued.job {
            Job::Store { entry, .. } => {
                store.write(entry, wanted);
                // Writing may have made its zstd frame: the memory tier counts it now.
                store.memory.reweigh(entry);
            }
            Job::Remove(keys, why) => store.remove_keys(keys, *why),
        }));
        if done.is_err() {
            warn!("disk write failed unexpectedly; continuing with the next");
        }
        if let Job::Store { size, .. } = &queued.job {
            let mut state = queue.lock();
            state.stores -= 1;
            state.bytes -= size;
        }
        // The job's room and its fill's lock are given back here, once it is written.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_writer_holds_scales_with_the_memory_tier() {
        let limits = |memory_mib: u64| {
            let limits = Limits::beside(memory_mib * MIB);
            (limits.queued / MIB, limits.waiting / MIB)
        };
        assert_eq!(limits(4), (1, 3), "never less than one entry's room");
        assert_eq!(limits(64), (4, 12));
        assert_eq!(limits(256), (16, 48));
        assert_eq!(
            limits(64 * 1024),
            (16, 48),
            "a disk drains no more in a second"
        );
    }
}
