//! `proxy cache verify [--repair]`: reads every entry file whole and checks it by checksum,
//! checks the index against the files, and finds unreadable version-index records and temp
//! files a crash left. With `repair`, bad entries and leftovers are removed and the index is
//! corrected. Blocking; safe while proxies run on the directory (it only removes what is bad,
//! and temp files only when no proxy runs).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use std::sync::Arc;

use crate::cache::disk::index::DiskIndex;
use crate::cache::disk::journal::{Digest, Removal};
use crate::cache::disk::upkeep;
use crate::cache::disk::{
    digest_of_path, files_below, symlinks_below, temp_files, DiskError, DiskTier,
};
use crate::cache::disk::{index_error, DiskStore};
use crate::cache::entry::CachedResponse;
use crate::cache::memory::MemoryTier;
use crate::stats::Stats;

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The file concerned.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
    /// Whether `repair` fixed it.
    pub repaired: bool,
}

/// What a verification found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    /// Entry files read and checked.
    pub entries_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Everything wrong, one line each.
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    /// Whether anything was wrong.
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Verifies the cache in `dir` (and with `repair`, fixes what it finds).
pub fn verify_dir(dir: &Path, repair: bool) -> Result<VerifyReport, DiskError> {
    let stats = Arc::new(Stats::default());
    let (tier, _) = DiskTier::inspect(dir)?;
    let (index, _) = DiskIndex::open(tier.root()).map_err(index_error)?;
    // Verifying removes nothing for capacity.
    let memory = MemoryTier::new(0, std::time::Duration::from_secs(1));
    let store = DiskStore::new(tier, index, memory, stats, u64::MAX);
    let sole_user = store.tier.is_sole_user();
    Ok(verify(&store, repair, sole_user))
}

/// Verifies the tier of `store`; `sole_user` says whether no proxy runs on it (temp files
/// are then leftovers, not writes in progress).
pub fn verify(store: &DiskStore, repair: bool, sole_user: bool) -> VerifyReport {
    let mut report = VerifyReport::default();
    let note = |report: &mut VerifyReport, path: &Path, problem: String, repaired| {
        report.findings.push(Finding {
            path: path.to_owned(),
            problem,
            repaired,
        });
    };
    if let Err(e) = store.index.sync() {
        note(
            &mut report,
            &store.tier.root().join("index.journal"),
            format!("index unreadable: {e}"),
            false,
        );
    }
    let known = store.index.snapshot();
    let mut on_disk: HashSet<Digest> = HashSet::new();
    let mut damaged = Vec::new();
    for path in store.tier.entry_paths() {
        let Some(digest) = digest_of_path(&path) else {
            note(&mut report, &path, "not an entry file".into(), false);
            continue;
        };
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Removed meanwhile by a running proxy.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                note(&mut report, &path, format!("unreadable: {e}"), false);
                continue;
            }
        };
        report.entries_checked += 1;
        report.bytes_checked += bytes.len() as u64;
        match CachedResponse::decode(bytes.into()) {
            Ok(entry) if entry.meta.key.digest_bytes() != digest => {
                damaged.push(digest);
                note(
                    &mut report,
                    &path,
                    "stored under another key's name".into(),
                    repair,
                );
            }
            Ok(_) => {
                on_disk.insert(digest);
                if !known.contains_key(&digest) {
                    note(&mut report, &path, "missing from the index".into(), repair);
                }
            }
            Err(reason) => {
                damaged.push(digest);
                note(&mut report, &path, format!("corrupt: {reason}"), repair);
            }
        }
    }
    for digest in known.keys().filter(|d| !on_disk.contains(*d)) {
        let path = store.tier.path_of_digest(digest);
        if !damaged.contains(digest) && !path.exists() {
            note(
                &mut report,
                &path,
                "in the index, but no file".into(),
                repair,
            );
        }
    }
    check_asset_records(store.tier.root(), repair, &mut report);
    for path in symlinks_below(store.tier.root()) {
        let problem = "a symbolic link the proxy did not make: not followed, left alone".into();
        note(&mut report, &path, problem, false);
    }
    if sole_user {
        for path in temp_files(store.tier.root()) {
            let removed = repair && fs::remove_file(&path).is_ok();
            note(
                &mut report,
                &path,
                "temp file left by an interrupted write".into(),
                removed,
            );
        }
    }
    if repair {
        store.remove(&damaged, Removal::Damaged);
        upkeep::reconcile(store);
    }
    report
}

/// Version-index records that do not parse (the proxy would start them afresh).
fn check_asset_records(root: &Path, repair: bool, report: &mut VerifyReport) {
    for path in files_below(&root.join("assets"), "json") {
        let parses = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .is_some();
        if !parses {
            let removed = repair && fs::remove_file(&path).is_ok();
            report.findings.push(Finding {
                path,
                problem: "version index record unreadable".into(),
                repaired: removed,
            });
        }
    }
}
