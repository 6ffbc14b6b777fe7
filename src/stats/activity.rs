//! Recent activity, for the status page: requests per second, bytes served per asset, the
//! latest version changes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A version change, for the status page.
#[derive(Debug, Clone, Serialize)]
pub struct VersionChange {
    /// Asset identity.
    pub asset: String,
    /// Previous version.
    pub old: String,
    /// New version.
    pub new: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

/// Recent activity: requests per second, bytes served per asset, the latest version changes.
#[derive(Debug, Default)]
pub struct Activity {
    per_second: Mutex<VecDeque<u64>>,
    last_requests: AtomicU64,
    served: Mutex<HashMap<String, u64>>,
    changes: Mutex<VecDeque<VersionChange>>,
}

/// Seconds of request rate kept.
const HISTORY_SECONDS: usize = 600;
/// Assets whose served bytes are tracked; beyond it, the least served are forgotten.
const TRACKED_ASSETS: usize = 1000;
/// Version changes kept.
const CHANGES_KEPT: usize = 50;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Activity {
    /// Records the requests of the last second, given the request counter now.
    pub fn tick(&self, requests: u64) {
        let previous = self.last_requests.swap(requests, Ordering::Relaxed);
        let mut history = lock(&self.per_second);
        history.push_back(requests.saturating_sub(previous));
        if history.len() > HISTORY_SECONDS {
            history.pop_front();
        }
    }

    /// Counts bytes served for an asset.
    pub fn served(&self, asset: &str, bytes: u64) {
        let mut served = lock(&self.served);
        // Runs for every answer: an asset counted already costs one lookup and no allocation.
        if let Some(total) = served.get_mut(asset) {
            *total += bytes;
            return;
        }
        if served.len() >= TRACKED_ASSETS {
            if let Some(least) = served
                .iter()
                .min_by_key(|(_, bytes)| **bytes)
                .map(|(k, _)| k.clone())
            {
                served.remove(&least);
            }
        }
        served.insert(asset.to_owned(), bytes);
    }

    /// Records a version change.
    pub fn version_changed(&self, asset: &str, old: &str, new: &str) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut changes = lock(&self.changes);
        changes.push_back(VersionChange {
            asset: asset.to_owned(),
            old: old.to_owned(),
            new: new.to_owned(),
            at,
        });
        if changes.len() > CHANGES_KEPT {
            changes.pop_front();
        }
    }

    /// Requests per second, oldest first.
    pub fn per_second(&self) -> Vec<u64> {
        lock(&self.per_second).iter().copied().collect()
    }

    /// The `n` assets with the most bytes served, most first.
    pub fn top_assets(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = lock(&self.served)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// The latest version changes, newest first.
    pub fn changes(&self) -> Vec<VersionChange> {
        lock(&self.changes).iter().rev().cloned().collect()
    }
}
