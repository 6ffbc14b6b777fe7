//! Coalescing across the processes that share one cache directory (neighbours): before a
//! process fetches a cold key it takes the key's lock file (`fills/<digest>.lock`, an
//! advisory lock); a neighbour that finds it held waits for the entry file the holder writes
//! instead of fetching too. The holder keeps the lock until the entry is on disk. The kernel
//! releases the lock of a process that dies, so a killed holder delays the others only until
//! their next look. Blocking.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use fs4::FileExt;

use crate::cache::disk::journal::Digest;
use crate::cache::http::key::hex;

/// A key's fill lock, held: dropping it removes the lock file and releases the lock.
#[derive(Debug)]
pub struct NeighbourLock {
    /// Open for as long as the lock is held (closing it releases the lock).
    _file: File,
    path: PathBuf,
}

impl Drop for NeighbourLock {
    fn drop(&mut self) {
        // Removed while still locked: a neighbour that opened it meanwhile finds, once it
        // gets the lock, that the path names another file (or none), and opens it again.
        let _ = fs::remove_file(&self.path);
    }
}

/// What trying a key's fill lock found.
#[derive(Debug)]
pub enum Attempt {
    /// This process holds it now: fetch, and keep it until the entry is written.
    Lead(NeighbourLock),
    /// A neighbour holds it: it is fetching the key.
    Held,
}

/// Tries the fill lock of the key with `digest` under `root` (the tier's directory), without
/// waiting.
pub fn try_lock(root: &Path, digest: &Digest) -> io::Result<Attempt> {
    let dir = root.join("fills");
    let path = dir.join(format!("{}.lock", hex(digest)));
    // A holder removes its file as it lets go: a lock won on a removed file is no lock, and
    // the file is opened again (a few times at most: each round means another fill ended).
    for _ in 0..8 {
        let file = match open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir)?;
                open(&path)?
            }
            opened => opened?,
        };
        match FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => return Ok(Attempt::Held),
            Err(fs4::TryLockError::Error(e)) => return Err(e),
        }
        let held = file.metadata()?;
        match fs::metadata(&path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                return Ok(Attempt::Lead(NeighbourLock { _file: file, path }))
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Attempt::Held)
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_file_goes_with_it() {
        let dir = tempfile::tempdir().expect("dir");
        let digest = [7u8; 32];
        let Attempt::Lead(lock) = try_lock(dir.path(), &digest).expect("try") else {
            panic!("the first try leads");
        };
        // flock locks belong to the open file: a second open in this process contends like
        // another process would.
        assert!(matches!(try_lock(dir.path(), &digest), Ok(Attempt::Held)));
        assert!(matches!(
            try_lock(dir.path(), &[8u8; 32]),
            Ok(Attempt::Lead(_))
        ));
        drop(lock);
        assert_eq!(
            fs::read_dir(dir.path().join("fills")).expect("dir").count(),
            0
        );
        assert!(matches!(
            try_lock(dir.path(), &digest),
            Ok(Attempt::Lead(_))
        ));
    }
}
