//! The cache directory's layout version, in `<cache-dir>/layout.json`. A directory written by
//! an older layout is migrated; one written by a newer proxy (or not by this one at all) is
//! refused with a message saying what to do, never misread.
//!
//! Layouts: 1 had entries under `v1/` and no disk index; 2 adds the index journal
//! (`v1/index.journal`), rebuilt from the entries' metadata when missing, which is all a
//! migration from 1 needs; 3 lets entry files hold zstd-compressed bodies (entry format 3).
//! Layout-2 entries are valid layout-3 entries, so a migration from 2 only rewrites the
//! marker — and keeps a layout-2 proxy from reading a compressed body as it is.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_file;

/// The layout this proxy writes.
pub const LAYOUT: u32 = 3;

/// What opening found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A new, empty cache.
    New,
    /// The current layout.
    Current,
    /// An older layout, migrated to the current one.
    Migrated {
        /// The layout found.
        from: u32,
    },
}

/// Why a directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Written by a proxy with a layout this one does not know.
    #[error(
        "cache directory {dir} has layout {found}, which this proxy (layout {LAYOUT}) cannot \
         read; run the proxy version that wrote it, point --cache-dir at another directory, or \
         delete {dir} to start an empty cache"
    )]
    Unknown {
        /// The cache directory.
        dir: PathBuf,
        /// What its marker says.
        found: String,
    },
    /// The marker could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    layout: u32,
}

/// Checks (and when needed migrates or creates) the layout of the cache in `dir`.
pub fn open(dir: &Path) -> Result<Opened, LayoutError> {
    let path = dir.join("layout.json");
    let io_err = |op, source| LayoutError::Io {
        op,
        path: path.clone(),
        source,
    };
    let opened = match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Marker>(&bytes) {
            Ok(Marker { layout: LAYOUT }) => return Ok(Opened::Current),
            Ok(Marker {
                layout: from @ (1 | 2),
            }) => Opened::Migrated { from },
            Ok(Marker { layout }) => {
                return Err(LayoutError::Unknown {
                    dir: dir.to_owned(),
                    found: layout.to_string(),
                })
            }
            Err(_) => {
                return Err(LayoutError::Unknown {
                    dir: dir.to_owned(),
                    found: format!("unreadable ({})", path.display()),
                })
            }
        },
        // Layout 1 wrote no marker.
        Err(e) if e.kind() == io::ErrorKind::NotFound && dir.join("v1").exists() => {
            Opened::Migrated { from: 1 }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Opened::New,
        Err(e) => return Err(io_err("read", e)),
    };
    fs::create_dir_all(dir).map_err(|e| io_err("create", e))?;
    let marker = serde_json::to_vec(&Marker { layout: LAYOUT }).unwrap_or_default();
    atomic_file::write(&path, &marker, 0o600).map_err(|e| io_err("write", e))?;
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_created_migrated_or_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        assert_eq!(open(root).expect("new"), Opened::New);
        assert_eq!(open(root).expect("again"), Opened::Current);

        fs::remove_file(root.join("layout.json")).expect("remove marker");
        fs::create_dir_all(root.join("v1/entries")).expect("old tree");
        assert_eq!(open(root).expect("old"), Opened::Migrated { from: 1 });
        assert_eq!(open(root).expect("migrated"), Opened::Current);

        fs::write(root.join("layout.json"), r#"{"layout": 2}"#).expect("write marker");
        assert_eq!(open(root).expect("layout 2"), Opened::Migrated { from: 2 });
        assert_eq!(open(root).expect("migrated"), Opened::Current);

        for marker in [r#"{"layout": 4}"#, "not json"] {
            fs::write(root.join("layout.json"), marker).expect("write marker");
            let message = open(root).expect_err("refused").to_string();
            assert!(message.contains("cannot read"), "{message}");
            assert!(message.contains("--cache-dir"), "{message}");
        }
    }
}
