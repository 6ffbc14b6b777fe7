//! The disk index: which entry files exist, their sizes and when each was last used, in
//! memory, kept in step with the journal every process sharing the directory appends to.
//! It gives usage without walking the directory and picks least-recently-used entries when
//! the tier is over its cap. The files stay the truth: a lost index is rebuilt from them
//! (`reconcile`).

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::cache::disk::journal::{Digest, Journal, Op, Record, Removal, Replay};

/// One entry file, as the index knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// File size in bytes.
    pub size: u64,
    /// Last use (or write), in milliseconds since the Unix epoch.
    pub used_ms: u64,
    /// How often it was used: one per batch of uses recorded (every two seconds at most).
    pub uses: u64,
}

/// The entries and their total size. Pure.
#[derive(Debug, Default)]
pub struct IndexState {
    slots: HashMap<Digest, Slot>,
    bytes: u64,
}

impl IndexState {
    /// Applies one record.
    pub fn apply(&mut self, record: &Record) {
        match record.op {
            Op::Put { size } => {
                // A rewrite of the same key (a refreshed entry) keeps its count of uses.
                let uses = self.slots.get(&record.digest).map_or(0, |old| old.uses);
                let slot = Slot {
                    size,
                    used_ms: record.at_ms,
                    uses,
                };
                if let Some(old) = self.slots.insert(record.digest, slot) {
                    self.bytes -= old.size;
                }
                self.bytes += size;
            }
            Op::Touch { uses } => {
                if let Some(slot) = self.slots.get_mut(&record.digest) {
                    slot.used_ms = slot.used_ms.max(record.at_ms);
                    slot.uses = slot.uses.saturating_add(uses);
                }
            }
            Op::Remove(_) => {
                if let Some(old) = self.slots.remove(&record.digest) {
                    self.bytes -= old.size;
                }
            }
        }
    }

    /// Entries and bytes.
    pub fn usage(&self) -> (u64, u64) {
        (self.slots.len() as u64, self.bytes)
    }

    /// The entry for `digest`.
    pub fn get(&self, digest: &Digest) -> Option<Slot> {
        self.slots.get(digest).copied()
    }

    /// Every entry.
    pub fn slots(&self) -> impl Iterator<Item = (&Digest, &Slot)> {
        self.slots.iter()
    }

    /// The least recently used entries whose removal brings the total to `target` bytes or
    /// below, oldest first.
    pub fn victims(&self, target: u64) -> Vec<(Digest, Slot)> {
        if self.bytes <= target {
            return Vec::new();
        }
        let mut all: Vec<(Digest, Slot)> = self.slots.iter().map(|(d, s)| (*d, *s)).collect();
        all.sort_unstable_by_key(|(digest, slot)| (slot.used_ms, *digest));
        let mut excess = self.bytes - target;
        let mut out = Vec::new();
        for (digest, slot) in all {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(slot.size);
            out.push((digest, slot));
        }
        out
    }

    /// One `Put` per entry, for compaction.
    /// One `Put` per entry, and a `Touch` carrying its count of uses when it has one.
    fn live_records(&self, writer: u64) -> Vec<Record> {
        let mut records = Vec::with_capacity(self.slots.len());
        for (digest, slot) in &self.slots {
            let record = |op| Record {
                op,
                digest: *digest,
                at_ms: slot.used_ms,
                writer,
            };
            records.push(record(Op::Put { size: slot.size }));
            if slot.uses > 0 {
                records.push(record(Op::Touch { uses: slot.uses }));
            }
        }
        records
    }
}

/// What a sync learned from other processes.
#[derive(Debug, Default)]
pub struct Learned {
    /// Entries another process removed in a way that makes copies invalid (an older version,
    /// a purge): drop them from memory.
    pub invalidated: Vec<Digest>,
    /// Whether the journal was missing or unreadable: the index must be rebuilt from files.
    pub lost: bool,
}

/// The index and its journal, shared by the components of one process.
pub struct DiskIndex {
    inner: Mutex<Locked>,
    /// This process's mark on its records, so it can tell its own from others'.
    writer: u64,
}

struct Locked {
    journal: Journal,
    known: Known,
}

/// What this process knows from the journal.
#[derive(Default)]
struct Known {
    state: IndexState,
    /// What was learned from others' records while appending, until the next `sync`.
    learned: Learned,
}

impl Known {
    /// Applies what was read from the journal; `writer` tells this process's records apart.
    fn absorb(&mut self, replay: Replay, writer: u64) {
        let before = replay.restarted.then(|| std::mem::take(&mut self.state));
        self.learned.lost |= replay.lost;
        for record in &replay.records {
            self.state.apply(record);
            if let Op::Remove(why) = record.op {
                if why.invalidates_copies() && record.writer != writer {
                    self.learned.invalidated.push(record.digest);
                }
            }
        }
        // Another process compacted the journal: removals this one had not read yet are now
        // only missing records, and which of them made copies invalid is not known. Every
        // entry that vanished is treated as if it had (a copy dropped for nothing costs a
        // refetch; a retired version served from memory would be wrong). A lost journal says
        // nothing about the entries, so it invalidates nothing.
        if let Some(before) = before.filter(|_| !replay.lost) {
            let state = &self.state;
            self.learned.invalidated.extend(
                before
                    .slots
                    .keys()
                    .filter(|digest| state.get(digest).is_none())
                    .copied(),
            );
        }
    }
}

impl Locked {
    /// Catches up with the journal, then rewrites it as one `Put` per entry, holding the
    /// journal's lock throughout so that nothing appended meanwhile is lost.
    fn compact(&mut self, writer: u64) -> io::Result<()> {
        let mut held = self.journal.lock()?;
        let replay = held.read_new()?;
        self.known.absorb(replay, writer);
        held.rewrite(&self.known.state.live_records(writer))
    }
}

/// Compact when the journal holds this many times more records than there are entries.
const COMPACT_FACTOR: u64 = 4;
/// ...and at least this many records (small journals are cheap to replay as they are).
const COMPACT_MIN_RECORDS: u64 = 50_000;

impl DiskIndex {
    /// The index of the tier rooted at `root`, read from the journal. `Learned::lost` says
    /// whether it must be rebuilt from the files.
    pub fn open(root: &std::path::Path) -> io::Result<(DiskIndex, Learned)> {
        let index = DiskIndex {
            inner: Mutex::new(Locked {
                journal: Journal::open(root)?,
                known: Known::default(),
            }),
            writer: writer_id(),
        };
        let learned = index.sync()?;
        Ok((index, learned))
    }

    fn locked(&self) -> MutexGuard<'_, Locked> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records written entry files: `(digest, size, last used)`.
    pub fn put(&self, files: &[(Digest, u64, u64)]) -> io::Result<()> {
        let records: Vec<Record> = files
            .iter()
            .map(|(digest, size, at_ms)| Record {
                op: Op::Put { size: *size },
                digest: *digest,
                at_ms: *at_ms,
                writer: self.writer,
            })
            .collect();
        self.append(&records)
    }

    /// Records removed entry files.
    pub fn remove(&self, digests: &[Digest], why: Removal, now_ms: u64) -> io::Result<()> {
        let records: Vec<Record> = digests
            .iter()
            .map(|digest| Record {
                op: Op::Remove(why),
                digest: *digest,
                at_ms: now_ms,
                writer: self.writer,
            })
            .collect();
        self.append(&records)
    }

    /// Records uses of entries (batched: recency costs no disk write per hit). Entries the
    /// index does not hold are left out.
    pub fn touch(&self, used: &[(Digest, u64)]) -> io::Result<()> {
        let records: Vec<Record> = {
            let locked = self.locked();
            used.iter()
                .filter(|(digest, at)| {
                    locked
                        .known
                        .state
                        .get(digest)
                        .is_some_and(|slot| slot.used_ms < *at)
                })
                .map(|(digest, at)| Record {
                    op: Op::Touch { uses: 1 },
                    digest: *digest,
                    at_ms: *at,
                    writer: self.writer,
                })
                .collect()
        };
        self.append(&records)
    }

    fn append(&self, records: &[Record]) -> io::Result<()> {
        let mut locked = self.locked();
        let replay = locked.journal.lock()?.append(records)?;
        locked.known.absorb(replay, self.writer);
        for record in records {
            locked.known.state.apply(record);
        }
        Ok(())
    }

    /// Reads what other processes appended; returns what was learned from them since the
    /// last sync (appends read their records too).
    pub fn sync(&self) -> io::Result<Learned> {
        let mut locked = self.locked();
        let replay = locked.journal.lock()?.read_new()?;
        locked.known.absorb(replay, self.writer);
        Ok(std::mem::take(&mut locked.known.learned))
    }

    /// Rewrites the journal as one record per entry when it has grown well past that.
    /// Returns whether it did.
    pub fn compact_if_long(&self) -> io::Result<bool> {
        let mut locked = self.locked();
        let records = locked.journal.bytes_read() / crate::cache::disk::journal::RECORD_LEN as u64;
        let live = locked.known.state.usage().0;
        if records < COMPACT_MIN_RECORDS || records < live.saturating_mul(COMPACT_FACTOR) {
            return Ok(false);
        }
        locked.compact(self.writer)?;
        Ok(true)
    }

    /// Rewrites the journal as one record per entry.
    pub fn compact(&self) -> io::Result<()> {
        self.locked().compact(self.writer)
    }

    /// Entries and bytes.
    pub fn usage(&self) -> (u64, u64) {
        self.locked().known.state.usage()
    }

    /// What the index knows of `digest`.
    pub fn get(&self, digest: &Digest) -> Option<Slot> {
        self.locked().known.state.get(digest)
    }

    /// The least recently used entries to remove to get to `target` bytes.
    pub fn victims(&self, target: u64) -> Vec<(Digest, Slot)> {
        self.locked().known.state.victims(target)
    }

    /// A copy of every entry the index holds.
    pub fn snapshot(&self) -> HashMap<Digest, Slot> {
        self.locked()
            .known
            .state
            .slots()
            .map(|(d, s)| (*d, *s))
            .collect()
    }
}

/// A mark for this process's records: its pid and start time, so a restarted process with a
/// reused pid does not take an old process's records for its own.
fn writer_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (u64::from(std::process::id()) << 32) | u64::from(nanos)
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
