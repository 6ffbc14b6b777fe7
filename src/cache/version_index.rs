//! The version index: for each asset identity, the versions held (with the keys of their
//! entries and when each was last used) and the version that is current. One JSON file per
//! asset under `<cache-dir>/v1/assets/`, read and rewritten atomically under an exclusive file
//! lock, so processes sharing the directory apply one rule to one record.
//!
//! The rule: a version retires — its entries leave memory, disk and the shared tier — once a
//! sibling version has been used since it was last used, and it has not been used for
//! `versioned.retire_after_secs`; the `keep_versions` most recently used versions always stay.
//! The version is in the URL, so a retired version is never served for a newer URL: retiring is
//! about space, and a retired version requested again is simply fetched and held again. At
//! most `MAX_HELD` versions of one asset are held; beyond that the least used go first (then
//! the least recently used), so churn through thousands of one-off versions stays bounded and
//! never pushes out the version everyone uses.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::cache::disk::{files_below, DiskError};
use crate::cache::http::key::{hex, CacheKey};
use crate::cache::http::version::{AssetId, Version};
use crate::file_lock::LockFile;

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
struct AssetRecord {
    /// The identity (absent in records written before it was kept).
    #[serde(default)]
    asset: Option<AssetId>,
    versions: Vec<HeldVersion>,
    /// The version that took over last; the first one held until another takes over.
    #[serde(default)]
    current: Option<Version>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HeldVersion {
    version: Version,
    first_seen_ms: u64,
    /// The last use known (in this process, another sharing the directory, or the fleet).
    #[serde(default)]
    last_used_ms: u64,
    /// How often its entries were used, as far as this cache counted.
    #[serde(default)]
    uses: u64,
    keys: Vec<CacheKey>,
}

impl AssetRecord {
    /// Records a use of `version` at `now_ms`, holding it (with the key of an entry holding
    /// it, when there is one).
    fn hold(&mut self, version: &Version, key: Option<&CacheKey>, now_ms: u64) {
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
    fn note_uses(
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
    fn retire(&mut self, now_ms: u64, rule: RetireRule) -> Outcome {
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

/// The persistent per-asset version records.
pub struct VersionIndex {
    dir: PathBuf,
    rule: RetireRule,
}

impl VersionIndex {
    /// The index under a disk tier's root, retiring versions by `rule`.
    pub fn new(root: &Path, rule: RetireRule) -> VersionIndex {
        VersionIndex {
            dir: root.join("assets"),
            rule,
        }
    }

    /// Whether `version` of `asset` is held. Lock-free: the file is only ever replaced whole.
    pub fn is_held(&self, asset: &AssetId, version: &Version) -> Result<bool, DiskError> {
        let (_, path) = self.paths(asset);
        Ok(read_record(&path)?
            .versions
            .iter()
            .any(|h| h.version == *version))
    }

    /// The versions of `asset` this cache holds entries of, with when each was last used.
    pub fn uses(&self, asset: &AssetId) -> Result<Vec<(Version, u64)>, DiskError> {
        let (_, path) = self.paths(asset);
        Ok(read_record(&path)?
            .versions
            .into_iter()
            .filter(|h| !h.keys.is_empty())
            .map(|h| (h.version, h.last_used_ms))
            .collect())
    }

    /// Records that `key` holds `version` of `asset`, used now, and applies the rule with
    /// what `last_use` knows of every entry's last use.
    pub fn admit(
        &self,
        asset: &AssetId,
        version: &Version,
        key: &CacheKey,
        now: SystemTime,
        last_use: &dyn Fn(&CacheKey) -> Option<Use>,
    ) -> Result<Outcome, DiskError> {
        let now_ms = millis(now);
        self.update(asset, now_ms, |record| {
            record.hold(version, Some(key), now_ms);
            record.note_uses(last_use, &HashMap::new());
        })
        .map(|(outcome, _)| outcome)
    }

    /// Brings `asset`'s last uses up to date (`last_use` per entry key, `remote` per version
    /// from the fleet) and applies the rule. Returns what changed, and how many versions are
    /// still held. An asset the index does not know is left alone.
    pub fn sweep(
        &self,
        asset: &AssetId,
        now: SystemTime,
        last_use: &dyn Fn(&CacheKey) -> Option<Use>,
        remote: &HashMap<Version, u64>,
    ) -> Result<(Outcome, usize), DiskError> {
        let (_, path) = self.paths(asset);
        if read_record(&path)?.versions.is_empty() {
            return Ok((Outcome::default(), 0));
        }
        self.update(asset, millis(now), |record| {
            record.note_uses(last_use, remote);
        })
    }

    /// Runs `change` on `asset`'s record under its lock, applies the rule at `now_ms` and
    /// writes the record back when anything changed.
    fn update(
        &self,
        asset: &AssetId,
        now_ms: u64,
        change: impl FnOnce(&mut AssetRecord),
    ) -> Result<(Outcome, usize), DiskError> {
        let (dir, path) = self.paths(asset);
        fs::create_dir_all(&dir).map_err(|source| io("create", &dir, source))?;
        let lock_path = path.with_extension("lock");
        let lock = LockFile::open(&lock_path).map_err(|source| io("open", &lock_path, source))?;
        lock.lock_exclusive()
            .map_err(|source| io("lock", &lock_path, source))?;
        let mut record = read_record(&path)?;
        let before = record.clone();
        record.asset = Some(asset.clone());
        change(&mut record);
        let outcome = record.retire(now_ms, self.rule);
        if record != before {
            let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
            atomic_file::write(&path, &json, 0o600).map_err(|source| io("write", &path, source))?;
        }
        // The lock is released when `lock` closes.
        Ok((outcome, record.versions.len()))
    }

    /// The fan-out directory and the record file of `asset`.
    fn paths(&self, asset: &AssetId) -> (PathBuf, PathBuf) {
        let digest =
            hex(ring::digest::digest(&ring::digest::SHA256, asset.as_str().as_bytes()).as_ref());
        let dir = self.dir.join(&digest[..2]);
        let record = dir.join(format!("{digest}.json"));
        (dir, record)
    }
}

/// What the index holds for one asset.
#[derive(Debug, Clone, Serialize)]
pub struct AssetSummary {
    /// The identity.
    pub asset: AssetId,
    /// The version that took over last.
    pub current: Option<Version>,
    /// Versions held, most recently used first, with when each was first seen and last used
    /// (ms since the epoch) and the keys stored for it.
    pub versions: Vec<HeldSummary>,
}

/// One held version.
#[derive(Debug, Clone, Serialize)]
pub struct HeldSummary {
    /// The version.
    pub version: Version,
    /// First seen, in milliseconds since the Unix epoch.
    pub first_seen_ms: u64,
    /// Last used, in milliseconds since the Unix epoch.
    pub last_used_ms: u64,
    /// Keys of its entries.
    #[serde(skip)]
    pub keys: Vec<CacheKey>,
    /// Bytes of its entries on disk (filled in by the caller).
    pub bytes: u64,
}

impl VersionIndex {
    /// Every asset the index knows, read from its files. Blocking.
    pub fn list(&self) -> Vec<AssetSummary> {
        let mut out = Vec::new();
        for path in files_below(&self.dir, "json") {
            let Ok(record) = read_record(&path) else {
                continue;
            };
            let Some(asset) = record.asset else { continue };
            out.push(AssetSummary {
                asset,
                current: record.current,
                versions: record
                    .versions
                    .into_iter()
                    .map(|held| HeldSummary {
                        version: held.version,
                        first_seen_ms: held.first_seen_ms,
                        last_used_ms: held.last_used_ms,
                        keys: held.keys,
                        bytes: 0,
                    })
                    .collect(),
            });
        }
        out.sort_by(|a, b| a.asset.as_str().cmp(b.asset.as_str()));
        out
    }

    /// Forgets `asset` (purge). Blocking.
    pub fn forget(&self, asset: &AssetId) -> Result<(), DiskError> {
        let (_, path) = self.paths(asset);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io("remove", &path, e)),
            _ => Ok(()),
        }
    }
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn read_record(path: &Path) -> Result<AssetRecord, DiskError> {
    match fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "version index unreadable; starting it afresh");
            AssetRecord::default()
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(AssetRecord::default()),
        Err(source) => Err(io("read", path, source)),
    }
}

fn io(op: &'static str, path: &Path, source: io::Error) -> DiskError {
    DiskError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use url::Url;

    const SECOND: u64 = 1000;

    fn key(version: &str) -> CacheKey {
        let url = format!("https://a.test/a.js?v={version}");
        CacheKey::new(&Url::parse(&url).expect("url"), &HeaderMap::new())
    }

    fn v(text: &str) -> Version {
        serde_json::from_value(serde_json::json!(text)).expect("version")
    }

    fn rule(keep: usize, after_secs: u64) -> RetireRule {
        RetireRule {
            keep,
            after: Duration::from_secs(after_secs),
        }
    }

    /// Uses at the given seconds, then the rule applied at `now`: the versions still held.
    fn held_after(uses: &[(&str, u64)], now: u64, rule: RetireRule) -> (Vec<String>, Outcome) {
        let mut record = AssetRecord::default();
        let mut outcome = Outcome::default();
        for (version, at) in uses {
            record.hold(&v(version), Some(&key(version)), at * SECOND);
            let step = record.retire(at * SECOND, rule);
            outcome.retired.extend(step.retired);
            outcome.took_over = step.took_over.or(outcome.took_over);
        }
        let step = record.retire(now * SECOND, rule);
        outcome.retired.extend(step.retired);
        outcome.took_over = step.took_over.or(outcome.took_over);
        let mut held: Vec<String> = record
            .versions
            .iter()
            .map(|h| h.version.as_str().to_owned())
            .collect();
        held.sort();
        (held, outcome)
    }

    #[test]
    fn versions_retire_by_use_not_by_first_appearance() {
        type Case = (
            &'static str,
            &'static [(&'static str, u64)],
            u64,
            RetireRule,
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (
                "a canary keeps both",
                &[("a", 0), ("b", 1), ("a", 2), ("a", 3), ("b", 4), ("a", 5)],
                6,
                rule(1, 300),
                &["a", "b"],
            ),
            (
                "a redeploy retires the old one once unused long enough",
                &[("v1", 0), ("v2", 10), ("v2", 400)],
                400,
                rule(1, 300),
                &["v2"],
            ),
            (
                "not yet unused long enough",
                &[("v1", 0), ("v2", 10), ("v2", 200)],
                200,
                rule(1, 300),
                &["v1", "v2"],
            ),
            (
                "a one-off does not retire the version in use",
                &[("good", 0), ("x", 1), ("good", 2)],
                2,
                rule(1, 300),
                &["good", "x"],
            ),
            (
                "the one-off retires once unused",
                &[("good", 0), ("x", 1), ("good", 2), ("good", 400)],
                400,
                rule(1, 300),
                &["good"],
            ),
            (
                "nothing else used since: kept however old",
                &[("v1", 0)],
                100_000,
                rule(1, 300),
                &["v1"],
            ),
            (
                "0 retires at once",
                &[("v1", 0), ("v2", 1)],
                1,
                rule(1, 0),
                &["v2"],
            ),
            (
                "keep_versions keeps the most recently used",
                &[("v1", 0), ("v2", 1), ("v3", 2)],
                1000,
                rule(2, 0),
                &["v2", "v3"],
            ),
            (
                "an old version asked for again is held again",
                &[("v1", 0), ("v2", 1), ("v1", 2)],
                2,
                rule(1, 0),
                &["v1"],
            ),
        ];
        for (what, uses, now, rule, want) in cases {
            let (held, _) = held_after(uses, *now, *rule);
            assert_eq!(held, *want, "{what}");
        }
    }

    #[test]
    fn a_takeover_is_a_version_change_and_a_one_off_is_not() {
        let (_, redeploy) = held_after(&[("v1", 0), ("v2", 10), ("v2", 400)], 400, rule(1, 300));
        assert_eq!(redeploy.took_over, Some((v("v1"), v("v2"))));
        assert_eq!(redeploy.retired.len(), 1);
        assert!(!redeploy.retired[0].one_off);
        assert_eq!(redeploy.retired[0].keys, vec![key("v1")]);

        let (_, noise) = held_after(&[("good", 0), ("x", 1), ("good", 400)], 400, rule(1, 300));
        assert_eq!(noise.took_over, None);
        assert_eq!(noise.retired.len(), 1);
        assert!(noise.retired[0].one_off);
    }

    #[test]
    fn thousands_of_one_off_versions_stay_bounded_and_resurrect_nothing() {
        let mut record = AssetRecord::default();
        let rule = rule(1, 300);
        for n in 0..10_000u64 {
            // `good` is used once for every fifty one-offs, and counted as used.
            if n % 50 == 0 {
                record.hold(&v("good"), Some(&key("good")), n * 2);
                let counted = |k: &CacheKey| {
                    (*k == key("good")).then_some(Use {
                        at_ms: n * 2,
                        count: n / 50 + 1,
                    })
                };
                record.note_uses(&counted, &HashMap::new());
            }
            let one_off = format!("x{n}");
            record.hold(&v(&one_off), Some(&key(&one_off)), n * 2 + 1);
            record.retire(n * 2 + 1, rule);
            assert!(record.versions.len() <= MAX_HELD);
            assert!(
                record.versions.iter().any(|h| h.version == v("good")),
                "at {n}"
            );
        }
        record.hold(&v("good"), Some(&key("good")), 20_000);
        record.retire(20_000, rule);
        assert_eq!(
            record.current,
            Some(v("good")),
            "the version in use stays current"
        );
        assert!(record.versions.iter().any(|h| h.version == v("good")));
        let json = serde_json::to_vec(&record).expect("json");
        assert!(json.len() < 32 * 1024, "{} bytes", json.len());
    }

    #[test]
    fn uses_from_entries_and_the_fleet_count() {
        let mut record = AssetRecord::default();
        record.hold(&v("v1"), Some(&key("v1")), 0);
        record.hold(&v("v2"), Some(&key("v2")), SECOND);
        let local = |k: &CacheKey| {
            (*k == key("v1")).then_some(Use {
                at_ms: 500 * SECOND,
                count: 1,
            })
        };
        assert!(record.note_uses(&local, &HashMap::new()));
        let outcome = record.retire(500 * SECOND, rule(1, 300));
        assert!(
            outcome.retired.iter().any(|r| r.version == v("v2")),
            "v1 used since: v2 retires"
        );
        let remote = HashMap::from([(v("v2"), 900 * SECOND)]);
        record.hold(&v("v2"), Some(&key("v2")), 800 * SECOND);
        assert!(record.note_uses(&|_| None, &remote));
        let last = |ver: &str| {
            record
                .versions
                .iter()
                .find(|h| h.version == v(ver))
                .map(|h| h.last_used_ms)
        };
        assert_eq!(last("v2"), Some(900 * SECOND));
    }

    #[test]
    fn records_of_the_previous_format_are_read() {
        let old = r#"{"asset": "https://a.test/a.js", "versions": [{"version": "2", "first_seen_ms": 5, "keys": []}], "retired": ["1"]}"#;
        let record: AssetRecord = serde_json::from_str(old).expect("old record");
        assert_eq!(record.versions[0].last_used_ms, 0);
        assert_eq!(record.current, None);
    }
}
