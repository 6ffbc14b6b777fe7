//! Disk trouble (read-only, full, deleted): counted every time, logged at most once a minute
//! with how many failures the quiet time hid, and logged again when writes work once more.
//! The cache keeps serving meanwhile: entries stay in memory, misses go to the origin.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::disk::DiskError;
use crate::stats::Stats;

/// How often trouble is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The disk tier's health, as its writes and reads find it.
pub struct DiskHealth {
    state: Mutex<State>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct State {
    failing: bool,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl DiskHealth {
    /// Healthy until something fails.
    pub fn new(stats: Arc<Stats>) -> DiskHealth {
        DiskHealth {
            state: Mutex::new(State::default()),
            stats,
        }
    }

    /// Counts a failure, and logs it unless one was logged in the last minute.
    pub fn failed(&self, error: &DiskError) {
        match error {
            DiskError::Corrupt { .. } => self.stats.corrupt_entries.inc(),
            _ => self.stats.disk_errors.inc(),
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let DiskError::Corrupt { .. } = error {
            // Damage is about one entry, not the disk: always worth its own line.
            drop(state);
            warn!(error = %error, "cache entry failed verification; removed, will be refetched");
            return;
        }
        state.failing = true;
        let quiet = state.last_logged.is_some_and(|at| at.elapsed() < LOG_EVERY);
        if quiet {
            state.unlogged += 1;
            return;
        }
        let hidden = std::mem::take(&mut state.unlogged);
        state.last_logged = Some(Instant::now());
        drop(state);
        warn!(
            error = %error,
            failures_not_logged = hidden,
            "disk tier unusable; serving from memory and the origin until it works again"
        );
    }

    /// Notes a write that worked; logs the recovery after trouble.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.failing {
            return;
        }
        state.failing = false;
        let hidden = std::mem::take(&mut state.unlogged);
        state.last_logged = None;
        drop(state);
        info!(
            failures_not_logged = hidden,
            "disk tier writable again; caching to disk resumed"
        );
    }

    /// Whether the last disk operation failed.
    pub fn is_failing(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failing
    }
}
