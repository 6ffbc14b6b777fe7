//! Applying the version index's retirement rule as time passes: a task that, every quarter
//! of `versioned.retire_after_secs` (between half a second and thirty seconds), brings the
//! last uses of the assets in use up to date — from the memory tier's use stamps, the disk
//! index (which learns the uses of every process sharing the directory) and the fleet's use
//! reports — applies the rule, drops the entries of retired versions from every tier, and
//! reports this proxy's uses to the fleet.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use tracing::warn;

use crate::cache::entry::now_ms;
use crate::cache::http::key::CacheKey;
use crate::cache::http::version::{AssetId, Version};
use crate::cache::shared::AssetUses;
use crate::cache::version_index::Use;
use crate::cache::{Cache, Inner};

/// Assets remembered for sweeping at most; beyond it the set starts afresh (assets still in
/// use come back with their next use).
const SWEEP_SET_LIMIT: usize = 100_000;
/// Assets whose fleet uses are remembered at most until the next sweep.
const REMOTE_LIMIT: usize = 50_000;

/// Which assets to sweep next, and what the fleet said of their uses.
#[derive(Default)]
pub struct Retirement {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Assets stored, used or reported since the last sweep, and those holding more than one
    /// version after it.
    due: HashSet<AssetId>,
    /// Of those, the assets this proxy stored or served: the ones it reports to the fleet.
    used_here: HashSet<AssetId>,
    /// The fleet's last uses per asset and version, until a sweep folds them in.
    remote: HashMap<AssetId, HashMap<Version, u64>>,
}

impl Retirement {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `asset` for the next sweep.
    pub fn due(&self, asset: &AssetId) {
        let mut state = self.state();
        if state.due.len() >= SWEEP_SET_LIMIT {
            state.due.clear();
        }
        state.due.insert(asset.clone());
    }

    /// Marks `asset`, which this proxy stored or served, for the next sweep and report.
    pub fn used_here(&self, asset: &AssetId) {
        self.due(asset);
        let mut state = self.state();
        if state.used_here.len() >= SWEEP_SET_LIMIT {
            state.used_here.clear();
        }
        state.used_here.insert(asset.clone());
    }

    /// Takes in another proxy's report of its uses.
    pub fn remote_uses(&self, assets: Vec<AssetUses>) {
        let mut state = self.state();
        for reported in assets {
            if state.remote.len() >= REMOTE_LIMIT {
                state.remote.clear();
            }
            let known = state.remote.entry(reported.asset.clone()).or_default();
            for (version, at) in reported.uses {
                let last = known.entry(version).or_default();
                *last = (*last).max(at);
            }
            if state.due.len() < SWEEP_SET_LIMIT {
                state.due.insert(reported.asset);
            }
        }
    }

    fn take(&self) -> Due {
        let mut state = self.state();
        Due {
            assets: state.due.drain().collect(),
            used_here: std::mem::take(&mut state.used_here),
            remote: std::mem::take(&mut state.remote),
        }
    }
}

/// What one sweep goes through.
struct Due {
    assets: Vec<AssetId>,
    used_here: HashSet<AssetId>,
    remote: HashMap<AssetId, HashMap<Version, u64>>,
}

/// How often assets are swept for `retire_after`.
fn sweep_every(retire_after: Duration) -> Duration {
    (retire_after / 4).clamp(Duration::from_millis(500), Duration::from_secs(30))
}

/// Sweeps until the cache is dropped. Inside a tokio runtime.
pub(super) async fn run(cache: Weak<Inner>) {
    let every = match cache.upgrade() {
        Some(inner) => sweep_every(inner.config.retire_after),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = now_ms();
    loop {
        tick.tick().await;
        let Some(inner) = cache.upgrade() else { return };
        let since = std::mem::replace(&mut last_sweep, now_ms());
        Cache { inner }.sweep(since).await;
    }
}

impl Cache {
    /// One sweep: every asset stored, used or reported since `since_ms`, and every asset
    /// holding more than one version.
    async fn sweep(&self, since_ms: u64) {
        let inner = &self.inner;
        // Memory hits touch no file: their use stamps say which assets are in use.
        let mut memory_uses: HashMap<CacheKey, Use> = HashMap::new();
        for (key, at_ms, count, asset) in inner.memory.versioned_used_since(since_ms) {
            inner.retirement.used_here(&asset);
            memory_uses.insert(key, Use { at_ms, count });
        }
        let Due {
            assets,
            used_here,
            mut remote,
        } = inner.retirement.take();
        if assets.is_empty() {
            return;
        }
        let this = self.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let inner = &this.inner;
            let last_use = |key: &CacheKey| {
                let slot = inner.store.index.get(&key.digest_bytes());
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
                match inner
                    .versions
                    .sweep(&asset, SystemTime::now(), &last_use, &fleet)
                {
                    Ok((outcome, held)) => {
                        this.apply_retirement(&asset, &outcome);
                        if held > 1 {
                            inner.retirement.due(&asset);
                        }
                        if held > 0 && used_here.contains(&asset) {
                            if let Ok(uses) = inner.versions.uses(&asset) {
                                reports.push(AssetUses { asset, uses });
                            }
                        }
                    }
                    Err(e) => {
                        inner.stats.disk_errors.inc();
                        warn!(error = %e, asset = %asset, "version index sweep failed");
                    }
                }
            }
            reports
        })
        .await;
        if let (Ok(reports), Some(shared)) = (swept, &self.inner.shared) {
            shared.report(reports);
        }
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

    #[test]
    fn fleet_reports_keep_the_latest_use_and_mark_the_asset() {
        let retirement = Retirement::default();
        let asset: AssetId =
            serde_json::from_value(serde_json::json!("https://a.test/a.js")).expect("asset");
        let v1: Version = serde_json::from_value(serde_json::json!("1")).expect("version");
        for at in [5, 9, 7] {
            retirement.remote_uses(vec![AssetUses {
                asset: asset.clone(),
                uses: vec![(v1.clone(), at)],
            }]);
        }
        let due = retirement.take();
        assert_eq!(due.assets, vec![asset.clone()]);
        assert_eq!(due.remote[&asset][&v1], 9);
        assert!(due.used_here.is_empty(), "reported, not used here");
        assert!(retirement.take().assets.is_empty(), "taken once");
    }
}
