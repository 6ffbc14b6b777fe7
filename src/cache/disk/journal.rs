//! The disk index's journal: fixed-size, checksummed records of entry files stored, used and
//! removed, appended by every process sharing the cache directory to `v1/index.journal`.
//!
//! Every operation holds the lock on `v1/index.lock` (each is short: one read or one write).
//! Compaction rewrites the journal as one `Put` per live entry and replaces the file by
//! rename, so a reader that finds the path pointing at a new file replays it from its start. A damaged record is
//! skipped by its checksum; a torn one (a write that failed half-way) is cut off.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::atomic_file;
use crate::file_lock::LockFile;

/// Bytes per record.
pub const RECORD_LEN: usize = 64;
const MAGIC: &[u8; 4] = b"APXJ";
const FORMAT: u8 = 1;

/// The SHA-256 of an entry's key: its file name, in raw bytes.
pub type Digest = [u8; 32];

/// Why an entry file was removed. Others learn from it whether their memory copy is still
/// good: an entry that made room on disk is, a retired version or a purged URL is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Least recently used, removed to keep the tier under `disk.max_mb`.
    Capacity,
    /// A newer version of its asset replaced it.
    OlderVersion,
    /// An operator purged it.
    Purge,
    /// It failed verification, or its file was gone.
    Damaged,
}

impl Removal {
    /// The reason's name in logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Removal::Capacity => "capacity",
            Removal::OlderVersion => "older-version",
            Removal::Purge => "purge",
            Removal::Damaged => "damaged",
        }
    }

    /// Whether copies of the entry elsewhere (another process's memory) must go too.
    pub fn invalidates_copies(self) -> bool {
        matches!(self, Removal::OlderVersion | Removal::Purge)
    }

    fn code(self) -> u8 {
        match self {
            Removal::Capacity => 1,
            Removal::OlderVersion => 2,
            Removal::Purge => 3,
            Removal::Damaged => 4,
        }
    }

    fn from_code(code: u8) -> Option<Removal> {
        [
            Removal::Capacity,
            Removal::OlderVersion,
            Removal::Purge,
            Removal::Damaged,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

/// What a record says happened to an entry file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Written (or rewritten) with `size` bytes.
    Put {
        /// File size.
        size: u64,
    },
    /// Used (served) at the record's time, `uses` times (a batch of uses, or the count a
    /// compaction carries over).
    Touch {
        /// How many uses the record stands for.
        uses: u64,
    },
    /// Removed.
    Remove(Removal),
}

/// One journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// What happened.
    pub op: Op,
    /// To which entry.
    pub digest: Digest,
    /// When, in milliseconds since the Unix epoch (for `Put` and `Touch`: last use).
    pub at_ms: u64,
    /// The process that wrote it.
    pub writer: u64,
}

impl Record {
    /// The record's bytes: op, reason, digest, size, time, writer, checksum.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        let (op, reason, size) = match self.op {
            Op::Put { size } => (1, 0, size),
            Op::Touch { uses } => (2, 0, uses),
            Op::Remove(why) => (3, why.code(), 0),
        };
        out[0] = op;
        out[1] = reason;
        out[2..34].copy_from_slice(&self.digest);
        out[34..42].copy_from_slice(&size.to_le_bytes());
        out[42..50].copy_from_slice(&self.at_ms.to_le_bytes());
        out[50..58].copy_from_slice(&self.writer.to_le_bytes());
        let sum = xxh3_64(&out[..58]);
        out[58..64].copy_from_slice(&sum.to_le_bytes()[..6]);
        out
    }

    /// Parses a record; `None` when damaged or not a record.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let bytes: &[u8; RECORD_LEN] = bytes.try_into().ok()?;
        if xxh3_64(&bytes[..58]).to_le_bytes()[..6] != bytes[58..64] {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let op = match (bytes[0], bytes[1]) {
            (1, 0) => Op::Put { size: u64_at(34) },
            // Records written before uses were counted carry 0: one use.
            (2, 0) => Op::Touch {
                uses: u64_at(34).max(1),
            },
            (3, code) => Op::Remove(Removal::from_code(code)?),
            _ => return None,
        };
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&bytes[2..34]);
        Some(Record {
            op,
            digest,
            at_ms: u64_at(42),
            writer: u64_at(50),
        })
    }
}

fn header() -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4] = FORMAT;
    out
}

/// What reading the journal found.
#[derive(Debug, Default)]
pub struct Replay {
    /// The records, in order.
    pub records: Vec<Record>,
    /// Whether the file is a different one than before (compacted, or recreated): the records
    /// are then the whole journal, to replace what the reader knew.
    pub restarted: bool,
    /// Whether no valid journal was there (missing, or an unknown header): the index must be
    /// rebuilt from the entry files.
    pub lost: bool,
    /// Records skipped by their checksum.
    pub damaged: usize,
}

/// The journal file as one process sees it.
pub struct Journal {
    path: PathBuf,
    lock: LockFile,
    file: Option<File>,
    /// Where this process has read up to.
    offset: u64,
}

impl Journal {
    /// The journal under a disk tier's root; nothing is read until the first `lock`.
    pub fn open(root: &Path) -> io::Result<Journal> {
        Ok(Journal {
            path: root.join("index.journal"),
            lock: LockFile::open(&root.join("index.lock"))?,
            file: None,
            offset: 0,
        })
    }

    /// Takes the journal for one short operation; others wait. Every operation holds it:
    /// appends are one write, reads a few records, so nobody waits long.
    pub fn lock(&mut self) -> io::Result<LockedJournal<'_>> {
        if !self.lock_path_exists() {
            // The directory was deleted under us: a new lock file, or we would lock alone.
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            self.lock = LockFile::open(&self.lock_path())?;
        }
        self.lock.lock_exclusive()?;
        Ok(LockedJournal { journal: self })
    }

    fn lock_path(&self) -> PathBuf {
        self.path.with_file_name("index.lock")
    }

    fn lock_path_exists(&self) -> bool {
        self.lock_path().exists()
    }

    /// Bytes of journal this process has read.
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// Whether the open file is the one at the path (not replaced by compaction or deleted).
    fn is_current(&self) -> io::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let open = file.metadata()?;
        match fs::metadata(&self.path) {
            Ok(now) => Ok(now.ino() == open.ino() && now.dev() == open.dev()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The journal while this process holds its lock; released on drop.
pub struct LockedJournal<'a> {
    journal: &'a mut Journal,
}

impl LockedJournal<'_> {
    /// The records appended since this process last read; the whole journal the first time
    /// or after another process compacted or recreated it.
    pub fn read_new(&mut self) -> io::Result<Replay> {
        let journal = &mut *self.journal;
        let mut replay = Replay::default();
        if !journal.is_current()? {
            replay.restarted = true;
            journal.offset = 0;
            journal.file = match File::open(&journal.path) {
                Ok(file) => Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
        }
        let len = match journal.file.as_ref() {
            Some(file) => file.metadata()?.len(),
            None => 0,
        };
        if journal.offset == 0 {
            let mut head = [0u8; RECORD_LEN];
            let valid = match journal.file.as_mut() {
                Some(file) if len >= RECORD_LEN as u64 => {
                    file.seek(SeekFrom::Start(0))?;
                    file.read_exact(&mut head)?;
                    head == header()
                }
                _ => false,
            };
            if !valid {
                // Missing or unknown: start a new journal; the index is rebuilt from files.
                replay.lost = true;
                journal.file = Some(create(&journal.path)?);
                journal.offset = RECORD_LEN as u64;
                return Ok(replay);
            }
            journal.offset = RECORD_LEN as u64;
        }
        let Some(file) = journal.file.as_mut() else {
            return Ok(replay);
        };
        let whole = (len.saturating_sub(journal.offset) / RECORD_LEN as u64) * RECORD_LEN as u64;
        if whole == 0 {
            return Ok(replay);
        }
        let mut bytes = vec![0u8; usize::try_from(whole).unwrap_or(0)];
        file.seek(SeekFrom::Start(journal.offset))?;
        file.read_exact(&mut bytes)?;
        journal.offset += whole;
        for chunk in bytes.chunks_exact(RECORD_LEN) {
            match Record::decode(chunk) {
                Some(record) => replay.records.push(record),
                None => replay.damaged += 1,
            }
        }
        Ok(replay)
    }

    /// Appends `records` in one write, after reading what others appended (returned, so the
    /// caller applies the file in order). A torn record left by a failed write is cut first.
    pub fn append(&mut self, records: &[Record]) -> io::Result<Replay> {
        let replay = self.read_new()?;
        if records.is_empty() {
            return Ok(replay);
        }
        let journal = &mut *self.journal;
        // Opened for each append, so no file stays open for writing between them.
        let mut file = open_append(&journal.path)?;
        let len = file.metadata()?.len();
        if len != journal.offset {
            file.set_len(journal.offset)?;
        }
        let bytes: Vec<u8> = records.iter().flat_map(|r| r.encode()).collect();
        if let Err(e) = file.write_all(&bytes) {
            // Leave no partial record behind for the next writer to misalign on.
            let _ = file.set_len(journal.offset);
            return Err(e);
        }
        journal.offset += bytes.len() as u64;
        Ok(replay)
    }

    /// Replaces the journal with `records` (one `Put` per live entry): compaction.
    pub fn rewrite(&mut self, records: &[Record]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity((records.len() + 1) * RECORD_LEN);
        bytes.extend_from_slice(&header());
        for record in records {
            bytes.extend_from_slice(&record.encode());
        }
        let journal = &mut *self.journal;
        if let Some(dir) = journal.path.parent() {
            fs::create_dir_all(dir)?;
        }
        atomic_file::write(&journal.path, &bytes, 0o600)?;
        journal.file = Some(File::open(&journal.path)?);
        journal.offset = bytes.len() as u64;
        Ok(())
    }
}

impl Drop for LockedJournal<'_> {
    fn drop(&mut self) {
        // Closing the lock file (or the process) releases it too; a failure leaves nothing
        // to undo.
        let _ = self.journal.lock.unlock();
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// A new journal holding only its header, replacing whatever was at `path`.
fn create(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    atomic_file::write(path, &header(), 0o600)?;
    File::open(path)
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
