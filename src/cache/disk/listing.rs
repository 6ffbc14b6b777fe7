//! Walking the cache directory: entry files and their digests, temp files a crash left,
//! symlinks that do not belong. Blocking, like the rest of the disk tier's file work.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic_file;
use crate::cache::disk::journal::Digest;

/// The digest an entry file is named by; `None` for a file that is not an entry.
pub fn digest_of_path(path: &Path) -> Option<Digest> {
    let name = path.file_name()?.to_str()?;
    if name.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (n, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(name.get(2 * n..2 * n + 2)?, 16).ok()?;
    }
    Some(digest)
}

/// Removes the temp files below `root`; returns how many.
pub fn remove_temps(root: &Path) -> io::Result<usize> {
    let temps = temp_files(root);
    for path in &temps {
        fs::remove_file(path)?;
    }
    Ok(temps.len())
}

/// The areas of the tier with fan-out directories.
const AREAS: [&str; 3] = ["entries", "assets", "vary"];

/// Temp files in the fan-out directories and directly under the root (the journal's).
/// Symbolic links are never followed, nor reported as temp files.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_owned()];
    for area in AREAS {
        dirs.extend(
            real_children(&root.join(area))
                .filter(|(_, kind)| kind.is_dir())
                .map(|(path, _)| path),
        );
    }
    dirs.iter()
        .flat_map(|dir| real_children(dir))
        .filter(|(path, kind)| {
            kind.is_file()
                && path.file_name().is_some_and(|name| {
                    name.to_string_lossy().starts_with(atomic_file::TEMP_PREFIX)
                })
        })
        .map(|(path, _)| path)
        .collect()
}

/// The symbolic links in the tier's areas: something put there by hand, never followed (a
/// link to a directory elsewhere would let a repair delete files outside the cache).
pub fn symlinks_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for area in AREAS {
        for (path, kind) in real_children(&root.join(area)) {
            if kind.is_symlink() {
                out.push(path);
            } else if kind.is_dir() {
                out.extend(
                    real_children(&path)
                        .filter(|(_, kind)| kind.is_symlink())
                        .map(|(path, _)| path),
                );
            }
        }
    }
    out
}

/// The entries of `dir` with their own file types (a symbolic link is a link, not what it
/// points to).
fn real_children(dir: &Path) -> impl Iterator<Item = (PathBuf, fs::FileType)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.path(), entry.file_type().ok()?)))
}

/// Files with `extension` in the fan-out directories below `dir`; symbolic links are left out.
pub fn files_below(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (sub, kind) in real_children(dir) {
        if !kind.is_dir() {
            continue;
        }
        for (path, kind) in real_children(&sub) {
            if !kind.is_file() {
                continue;
            }
            let Some(name) = path.file_name().map(|n| n.to_owned()) else {
                continue;
            };
            let name = name.to_string_lossy();
            let wanted = if extension.is_empty() {
                !name.contains('.')
            } else {
                path.extension().is_some_and(|e| e == extension)
            };
            if wanted && !name.starts_with(atomic_file::TEMP_PREFIX) {
                out.push(path);
            }
        }
    }
    out
}
