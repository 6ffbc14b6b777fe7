//! Disk trouble (read-only, full, deleted): counted every time, logged at most once a minute
//! with how many failures the quiet time hid, and logged again when writes work once more.
//! The cache keeps serving meanwhile: entries stay in memory, misses go to the origin.

use std::sync::Arc;

use tracing::{info, warn};

use crate::cache::disk::DiskError;
use crate::stats::Stats;
use crate::trouble::Trouble;

/// The disk tier's health, as its writes and reads find it.
pub struct DiskHealth {
    trouble: Trouble,
    stats: Arc<Stats>,
}

impl DiskHealth {
    /// Healthy until something fails.
    pub fn new(stats: Arc<Stats>) -> DiskHealth {
        DiskHealth {
            trouble: Trouble::default(),
            stats,
        }
    }

    /// Counts a failure, and logs it unless one was logged in the last minute.
    pub fn failed(&self, error: &DiskError) {
        if let DiskError::Corrupt { .. } = error {
            // Damage is about one entry, not the disk: always worth its own line.
            self.stats.corrupt_entries.inc();
            warn!(error = %error, "cache entry failed verification; removed, will be refetched");
            return;
        }
        self.stats.disk_errors.inc();
        let Some(hidden) = self.trouble.failed() else {
            return;
        };
        warn!(
            error = %error,
            failures_not_logged = hidden,
            "disk tier unusable; serving from memory and the origin until it works again"
        );
    }

    /// Notes a write that worked; logs the recovery after trouble.
    pub fn succeeded(&self) {
        let Some(hidden) = self.trouble.succeeded() else {
            return;
        };
        info!(
            failures_not_logged = hidden,
            "disk tier writable again; caching to disk resumed"
        );
    }

    /// Whether the last disk operation failed.
    pub fn is_failing(&self) -> bool {
        self.trouble.is_failing()
    }
}
