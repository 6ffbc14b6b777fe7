//! Reading entry files cheaply, hit after hit: the buffers large files are read into are
//! used again once their body is dropped (a fresh buffer of that size comes from the system
//! zeroed, page by page, and goes back to it on free — more work than the read itself), and a
//! file whose body checksum this process has checked is not hashed again until it changes.
//! A small file the page cache holds whole can be read where the request is served, with
//! reads that return rather than wait for the disk (`read_cached`); the rest is read on a
//! blocking thread.
//!
//! What a read guarantees: the preamble, the metadata checksum and the body length are
//! checked on every read; the body checksum is checked on the first read of a file by this
//! process and again whenever the file changes — a rewrite is a new file (a new inode), and
//! any write moves its change time, which nothing can set back. Damage that leaves a file's
//! identity as it was (bits rotting on the medium) is caught by `cache verify`, by any other
//! process, and after a restart. A compressed file read again where the request is served
//! keeps its zstd frame, whose header must announce the body's length: clients that take zstd
//! get the frame, and the body is decoded (and checked against its checksum) only for an answer
//! that needs it as it is.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;

/// Files smaller than this are read into an ordinary allocation. Larger ones take a pooled
/// buffer: a fresh allocation of their size is zeroed before each read, and pooling files
/// from 64 KiB (compressed 256 KiB scripts are about 90 KB) made their disk hits 13 % faster
/// (BENCHMARKS.md, (k)).
pub const POOLED_FROM: u64 = 64 * 1024;
/// Idle buffers kept for reuse, in bytes at most.
const MAX_IDLE_BYTES: usize = 32 * 1024 * 1024;
/// Buffer sizes are rounded up to this, so that files of similar sizes share buffers.
pub const GRAIN: usize = 64 * 1024;
/// Files up to this size are read on the thread that serves the request when the page cache
/// holds them whole (no wait for the disk, so no hop to a blocking thread and back); larger
/// ones, whose copy and checks take longer, are read on a blocking thread.
pub const READ_NOW_MAX: u64 = 1024 * 1024;
/// Files whose bodies were checked, at most; the set starts over beyond (checking again is
/// only slower).
const MAX_VERIFIED: usize = 200_000;

/// Which file a read saw: equal identities are the same bytes, unless the medium failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl FileIdentity {
    /// The file's length in bytes.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// The identity of an open file.
    pub fn of(file: &File) -> io::Result<FileIdentity> {
        let meta = file.metadata()?;
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Ok(FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified_ns: ns(meta.mtime(), meta.mtime_nsec()),
            changed_ns: ns(meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// What a read that must not wait for the disk found.
#[derive(Debug)]
pub enum ReadNow<T> {
    /// The read is done: what it found.
    Read(T),
    /// It would have waited, or failed: to be done on a thread that may block.
    Later,
}

/// A file's bytes, and the size of the buffer that holds them (a reused buffer is rounded
/// up), which whoever keeps the bytes keeps.
#[derive(Debug)]
pub struct FileBytes {
    pub bytes: Bytes,
    pub buffer_bytes: usize,
}

/// Reused read buffers and the files already checked.
#[derive(Default)]
pub struct Reading {
    idle: Mutex<Idle>,
    verified: Mutex<HashSet<FileIdentity>>,
}

#[derive(Default)]
struct Idle {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl Reading {
    /// Reads the whole of `file`, `identity` its identity, into a buffer of the pool when it is
    /// large.
    pub fn read(
        self: &Arc<Self>,
        file: &mut File,
        identity: &FileIdentity,
    ) -> io::Result<FileBytes> {
        self.fill(identity, |buffer| file.read_exact(buffer))
    }

    /// Reads the whole of `file` as [`Reading::read`] does if the page cache holds all of it,
    /// without ever waiting for the disk; `None` if it does not (or the kernel or file system
    /// cannot tell), for the caller to read it where waiting is allowed.
    pub fn read_cached(
        self: &Arc<Self>,
        file: &File,
        identity: &FileIdentity,
    ) -> io::Result<Option<FileBytes>> {
        let mut whole = false;
        let bytes = self.fill(identity, |buffer| {
            whole = read_without_waiting(file, buffer)?;
            Ok(())
        })?;
        Ok(whole.then_some(bytes))
    }

    /// A buffer of the file's length filled by `read`: an ordinary allocation for small files
    /// (the allocator reuses those), one of the pool for large ones.
    fn fill(
        self: &Arc<Self>,
        identity: &FileIdentity,
        read: impl FnOnce(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<FileBytes> {
        let len = usize::try_from(identity.len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        if identity.len < POOLED_FROM {
            let mut buffer = vec![0; len];
            read(&mut buffer)?;
            return Ok(FileBytes {
                bytes: Bytes::from(buffer),
                buffer_bytes: len,
            });
        }
        let mut buffer = self.take(len);
        read(&mut buffer[..len])?;
        let buffer_bytes = buffer.len();
        let bytes = Bytes::from_owner(Pooled {
            buffer,
            len,
            pool: Arc::downgrade(self),
        });
        Ok(FileBytes {
            bytes,
            buffer_bytes,
        })
    }

    /// Whether this file's body checksum was checked already.
    pub fn is_verified(&self, identity: &FileIdentity) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(identity)
    }

    /// Notes that this file's body checksum held.
    pub fn verified(&self, identity: FileIdentity) {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(identity);
    }

    /// An initialised buffer of at least `len` bytes: the smallest idle one that fits, else a
    /// new one.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let best = idle
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, buffer)| buffer.len() >= len)
            .min_by_key(|(_, buffer)| buffer.len())
            .map(|(at, _)| at);
        if let Some(at) = best {
            let buffer = idle.buffers.swap_remove(at);
            idle.bytes -= buffer.len();
            return buffer;
        }
        drop(idle);
        vec![0; len.div_ceil(GRAIN) * GRAIN]
    }

    fn give_back(&self, buffer: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.bytes + buffer.len() <= MAX_IDLE_BYTES {
            idle.bytes += buffer.len();
            idle.buffers.push(buffer);
        }
    }
}

/// Fills `buffer` from the start of `file` with reads that return rather than wait for the
/// disk (`RWF_NOWAIT`): whether the page cache held all of it. A kernel or file system that
/// cannot read so says not, and the file is read where waiting is allowed.
fn read_without_waiting(file: &File, buffer: &mut [u8]) -> io::Result<bool> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    let mut done = 0;
    while done < buffer.len() {
        let slices = &mut [io::IoSliceMut::new(&mut buffer[done..])];
        match preadv2(file, slices, done as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => done += read,
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => return Ok(false),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// A pooled buffer holding one file's bytes; back to the pool when the last `Bytes` of it
/// drops.
struct Pooled {
    buffer: Vec<u8>,
    len: usize,
    pool: Weak<Reading>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(std::mem::take(&mut self.buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn buffers_are_used_again_and_bytes_are_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&content))
            .expect("write");
        let reading = Arc::new(Reading::default());
        let read = || {
            let mut file = File::open(&path).expect("open");
            let identity = FileIdentity::of(&file).expect("stat");
            reading.read(&mut file, &identity).expect("read").bytes
        };
        let first = read();
        assert_eq!(first, content);
        let address = first.as_ptr();
        drop(first);
        let second = read();
        assert_eq!(second, content);
        assert_eq!(second.as_ptr(), address, "the same buffer, used again");
        // Held by a body, a buffer is not handed out twice.
        let third = read();
        assert_ne!(third.as_ptr(), second.as_ptr());
    }

    #[test]
    fn only_a_file_the_page_cache_holds_is_read_without_waiting() {
        let dir = tempfile::tempdir().expect("dir");
        let reading = Arc::new(Reading::default());
        for len in [3_000u32, 300_000] {
            let path = dir.path().join(format!("f{len}"));
            let content: Vec<u8> = (0..len).map(|n| (n % 251) as u8).collect();
            let mut file = File::create(&path).expect("create");
            file.write_all(&content).expect("write");
            // Written and synced: in the page cache, and clean, so it can be dropped from it.
            file.sync_all().expect("sync");
            let file = File::open(&path).expect("open");
            let identity = FileIdentity::of(&file).expect("stat");
            let cached = reading.read_cached(&file, &identity).expect("read");
            let cached = cached.map(|read| read.bytes);
            assert_eq!(cached.as_deref(), Some(&content[..]), "{len} bytes, cached");

            // The kernel may keep a page a moment longer (one still on another CPU's list
            // of new pages, under a busy test run): advised again until it lets go, bounded.
            // There is no event to wait for.
            let mut dropped = None;
            for _ in 0..100 {
                rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
                dropped = reading.read_cached(&file, &identity).expect("read");
                if dropped.is_none() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(
                dropped.is_none(),
                "{len} bytes, not in the page cache: left for later"
            );
            let mut file = file;
            let read = reading.read(&mut file, &identity).expect("read");
            assert_eq!(read.bytes, content);
        }
    }

    #[test]
    fn a_write_makes_a_file_another() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").expect("write");
        let before = FileIdentity::of(&File::open(&path).expect("open")).expect("stat");
        let reading = Reading::default();
        reading.verified(before);
        assert!(reading.is_verified(&before));
        // Same length, same content even: a write moves the change time.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"abc"))
            .expect("rewrite");
        let after = FileIdentity::of(&File::open(&path).expect("open")).expect("stat");
        assert_ne!(before, after);
        assert!(!reading.is_verified(&after));
    }
}
