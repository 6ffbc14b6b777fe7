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
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::atomic_file;
use crate::cache::disk::{files_below, DiskError};
use crate::cache::http::key::{hex, CacheKey};
use crate::cache::http::version::{AssetId, Version};
use crate::file_lock::LockFile;

mod record;

use record::AssetRecord;
pub use record::{Outcome, RetireRule, Retired, Use, MAX_HELD};

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
mod tests;
