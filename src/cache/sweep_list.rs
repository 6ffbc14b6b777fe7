//! The assets due for a retirement sweep: those stored or served since the last one (the ones
//! this proxy reports to the fleet), those reported by other proxies with their uses, and
//! those still holding more than one version. Bounded: past its limit the list starts afresh,
//! and an asset still in use comes back with its next use.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use crate::cache::http::version::{AssetId, Version};
use crate::cache::shared::AssetUses;

/// Assets remembered for sweeping at most; beyond it the set starts afresh (assets still in
/// use come back with their next use).
const SWEEP_SET_LIMIT: usize = 100_000;
/// Assets whose fleet uses are remembered at most until the next sweep.
const REMOTE_LIMIT: usize = 50_000;

/// Which assets to sweep next, and what the fleet said of their uses.
#[derive(Default)]
pub struct SweepList {
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

impl SweepList {
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

    /// Takes what the next sweep goes through, leaving the list empty.
    pub fn take(&self) -> Due {
        let mut state = self.state();
        Due {
            assets: state.due.drain().collect(),
            used_here: std::mem::take(&mut state.used_here),
            remote: std::mem::take(&mut state.remote),
        }
    }
}

/// What one sweep goes through.
pub struct Due {
    /// The assets to sweep.
    pub assets: Vec<AssetId>,
    /// Of those, the ones this proxy stored or served: its report to the fleet.
    pub used_here: HashSet<AssetId>,
    /// What the fleet said of their uses.
    pub remote: HashMap<AssetId, HashMap<Version, u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_reports_keep_the_latest_use_and_mark_the_asset() {
        let list = SweepList::default();
        let asset: AssetId =
            serde_json::from_value(serde_json::json!("https://a.test/a.js")).expect("asset");
        let v1: Version = serde_json::from_value(serde_json::json!("1")).expect("version");
        for at in [5, 9, 7] {
            list.remote_uses(vec![AssetUses {
                asset: asset.clone(),
                uses: vec![(v1.clone(), at)],
            }]);
        }
        let due = list.take();
        assert_eq!(due.assets, vec![asset.clone()]);
        assert_eq!(due.remote[&asset][&v1], 9);
        assert!(due.used_here.is_empty(), "reported, not used here");
        assert!(list.take().assets.is_empty(), "taken once");
    }
}
