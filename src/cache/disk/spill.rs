//! A fill's body on its way to disk as it arrives, so that a large or abandoned download
//! never sits in memory whole: the chunks go through a small bounded channel to a blocking
//! task that appends them to a temp file in the cache directory, hashing as it goes. Ending it
//! cleanly hands over the finished file; dropping it (an error, a cancelled fill) deletes the
//! file. The channel's bound is the only memory a spill holds, and a full channel holds back
//! the origin's body (back-pressure), never the other way round.

use std::io::{self, Seek, Write};
use std::path::Path;
use std::task::{Context, Poll};

use bytes::Bytes;
use tempfile::NamedTempFile;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;
use xxhash_rust::xxh3::Xxh3;

use crate::atomic_file::TEMP_PREFIX;

/// Bodies longer than this are spilled to disk as they arrive.
pub const SPILL_AT: u64 = 1024 * 1024;
/// Chunks on their way to the file at most.
const IN_FLIGHT_CHUNKS: usize = 8;

enum Piece {
    Chunk(Bytes),
    /// The body is complete: hand the file over.
    End,
}

/// A body being written to a temp file.
pub struct Spill {
    sender: PollSender<Piece>,
    done: oneshot::Receiver<io::Result<Spilled>>,
}

/// A complete body in a temp file (deleted when this is dropped), with its length and xxh3.
pub struct Spilled {
    /// The file, positioned at its start.
    pub file: NamedTempFile,
    /// Bytes.
    pub len: u64,
    /// xxh3-64 of the bytes.
    pub xxh3: u64,
}

impl Spill {
    /// Starts a spill into a temp file under `dir`, beginning with `first`. Inside a tokio
    /// runtime.
    pub fn start(dir: &Path, first: Bytes) -> Spill {
        let (sender, receiver) = mpsc::channel(IN_FLIGHT_CHUNKS);
        let (done_tx, done) = oneshot::channel();
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || {
            let result = write_all(&dir, first, receiver);
            // Nobody waiting means the spill was abandoned; the file goes with the result.
            let _ = done_tx.send(result);
        });
        Spill {
            sender: PollSender::new(sender),
            done,
        }
    }

    /// Ready for the next chunk (the channel has room); `Err` when the writer is gone.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.sender
            .poll_reserve(cx)
            .map(|ready| ready.map_err(|_| ()))
    }

    /// Waits until the next chunk can be sent.
    pub async fn ready(&mut self) -> Result<(), ()> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Sends a chunk; call only after `poll_ready` said ready. `false` when the writer is gone.
    pub fn send(&mut self, chunk: Bytes) -> bool {
        self.sender.send_item(Piece::Chunk(chunk)).is_ok()
    }

    /// Ends the body and waits for the finished file.
    pub async fn finish(mut self) -> io::Result<Spilled> {
        if self.ready().await.is_err() || self.sender.send_item(Piece::End).is_err() {
            return self
                .done
                .await
                .unwrap_or_else(|_| Err(io::Error::other("spill writer stopped")));
        }
        self.sender.close();
        self.done
            .await
            .unwrap_or_else(|_| Err(io::Error::other("spill writer stopped")))
    }
}

/// Writes `first` and every chunk received until `End` into a new temp file under `dir`.
/// Without `End` (the sender dropped) the file is deleted and an error returned.
fn write_all(dir: &Path, first: Bytes, mut receiver: mpsc::Receiver<Piece>) -> io::Result<Spilled> {
    let mut file = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir);
    let mut hasher = Xxh3::new();
    let mut len = 0u64;
    let mut failed: Option<io::Error> = None;
    let mut append = |file: &mut io::Result<NamedTempFile>, chunk: &[u8]| {
        hasher.update(chunk);
        len += chunk.len() as u64;
        if failed.is_none() {
            let written = match file {
                Ok(file) => file.write_all(chunk),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            // Keep receiving after a failure: the body still goes to its client.
            failed = written.err();
        }
    };
    append(&mut file, &first);
    loop {
        match receiver.blocking_recv() {
            Some(Piece::Chunk(chunk)) => append(&mut file, &chunk),
            Some(Piece::End) => break,
            None => return Err(io::Error::other("the fill was abandoned")),
        }
    }
    if let Some(error) = failed {
        return Err(error);
    }
    let mut file = file?;
    file.flush()?;
    file.as_file_mut().rewind()?;
    Ok(Spilled {
        file,
        len,
        xxh3: hasher.digest(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test]
    async fn a_finished_spill_hands_over_every_byte_and_an_abandoned_one_leaves_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spill = Spill::start(dir.path(), Bytes::from_static(b"hello "));
        for chunk in [&b"big "[..], b"wide ", b"world"] {
            spill.ready().await.expect("writer running");
            assert!(spill.send(Bytes::copy_from_slice(chunk)));
        }
        let mut spilled = spill.finish().await.expect("finished");
        let mut text = String::new();
        spilled.file.read_to_string(&mut text).expect("read back");
        assert_eq!(text, "hello big wide world");
        assert_eq!(spilled.len, 20);
        assert_eq!(
            spilled.xxh3,
            xxhash_rust::xxh3::xxh3_64(b"hello big wide world")
        );
        drop(spilled);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "deleted after use"
        );

        let mut abandoned = Spill::start(dir.path(), Bytes::from_static(b"part"));
        abandoned.ready().await.expect("writer running");
        abandoned.send(Bytes::from_static(b" of it"));
        drop(abandoned);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_dir(dir.path()).expect("dir").count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the temp file is removed"
            );
            tokio::task::yield_now().await;
        }
    }
}
