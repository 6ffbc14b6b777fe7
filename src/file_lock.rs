//! Advisory file locks (fs4) that let several proxy processes share one directory. A lock is
//! released when its `LockFile` is dropped (or its process dies).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use fs4::FileExt;

/// A file used only to be locked; created when missing.
pub struct LockFile(File);

impl LockFile {
    /// Opens (creating) the lock file at `path`, unlocked. It is held open read-only: a
    /// file system with no file open for writing can be remounted read-only under a
    /// running proxy (it then forwards until the disk is writable again).
    pub fn open(path: &Path) -> io::Result<LockFile> {
        match File::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)?;
                File::open(path).map(LockFile)
            }
            opened => opened.map(LockFile),
        }
    }

    /// Waits for the lock, exclusively.
    pub fn lock_exclusive(&self) -> io::Result<()> {
        FileExt::lock(&self.0)
    }

    /// Takes the lock exclusively if nobody holds it; `false` when somebody does.
    pub fn try_lock_exclusive(&self) -> io::Result<bool> {
        match FileExt::try_lock(&self.0) {
            Ok(()) => Ok(true),
            Err(fs4::TryLockError::WouldBlock) => Ok(false),
            Err(fs4::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Waits for the lock, shared with other shared holders.
    pub fn lock_shared(&self) -> io::Result<()> {
        FileExt::lock_shared(&self.0)
    }

    /// Releases the lock.
    pub fn unlock(&self) -> io::Result<()> {
        FileExt::unlock(&self.0)
    }
}
