//! The version index: for each asset identity, the versions held (in order of first
//! appearance, with the keys stored for each) and the versions retired. One JSON file per
//! asset under `<cache-dir>/v1/assets/`, read and rewritten atomically under an exclusive file
//! lock, so processes sharing the directory agree on which version is current.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::disk::{files_below, DiskError};
use super::key::{hex, CacheKey};
use super::version::{AssetId, Version};
use crate::atomic_file;
use crate::file_lock::LockFile;

/// Retired versions remembered per asset, to recognise a request for an old one.
const RETIRED_KEPT: usize = 64;

/// What storing a version of an asset means for the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Store the entry; evict the entries of versions that fell out.
    Store {
        /// `(previous newest, new)` when this is a version the asset has not had before.
        change: Option<(Version, Version)>,
        /// Keys of evicted versions' entries.
        evicted: Vec<CacheKey>,
    },
    /// A newer version is held: serve this one, but do not store it.
    Older,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AssetRecord {
    /// The identity (absent in records written before it was kept).
    #[serde(default)]
    asset: Option<AssetId>,
    versions: Vec<HeldVersion>,
    retired: Vec<Version>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HeldVersion {
    version: Version,
    first_seen_ms: u64,
    keys: Vec<CacheKey>,
}

impl AssetRecord {
    /// Records `version` (with the key of an entry holding it, when there is one).
    fn admit(
        &mut self,
        version: &Version,
        key: Option<&CacheKey>,
        now_ms: u64,
        keep: usize,
    ) -> Admission {
        if let Some(held) = self.versions.iter_mut().find(|h| h.version == *version) {
            if let Some(key) = key.filter(|key| !held.keys.contains(key)) {
                held.keys.push(key.clone());
            }
            return Admission::Store {
                change: None,
                evicted: Vec::new(),
            };
        }
        if self.retired.contains(version) {
            return Admission::Older;
        }
        let previous = self.versions.last().map(|h| h.version.clone());
        self.versions.push(HeldVersion {
            version: version.clone(),
            first_seen_ms: now_ms,
            keys: key.into_iter().cloned().collect(),
        });
        let excess = self.versions.len().saturating_sub(keep.max(1));
        let mut evicted = Vec::new();
        for old in self.versions.drain(..excess) {
            evicted.extend(old.keys);
            self.retired.push(old.version);
        }
        let forget = self.retired.len().saturating_sub(RETIRED_KEPT);
        self.retired.drain(..forget);
        Admission::Store {
            change: previous.map(|old| (old, version.clone())),
            evicted,
        }
    }
}

/// The persistent per-asset version lists.
pub struct VersionIndex {
    dir: PathBuf,
    keep: usize,
}

impl VersionIndex {
    /// The index under a disk tier's root, keeping `keep` versions per asset.
    pub fn new(root: &Path, keep: usize) -> VersionIndex {
        VersionIndex {
            dir: root.join("assets"),
            keep,
        }
    }

    /// Whether a newer version of `asset` has replaced `version`. Lock-free: the file is only
    /// ever replaced whole.
    pub fn is_retired(&self, asset: &AssetId, version: &Version) -> Result<bool, DiskError> {
        let (_, path) = self.paths(asset);
        Ok(read_record(&path)?.retired.contains(version))
    }

    /// The fan-out directory and the record file of `asset`.
    fn paths(&self, asset: &AssetId) -> (PathBuf, PathBuf) {
        let digest =
            hex(ring::digest::digest(&ring::digest::SHA256, asset.as_str().as_bytes()).as_ref());
        let dir = self.dir.join(&digest[..2]);
        let record = dir.join(format!("{digest}.json"));
        (dir, record)
    }

    /// Records that `key` holds `version` of `asset`, and says what to store and evict.
    pub fn admit(
        &self,
        asset: &AssetId,
        version: &Version,
        key: &CacheKey,
        now: SystemTime,
    ) -> Result<Admission, DiskError> {
        self.update(asset, version, Some(key), now)
    }

    /// Records a version another proxy of the fleet has seen, for an asset this index holds
    /// versions of; says which entries it evicts. Assets the index does not know are left
    /// alone: there is nothing to evict.
    pub fn admit_announced(
        &self,
        asset: &AssetId,
        version: &Version,
        now: SystemTime,
    ) -> Result<Admission, DiskError> {
        let (_, path) = self.paths(asset);
        if read_record(&path)?.versions.is_empty() {
            return Ok(Admission::Store {
                change: None,
                evicted: Vec::new(),
            });
        }
        self.update(asset, version, None, now)
    }

    fn update(
        &self,
        asset: &AssetId,
        version: &Version,
        key: Option<&CacheKey>,
        now: SystemTime,
    ) -> Result<Admission, DiskError> {
        let (dir, path) = self.paths(asset);
        fs::create_dir_all(&dir).map_err(|source| io("create", &dir, source))?;
        let lock_path = path.with_extension("lock");
        let lock = LockFile::open(&lock_path).map_err(|source| io("open", &lock_path, source))?;
        lock.lock_exclusive()
            .map_err(|source| io("lock", &lock_path, source))?;
        let mut record = read_record(&path)?;
        let before = record.clone();
        record.asset = Some(asset.clone());
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let admission = record.admit(version, key, now_ms, self.keep);
        if record != before {
            let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
            atomic_file::write(&path, &json, 0o600).map_err(|source| io("write", &path, source))?;
        }
        // The lock is released when `lock` closes.
        Ok(admission)
    }
}

/// What the index holds for one asset.
#[derive(Debug, Clone, Serialize)]
pub struct AssetSummary {
    /// The identity.
    pub asset: AssetId,
    /// The newest version held.
    pub current: Option<Version>,
    /// Versions held, oldest first, with when each was first seen (ms since the epoch) and
    /// the keys stored for it.
    pub versions: Vec<HeldSummary>,
}

/// One held version.
#[derive(Debug, Clone, Serialize)]
pub struct HeldSummary {
    /// The version.
    pub version: Version,
    /// First seen, in milliseconds since the Unix epoch.
    pub first_seen_ms: u64,
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
                current: record.versions.last().map(|held| held.version.clone()),
                versions: record
                    .versions
                    .into_iter()
                    .map(|held| HeldSummary {
                        version: held.version,
                        first_seen_ms: held.first_seen_ms,
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

    fn key(url: &str) -> CacheKey {
        CacheKey::new(&Url::parse(url).expect("url"), &HeaderMap::new())
    }

    fn v(text: &str) -> Version {
        serde_json::from_value(serde_json::json!(text)).expect("version")
    }

    #[test]
    fn versions_replace_each_other_in_order_of_appearance() {
        let mut record = AssetRecord::default();
        let (k1, k2, k3) = (
            key("https://a.test/a.js?v=1"),
            key("https://a.test/a.js?v=2"),
            key("https://a.test/a.js?v=3"),
        );
        let steps = [
            (
                v("1"),
                k1.clone(),
                Admission::Store {
                    change: None,
                    evicted: vec![],
                },
            ),
            (
                v("1"),
                k1.clone(),
                Admission::Store {
                    change: None,
                    evicted: vec![],
                },
            ),
            (
                v("2"),
                k2.clone(),
                Admission::Store {
                    change: Some((v("1"), v("2"))),
                    evicted: vec![k1.clone()],
                },
            ),
            (v("1"), k1.clone(), Admission::Older),
            (
                v("2"),
                k2.clone(),
                Admission::Store {
                    change: None,
                    evicted: vec![],
                },
            ),
            (
                v("3"),
                k3.clone(),
                Admission::Store {
                    change: Some((v("2"), v("3"))),
                    evicted: vec![k2.clone()],
                },
            ),
        ];
        for (step, (version, key, want)) in steps.into_iter().enumerate() {
            assert_eq!(
                record.admit(&version, Some(&key), step as u64, 1),
                want,
                "step {step}"
            );
        }
    }

    #[test]
    fn an_announced_version_evicts_what_is_held_and_holds_no_key() {
        let mut record = AssetRecord::default();
        let k1 = key("https://a.test/a.js?v=1");
        record.admit(&v("1"), Some(&k1), 0, 1);
        assert_eq!(
            record.admit(&v("2"), None, 1, 1),
            Admission::Store {
                change: Some((v("1"), v("2"))),
                evicted: vec![k1],
            }
        );
        assert_eq!(record.admit(&v("1"), None, 2, 1), Admission::Older);
        let k2 = key("https://a.test/a.js?v=2");
        // The proxy's own copy of the announced version joins it later.
        record.admit(&v("2"), Some(&k2), 3, 1);
        assert_eq!(record.versions[0].keys, vec![k2]);
    }

    #[test]
    fn keep_versions_holds_several() {
        let mut record = AssetRecord::default();
        for n in 1..=3 {
            let admission = record.admit(
                &v(&n.to_string()),
                Some(&key(&format!("https://a.test/a.js?v={n}"))),
                0,
                2,
            );
            let evicted = match admission {
                Admission::Store { evicted, .. } => evicted.len(),
                Admission::Older => usize::MAX,
            };
            assert_eq!(evicted, usize::from(n == 3), "version {n}");
        }
        assert_eq!(record.versions.len(), 2);
    }
}
