//! Write-behind: disk writes and removals run on one thread of their own, fed by a bounded
//! queue, so no client ever waits for a file or an fsync. When the queue is full a new entry
//! is not written (it stays in memory) and is counted; removals are never dropped.
//!
//! The queue holds at most `MAX_QUEUED_STORES` entries and `MAX_QUEUED_BYTES` of them, which a
//! disk drains in well under a second: that is the window in which a completed download can
//! be lost to a crash.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tracing::warn;

use crate::cache::disk::journal::Removal;
use crate::cache::disk::{DiskStore, Wanted};
use crate::cache::entry::CachedResponse;
use crate::cache::http::key::CacheKey;
use crate::cache::pending::PendingGuard;

/// Entries waiting to be written, at most.
pub const MAX_QUEUED_STORES: usize = 64;
/// Bytes of entries waiting to be written, at most.
pub const MAX_QUEUED_BYTES: u64 = 16 * 1024 * 1024;

enum Job {
    Store(Arc<CachedResponse>),
    Remove(Vec<CacheKey>, Removal),
}

struct Queued {
    job: Job,
    /// Keeps the cache unsettled until the job is done.
    _pending: PendingGuard,
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
}

impl DiskWriter {
    /// Starts the writer thread over `store`; a written entry `wanted` refuses is removed.
    pub fn start(store: Arc<DiskStore>, wanted: Wanted) -> std::io::Result<DiskWriter> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
        });
        let worker = queue.clone();
        std::thread::Builder::new()
            .name("cache-disk-writer".into())
            .spawn(move || run(&worker, &store, &wanted))?;
        Ok(DiskWriter { queue })
    }

    /// Queues `entry` for writing; `false` (nothing queued) when the queue is full.
    pub fn store(&self, entry: Arc<CachedResponse>, pending: PendingGuard) -> bool {
        let size = entry.body.len() as u64;
        let mut state = self.queue.lock();
        // An entry larger than the byte bound still goes through an empty queue.
        let full = state.stores >= MAX_QUEUED_STORES
            || (state.stores > 0 && state.bytes + size > MAX_QUEUED_BYTES);
        if full {
            return false;
        }
        state.stores += 1;
        state.bytes += size;
        state.jobs.push_back(Queued {
            job: Job::Store(entry),
            _pending: pending,
        });
        drop(state);
        self.queue.ready.notify_one();
        true
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

    /// Entries and bytes waiting to be written.
    pub fn depth(&self) -> (usize, u64) {
        let state = self.queue.lock();
        (state.stores, state.bytes)
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
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
            Job::Store(entry) => store.write(entry, wanted),
            Job::Remove(keys, why) => store.remove_keys(keys, *why),
        }));
        if done.is_err() {
            warn!("disk write failed unexpectedly; continuing with the next");
        }
        if let Job::Store(entry) = &queued.job {
            let mut state = queue.lock();
            state.stores -= 1;
            state.bytes -= entry.body.len() as u64;
        }
    }
}
