//! Writing a file so that a reader sees the old content or the new, never a part of either,
//! even across a crash: temp file in the same directory, fsync, rename, fsync the directory.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Name prefix of temp files; anything so named in a cache directory is left from a crash.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Replaces `path` with `bytes` atomically, the new file having permission bits `mode`.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_parts(path, &[bytes], mode)
}

/// Replaces `path` atomically with `parts` one after the other (no buffer joins them).
pub fn write_parts(path: &Path, parts: &[&[u8]], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        // A bare file name is in the working directory.
        Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
        Some(parent) => parent,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path has no parent",
            ))
        }
    };
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    for part in parts {
        temp.write_all(part)?;
    }
    temp.as_file().sync_all()?;
    // On failure the temp file is removed when the error drops it.
    temp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}
