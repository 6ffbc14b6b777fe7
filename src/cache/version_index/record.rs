//! One asset's record of the versions held, and the retirement rule applied to it. Pure:
//! `now` is a parameter; reading and writing the record is the index's.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::http::key::CacheKey;
use crate::cache::http::version::{AssetId, Version};

/// Versions of one asset held at most.
pub const MAX_HELD: usize = 32;

/// What is known of an entry's use: when last, and how often (the disk index counts one use
/// per batch of uses it records).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Use {
    /// Last use, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Uses counted.
    pub count: u64,
}

/// When versions retire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetireRule {
    /// The most recently used versions always kept.
    pub keep: usize,
    /// How long a version must go unused, after a sibling was used, before it retires.
    pub after: Duration,
}

/// A version that retired, and the entries that held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// The version.
    pub version: Version,
    /// Keys of its entries.
    pub keys: Vec<CacheKey>,
    /// Whether it retired without ever having taken over (a one-off request, a canary that
    /// was dropped).
    pub one_off: bool,
}

/// What applying the rule changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Versions retired.
    pub retired: Vec<Retired>,
    /// `(old, new)` when a version took over from the current one.
    pub took_over: Option<(Version, Version)>,
}

impl Outcome {
    /// Keys of every retired version's entries.
    pub fn retired_keys(&self) -> Vec<CacheKey> {
        self.retired
            .iter()
            .flat_map(|r| r.keys.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct AssetRecord {
    /// The identity (absent in records written before it was kept).
    #[serde(default)]
    pub(super) asset: Option<AssetId>,
    pub(super) versions: Vec<HeldVersion>,
    /// The version that took over last; the first one held until another takes over.
    #[serde(default)]
    pub(super) current: Option<Version>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct HeldVersion {
    pub(super) version: Version,
    pub(super) first_seen_ms: u64,
    /// The last use known (in this process, another sharing the directory, or the fleet).
    #[serde(default)]
    pub(super) last_used_ms: u64,
    /// How often its entries were used, as far as this cache counted.
    #[serde(default)]
    pub(super) uses: u64,
    pub(super) keys: Vec<CacheKey>,
}

impl AssetRecord {
    /// Records a use of `version` at `now_ms`, holding it (with the key of an entry holding
    /// it, when there is one).
    pub(super) fn hold(&mut self, version: &Version, key: Option<&CacheKey>, now_ms: u64) {
        match self.versions.iter_mut().find(|h| h.version == *version) {
            Some(held) => {
                held.last_used_ms = held.last_used_ms.max(now_ms);
                held.uses += 1;
                if let Some(key) = key.filter(|key| !held.keys.contains(key)) {
                    held.keys.push(key.clone());
                }
            }
            None => self.versions.push(HeldVersion {
                version: version.clone(),
                first_seen_ms: now_ms,
                last_used_ms: now_ms,
                uses: 0,
                keys: key.into_iter().cloned().collect(),
            }),
        }
        if self.current.is_none() {
            self.current = Some(version.clone());
        }
    }

    /// Raises each version's last use to what `last_use` (per entry key) and `remote` (per
    /// version, from other proxies) know. A version other proxies use that this one does not
    /// hold is recorded without keys: it is a sibling in use. Returns whether anything changed.
    pub(super) fn note_uses(
        &mut self,
        last_use: &dyn Fn(&CacheKey) -> Option<Use>,
        remote: &HashMap<Version, u64>,
    ) -> bool {
        let mut changed = false;
        for (version, at) in remote {
            if !self.versions.iter().any(|h| h.version == *version) {
                self.versions.push(HeldVersion {
                    version: version.clone(),
                    first_seen_ms: *at,
                    last_used_ms: *at,
                    uses: 0,
                    keys: Vec::new(),
                });
                changed = true;
            }
        }
        for held in &mut self.versions {
            let local: Vec<Use> = held.keys.iter().filter_map(last_use).collect();
            let at = local
                .iter()
                .map(|u| u.at_ms)
                .chain(remote.get(&held.version).copied())
                .max()
                .unwrap_or(0);
            let count = local.iter().map(|u| u.count).max().unwrap_or(0);
            if at > held.last_used_ms || count > held.uses {
                held.last_used_ms = held.last_used_ms.max(at);
                held.uses = held.uses.max(count);
                changed = true;
            }
        }
        changed
    }

    /// Applies the retirement rule at `now_ms`.
    pub(super) fn retire(&mut self, now_ms: u64, rule: RetireRule) -> Outcome {
        // Most recently used first; of two used at the same moment, the newer first.
        self.versions.sort_by(|a, b| {
            (b.last_used_ms, b.first_seen_ms).cmp(&(a.last_used_ms, a.first_seen_ms))
        });
        let keep = rule.keep.max(1);
        let newest_use = self.versions.first().map_or(0, |h| h.last_used_ms);
        let after_ms = u64::try_from(rule.after.as_millis()).unwrap_or(u64::MAX);
        let mut kept = Vec::with_capacity(self.versions.len());
        let mut gone = Vec::new();
        for (rank, held) in std::mem::take(&mut self.versions).into_iter().enumerate() {
            let superseded = newest_use > held.last_used_ms;
            let unused_long = now_ms.saturating_sub(held.last_used_ms) >= after_ms;
            if rank >= keep && superseded && unused_long {
                gone.push(held);
            } else {
                kept.push(held);
            }
        }
        // Over the bound, the least used go first, then the least recently used; the most
        // recently used `keep` stay whatever their count.
        while kept.len() > MAX_HELD.max(keep) {
            let victim = kept
                .iter()
                .enumerate()
                .skip(keep)
                .min_by_key(|(_, h)| (h.uses, h.last_used_ms))
                .map(|(i, _)| i);
            match victim {
                Some(i) => gone.push(kept.remove(i)),
                None => break,
            }
        }
        self.versions = kept;
        let previous = self.current.clone();
        let still_held = |v: &Version| self.versions.iter().any(|h| h.version == *v);
        if !previous.as_ref().is_some_and(still_held) {
            // The version most used takes over, of equals the most recently used.
            self.current = self
                .versions
                .iter()
                .max_by_key(|h| (h.uses, h.last_used_ms))
                .map(|h| h.version.clone());
        }
        let took_over = match (&previous, &self.current) {
            (Some(old), Some(new)) if old != new => Some((old.clone(), new.clone())),
            _ => None,
        };
        let retired = gone
            .into_iter()
            .map(|held| Retired {
                one_off: previous.as_ref() != Some(&held.version),
                version: held.version,
                keys: held.keys,
            })
            .collect();
        Outcome { retired, took_over }
    }
}
