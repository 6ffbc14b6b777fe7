//! Versions held and retired across the tiers: a stored version is held in the version index
//! (which may retire others at once), and a task applies the rule as time passes — every
//! quarter of `versioned.retire_after_secs` (between half a second and thirty seconds) it
//! brings the last uses of the assets in use up to date from the memory tier's use stamps,
//! the disk index (which learns the uses of every process sharing the directory) and the
//! fleet's use reports, drops the entries of retired versions from every tier, and reports
//! this proxy's uses to the fleet.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::cache::disk::journal::Removal;
use crate::cache::disk::DiskError;
use crate::cache::entry::{now_ms, EntryMeta};
use crate::cache::http::key::CacheKey;
use crate::cache::http::version::{AssetId, Version};
use crate::cache::shared::{AssetUses, VersionNews};
use crate::cache::sweep_list::Due;
use crate::cache::tiers::Tiers;
use crate::cache::version_index::{Outcome, Use};
use crate::loggable;

impl Tiers {
    /// For a version of an asset, holds it in the version index, which may retire other
    /// versions (their entries leave every tier). A 404 for a new version holds nothing: it
    /// must not retire the version that works.
    pub(crate) async fn hold_version(self: &Arc<Self>, meta: &EntryMeta) {
        let (Some(asset), Some(version)) = (&meta.asset, &meta.version) else {
            return;
        };
        if meta.status != StatusCode::OK.as_u16() {
            return;
        }
        match self.admit(asset, version, &meta.key).await {
            Ok(outcome) => self.apply_retirement(asset, &outcome),
            Err(e) => {
                self.stats.disk_errors.inc();
                warn!(error = %e, key = %meta.key, "version index update failed; storing without it");
            }
        }
        self.sweep_list.used_here(asset);
    }

    async fn admit(
        self: &Arc<Self>,
        asset: &AssetId,
        version: &Version,
        key: &CacheKey,
    ) -> Result<Outcome, DiskError> {
        let (tiers, asset, version, key) =
            (self.clone(), asset.clone(), version.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            // Memory hits reach the disk index in batches; the entries' own stamps are newer.
            let last_use = |key: &CacheKey| {
                let slot = tiers.store.index.get(&key.digest_bytes());
                let stamp = tiers.memory.get(key).map(|entry| entry.used.clone());
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
            tiers
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

    /// Drops the entries of retired versions from memory, has the writer remove them from
    /// disk and the shared tier forget them, and counts and logs what the retirement means.
    pub(crate) fn apply_retirement(&self, asset: &AssetId, outcome: &Outcome) {
        let keys = outcome.retired_keys();
        for key in &keys {
            self.memory.remove(key);
        }
        self.stats.version_evictions.add(keys.len() as u64);
        for retired in &outcome.retired {
            if retired.one_off {
                self.stats.one_off_versions.inc();
            }
            debug!(asset = %asset, version = %retired.version, one_off = retired.one_off, "version retired");
        }
        if let Some((old, new)) = &outcome.took_over {
            let stats = &self.stats;
            stats.version_changes.inc();
            stats
                .activity
                .version_changed(asset.as_str(), old.as_str(), new.as_str());
            info!(asset = %loggable::url(asset.as_str()), old = %old, new = %new, "asset version changed");
        }
        if keys.is_empty() {
            return;
        }
        if let Some(shared) = &self.shared {
            shared.remove(&keys);
        }
        self.writer
            .remove(keys, Removal::OlderVersion, self.pending());
    }

    /// One sweep: every asset stored, used or reported since `since_ms`, and every asset
    /// holding more than one version.
    async fn sweep(self: &Arc<Self>, since_ms: u64) {
        // Memory hits touch no file: their use stamps say which assets are in use.
        let mut memory_uses: HashMap<CacheKey, Use> = HashMap::new();
        for (key, at_ms, count, asset) in self.memory.versioned_used_since(since_ms) {
            self.sweep_list.used_here(&asset);
            memory_uses.insert(key, Use { at_ms, count });
        }
        let due = self.sweep_list.take();
        if due.assets.is_empty() {
            return;
        }
        let tiers = self.clone();
        let swept = tokio::task::spawn_blocking(move || tiers.sweep_due(due, &memory_uses)).await;
        if let (Ok(reports), Some(shared)) = (swept, &self.shared) {
            shared.report(reports);
        }
    }

    /// Applies the rule to the assets `due`; returns this proxy's uses to report.
    fn sweep_due(&self, due: Due, memory_uses: &HashMap<CacheKey, Use>) -> Vec<AssetUses> {
        let Due {
            assets,
            used_here,
            mut remote,
        } = due;
        let last_use = |key: &CacheKey| {
            let slot = self.store.index.get(&key.digest_bytes());
            let in_memory = memory_uses.get(key).copied();
            if slot.is_none() && in_memory.is_none() {
                return None;
            }
            let in_memory = in_memory.unwrap_or_default();
            Some(Use {
                at_ms: slot.map_or(0, |s| s.used_ms).max(in_memory.at_ms),
                count: slot.map_or(0, |s| s.uses).max(in_memory.count),
            })
        };
        let mut reports = Vec::new();
        for asset in assets {
            let fleet = remote.remove(&asset).unwrap_or_default();
            match self
                .versions
                .sweep(&asset, SystemTime::now(), &last_use, &fleet)
            {
                Ok((outcome, held)) => {
                    self.apply_retirement(&asset, &outcome);
                    if held > 1 {
                        self.sweep_list.due(&asset);
                    }
                    if held > 0 && used_here.contains(&asset) {
                        if let Ok(uses) = self.versions.uses(&asset) {
                            reports.push(AssetUses { asset, uses });
                        }
                    }
                }
                Err(e) => {
                    self.stats.disk_errors.inc();
                    warn!(error = %e, asset = %loggable::url(asset.as_str()), "version index sweep failed");
                }
            }
        }
        reports
    }
}

/// How often assets are swept for `retire_after`.
fn sweep_every(retire_after: Duration) -> Duration {
    (retire_after / 4).clamp(Duration::from_millis(500), Duration::from_secs(30))
}

/// Sweeps until the tiers are dropped. Inside a tokio runtime.
pub(crate) async fn run(tiers: Weak<Tiers>) {
    let every = match tiers.upgrade() {
        Some(tiers) => sweep_every(tiers.config.retire_after),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = now_ms();
    loop {
        tick.tick().await;
        let Some(tiers) = tiers.upgrade() else { return };
        let since = std::mem::replace(&mut last_sweep, now_ms());
        tiers.sweep(since).await;
    }
}

/// Takes in other proxies' use reports until the tiers are dropped; the next sweep applies
/// them.
pub(crate) async fn follow_fleet(tiers: Weak<Tiers>, mut news: mpsc::Receiver<VersionNews>) {
    while let Some(news) = news.recv().await {
        let Some(tiers) = tiers.upgrade() else { return };
        tiers.sweep_list.remote_uses(news.assets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_follow_the_retirement_delay_within_bounds() {
        let cases = [
            (0, 500),
            (1, 500),
            (300, 30_000),
            (60, 15_000),
            (10_000, 30_000),
        ];
        for (secs, ms) in cases {
            assert_eq!(
                sweep_every(Duration::from_secs(secs)),
                Duration::from_millis(ms),
                "{secs}s"
            );
        }
    }
}
