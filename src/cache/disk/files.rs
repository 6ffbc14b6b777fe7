//! The disk tier: one file per entry under `<cache-dir>/v1/entries/<2 hex>/<sha256 of key>`,
//! written atomically and verified by checksum when read (see `reading` for what each read
//! checks). Blocking: the facade calls it from `spawn_blocking`.
//!
//! Several processes may share a directory. Each holds a shared lock on `v1/.lock` while it
//! runs; a process that finds no other holder (it gets the lock exclusively) removes the temp
//! files a crash left behind, which nobody else can be writing.

use bytes::Bytes;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::atomic_file;
use crate::cache::compress::{MAX_RATIO, ZSTD_LEVEL};
use crate::cache::disk::journal::Digest;
use crate::cache::disk::layout::{self, LayoutError, Opened};
use crate::cache::disk::listing::{files_below, remove_temps};
use crate::cache::disk::reading::{FileBytes, FileIdentity, ReadNow, Reading, READ_NOW_MAX};
use crate::cache::entry::{
    decode_metadata, entry_head, metadata_len, CachedResponse, CorruptEntry, EntryMeta,
    PREAMBLE_LEN,
};
use crate::cache::http::key::{hex, CacheKey};
use crate::file_lock::LockFile;

/// A disk-tier failure, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// An entry failed verification and was removed.
    #[error("corrupt cache entry {path} ({reason}); removed")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: CorruptEntry,
    },
    /// The directory's layout cannot be used.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_owned();
    move |source| DiskError::Io { op, path, source }
}

/// An entry file written from a body on disk.
pub struct WrittenFrom {
    /// Where it lies.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Whether its body went as a zstd frame.
    pub compressed: bool,
    /// That frame, when asked for and written.
    pub frame: Option<Bytes>,
}

/// Entries on disk.
pub struct DiskTier {
    root: PathBuf,
    /// Held (shared) for the life of the process; see the module doc.
    presence: LockFile,
    /// Reused read buffers, and the files whose bodies were checked.
    reading: Arc<Reading>,
}

/// What opening the tier found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// The layout found (and migrated when older).
    pub layout: Opened,
    /// Temp files of a crashed writer that were removed.
    pub temps_removed: usize,
    /// Whether another process was using the directory (temp files then stay).
    pub shared_with_another_process: bool,
}

impl DiskTier {
    /// Opens (creating) the tier under `dir`.
    pub fn open(dir: &Path) -> Result<(DiskTier, OpenReport), DiskError> {
        DiskTier::open_with(dir, true)
    }

    /// Opens the tier to inspect it: temp files are left for the caller to report.
    pub fn inspect(dir: &Path) -> Result<(DiskTier, OpenReport), DiskError> {
        DiskTier::open_with(dir, false)
    }

    fn open_with(dir: &Path, clean: bool) -> Result<(DiskTier, OpenReport), DiskError> {
        let layout = layout::open(dir)?;
        let root = dir.join("v1");
        let entries = root.join("entries");
        fs::create_dir_all(&entries).map_err(io_error("create", &entries))?;
        let lock_path = root.join(".lock");
        let presence = LockFile::open(&lock_path).map_err(io_error("open", &lock_path))?;
        let mut report = OpenReport {
            layout,
            temps_removed: 0,
            shared_with_another_process: false,
        };
        if presence
            .try_lock_exclusive()
            .map_err(io_error("lock", &lock_path))?
        {
            if clean {
                report.temps_removed = remove_temps(&root).map_err(io_error("clean", &root))?;
            }
            presence.unlock().map_err(io_error("unlock", &lock_path))?;
        } else {
            report.shared_with_another_process = true;
        }
        presence
            .lock_shared()
            .map_err(io_error("lock", &lock_path))?;
        let tier = DiskTier {
            root,
            presence,
            reading: Arc::default(),
        };
        Ok((tier, report))
    }

    /// Whether no other process has the tier open (checked now).
    pub fn is_sole_user(&self) -> bool {
        let sole = self.presence.try_lock_exclusive().unwrap_or(false);
        if sole {
            // Back to sharing; a failure leaves the lock exclusive, which only makes another
            // process believe it is not alone.
            let _ = self.presence.lock_shared();
        }
        sole
    }

    /// The directory holding the tier's files (`<cache-dir>/v1`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the entry for `key` lives.
    pub fn path_of(&self, key: &CacheKey) -> PathBuf {
        self.path_of_digest(&key.digest_bytes())
    }

    /// Where the entry whose key has `digest` lives.
    pub fn path_of_digest(&self, digest: &Digest) -> PathBuf {
        let name = hex(digest);
        self.root.join("entries").join(&name[..2]).join(name)
    }

    /// Reads and verifies the entry for `key`. A corrupt entry is removed and reported as an
    /// error; the caller treats it as a miss.
    pub fn read(&self, key: &CacheKey) -> Result<Option<CachedResponse>, DiskError> {
        let entry = self.read_digest(&key.digest_bytes())?;
        // A different key with the same digest is not ours to serve (nor to remove).
        Ok(entry.filter(|entry| entry.meta.key == *key))
    }

    /// Reads and verifies the entry whose key has `digest`, whatever its key. A corrupt entry
    /// is removed and reported.
    pub fn read_digest(&self, digest: &Digest) -> Result<Option<CachedResponse>, DiskError> {
        let path = self.path_of_digest(digest);
        let read = || -> io::Result<(FileBytes, FileIdentity)> {
            let mut file = fs::File::open(&path)?;
            let identity = FileIdentity::of(&file)?;
            Ok((self.reading.read(&mut file, &identity)?, identity))
        };
        let (bytes, identity) = match read() {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        self.decode(digest, bytes, identity, false)
            .map_err(|reason| {
                let _ = fs::remove_file(&path);
                DiskError::Corrupt { path, reason }
            })
    }

    /// The entry for `key` if reading it needs no wait for the disk: a file of at most
    /// [`READ_NOW_MAX`] bytes that the page cache holds whole and that decodes. Anything else
    /// (a larger file, one not cached, a failure, damage) is [`ReadNow::Later`], for
    /// [`DiskTier::read`] on a thread that may block, which also deals with failures.
    pub fn read_now(&self, key: &CacheKey) -> ReadNow<Option<CachedResponse>> {
        let digest = key.digest_bytes();
        let file = match fs::File::open(self.path_of_digest(&digest)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return ReadNow::Read(None),
            Err(_) => return ReadNow::Later,
        };
        let identity = match FileIdentity::of(&file) {
            Ok(identity) if identity.bytes() <= READ_NOW_MAX => identity,
            _ => return ReadNow::Later,
        };
        let Ok(Some(bytes)) = self.reading.read_cached(&file, &identity) else {
            return ReadNow::Later;
        };
        match self.decode(&digest, bytes, identity, true) {
            Ok(entry) => ReadNow::Read(entry.filter(|entry| entry.meta.key == *key)),
            Err(_) => ReadNow::Later,
        }
    }

    /// The entry in `read`, read from the file `identity`, if its key has `digest`; its body
    /// checksum is checked unless this process checked this very file before. A checked
    /// file's zstd frame is kept as it is when `keep_frame`: on the thread that serves the
    /// request, where a body a client needs as it is would be decoded anyway, and not on a
    /// blocking thread, which can decode it without holding a request up.
    fn decode(
        &self,
        digest: &Digest,
        read: FileBytes,
        identity: FileIdentity,
        keep_frame: bool,
    ) -> Result<Option<CachedResponse>, CorruptEntry> {
        let checked = self.reading.is_verified(&identity);
        let entry =
            CachedResponse::decode_checking(read.bytes, read.buffer_bytes, !checked, keep_frame)?;
        if entry.meta.key.digest_bytes() != *digest {
            return Ok(None);
        }
        if !checked {
            self.reading.verified(identity);
        }
        Ok(Some(entry))
    }

    /// Stores `entry` atomically, replacing any older one under its key; returns the file's
    /// size. Recreates the directories if they were deleted.
    pub fn write(&self, entry: &CachedResponse) -> Result<u64, DiskError> {
        let path = self.path_of(&entry.meta.key);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        let (head, body) = entry.encoded_parts();
        atomic_file::write_parts(&path, &[&head, body], 0o600).map_err(io_error("write", &path))?;
        Ok((head.len() + body.len()) as u64)
    }

    /// Stores the entry of `meta` atomically with its body read from `body` (at its start),
    /// as a zstd frame when `compress` and that makes it at least a tenth smaller. With
    /// `keep_frame`, a frame written is read back (from the page cache) for a memory copy.
    pub fn write_from(
        &self,
        meta: &EntryMeta,
        body: &mut fs::File,
        compress: bool,
        keep_frame: bool,
    ) -> Result<WrittenFrom, DiskError> {
        use std::io::{Seek, Write};
        let path = self.path_of(&meta.key);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        let failed = io_error("write", &path);
        let written = (|| -> io::Result<(u64, bool, Option<Bytes>)> {
            let mut temp = tempfile::Builder::new()
                .prefix(atomic_file::TEMP_PREFIX)
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .tempfile_in(dir)?;
            let mut compressed = false;
            let mut frame = None;
            if compress {
                temp.write_all(&entry_head(meta, true))?;
                let frame_start = temp.stream_position()?;
                let mut encoder = zstd::stream::Encoder::new(temp.as_file_mut(), ZSTD_LEVEL)?;
                encoder.include_checksum(true)?;
                // Known, the size lets zstd size its window and tables to the body.
                encoder.set_pledged_src_size(Some(meta.body_len))?;
                io::copy(body, &mut encoder)?;
                encoder.finish()?;
                let frame_len = temp.stream_position()? - frame_start;
                compressed = (frame_len as f64) <= meta.body_len as f64 * MAX_RATIO;
                if compressed && keep_frame {
                    use std::io::Read;
                    let mut kept = vec![0; usize::try_from(frame_len).map_err(io::Error::other)?];
                    temp.seek(io::SeekFrom::Start(frame_start))?;
                    temp.read_exact(&mut kept)?;
                    frame = Some(Bytes::from(kept));
                }
                if !compressed {
                    body.rewind()?;
                    temp.as_file_mut().set_len(0)?;
                    temp.rewind()?;
                }
            }
            if !compressed {
                temp.write_all(&entry_head(meta, false))?;
                io::copy(body, &mut temp)?;
            }
            let size = temp.stream_position()?;
            temp.as_file().sync_all()?;
            temp.persist(&path).map_err(|e| e.error)?;
            fs::File::open(dir)?.sync_all()?;
            Ok((size, compressed, frame))
        })()
        .map_err(failed)?;
        let (size, compressed, frame) = written;
        Ok(WrittenFrom {
            path,
            size,
            compressed,
            frame,
        })
    }

    /// Every entry file, for listing and purging.
    pub fn entry_paths(&self) -> Vec<PathBuf> {
        files_below(&self.root.join("entries"), "")
    }

    /// The metadata of the entry file at `path`, reading no body; with the file's size.
    pub fn read_meta(&self, path: &Path) -> Result<(EntryMeta, u64), DiskError> {
        use std::io::Read;
        let mut file = fs::File::open(path).map_err(io_error("open", path))?;
        let size = file.metadata().map_err(io_error("stat", path))?.len();
        let mut head = vec![0u8; PREAMBLE_LEN];
        file.read_exact(&mut head).map_err(io_error("read", path))?;
        let corrupt = |reason| DiskError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let meta_len = metadata_len(&head).map_err(corrupt)?;
        head.resize(PREAMBLE_LEN + meta_len, 0);
        file.read_exact(&mut head[PREAMBLE_LEN..])
            .map_err(io_error("read", path))?;
        let meta = decode_metadata(&head).map_err(corrupt)?;
        Ok((meta, size))
    }

    /// Removes the entry file at `path`. A fan-out directory that is a symbolic link is not
    /// the proxy's: nothing is removed through it.
    pub fn remove_path(&self, path: &Path) -> Result<(), DiskError> {
        let through_link = path
            .parent()
            .and_then(|dir| fs::symlink_metadata(dir).ok())
            .is_some_and(|meta| meta.file_type().is_symlink());
        if through_link {
            return Err(io_error("remove", path)(io::Error::other(
                "its directory is a symbolic link the proxy did not make",
            )));
        }
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
            _ => Ok(()),
        }
    }

    /// Removes the entry whose key has `digest`; a missing entry is not an error.
    pub fn remove_digest(&self, digest: &Digest) -> Result<(), DiskError> {
        self.remove_path(&self.path_of_digest(digest))
    }
}
