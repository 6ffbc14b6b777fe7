//! The checksummed byte layout an entry has on disk. Pure: encoding and decoding only.
//!
//! Layout: magic `APXE`, format byte, metadata length (u32 LE), xxh3 of the metadata (u64 LE),
//! the metadata as JSON, then the body: as it is (format 2), or as a zstd frame (format 3,
//! bodies stored compressed). The metadata holds the body's length and xxh3, checked after
//! decompression, so a truncated, extended or bit-flipped file is always caught.

use bytes::{BufMut, Bytes, BytesMut};
use xxhash_rust::xxh3::xxh3_64;

use super::{CachedResponse, EntryMeta};
use crate::cache::compress::{self, Coding};

const MAGIC: &[u8; 4] = b"APXE";
/// The body follows as it is.
const FORMAT: u8 = 2;
/// The body follows as a zstd frame.
const FORMAT_ZSTD: u8 = 3;
const PREAMBLE: usize = 4 + 1 + 4 + 8;

/// Why stored bytes are not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptEntry {
    /// Shorter than its own header says.
    #[error("truncated")]
    Truncated,
    /// Not an entry of this format.
    #[error("bad magic or unknown format")]
    Format,
    /// The metadata does not match its checksum or does not parse.
    #[error("metadata checksum or syntax mismatch")]
    Metadata,
    /// The body does not match its length or checksum.
    #[error("body length or checksum mismatch")]
    Body,
}

impl CachedResponse {
    /// The entry in its on-disk layout: compressed when its zstd frame was made and paid off.
    pub fn encode(&self) -> Bytes {
        let (head, body) = self.encoded_parts();
        let mut out = BytesMut::with_capacity(head.len() + body.len());
        out.put_slice(&head);
        out.put_slice(body);
        out.freeze()
    }

    /// The entry's on-disk layout in two parts, head and stored body, so that a writer needs
    /// no buffer the size of the body to join them.
    pub fn encoded_parts(&self) -> (Vec<u8>, &Bytes) {
        static NO_BODY: Bytes = Bytes::new();
        let (compressed, body) = match self.encodings.get(Coding::Zstd) {
            Some(frame) => (true, frame),
            // Without a frame, an entry holds its body.
            None => (false, self.body().unwrap_or(&NO_BODY)),
        };
        (entry_head(&self.meta, compressed), body)
    }

    /// Parses and verifies an entry; an uncompressed body shares `bytes`' memory.
    pub fn decode(bytes: Bytes) -> Result<CachedResponse, CorruptEntry> {
        let buffer_bytes = bytes.len();
        CachedResponse::decode_checking(bytes, buffer_bytes, true, false)
    }

    /// Parses an entry, checking its preamble, metadata and body length, and the body's
    /// checksum when `check_body` (a reader that checked these very bytes before may skip it;
    /// with `keep_frame`, a compressed body is then kept as its frame, decoded and checked
    /// when first needed).
    /// `bytes` lie in a buffer of `buffer_bytes`, which the entry keeps: its body, or its
    /// stored zstd frame, is a part of it.
    pub fn decode_checking(
        bytes: Bytes,
        buffer_bytes: usize,
        check_body: bool,
        keep_frame: bool,
    ) -> Result<CachedResponse, CorruptEntry> {
        let meta_end = PREAMBLE + metadata_len(&bytes)?;
        let meta = decode_metadata(&bytes)?;
        let stored = bytes.slice(meta_end..);
        let compressed = bytes[4] == FORMAT_ZSTD;
        // The frame's header says how long its body is: the length is checked on every read.
        if compressed
            && keep_frame
            && !check_body
            && compress::zstd_content_size(&stored) == Some(meta.body_len)
        {
            let mut entry = CachedResponse::from_frame(meta, stored);
            entry.buffer_beside = buffer_bytes.saturating_sub(bytes.len() - meta_end) as u64;
            return Ok(entry);
        }
        let body = if compressed {
            compress::unzstd(&stored, meta.body_len).ok_or(CorruptEntry::Body)?
        } else {
            stored.clone()
        };
        if body.len() as u64 != meta.body_len || (check_body && xxh3_64(&body) != meta.body_xxh3) {
            return Err(CorruptEntry::Body);
        }
        let mut entry = CachedResponse::new(meta, body);
        entry.buffer_beside = buffer_bytes.saturating_sub(stored.len()) as u64;
        if compressed {
            entry.encodings.set(Coding::Zstd, Some(stored));
        }
        Ok(entry)
    }
}

/// What an entry file holds before its body: preamble and metadata; the body that follows is
/// a zstd frame when `compressed`.
pub fn entry_head(meta: &EntryMeta, compressed: bool) -> Vec<u8> {
    // Serialising a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(meta).unwrap_or_default();
    let mut out = Vec::with_capacity(PREAMBLE + json.len());
    out.extend_from_slice(MAGIC);
    out.push(if compressed { FORMAT_ZSTD } else { FORMAT });
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3_64(&json).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Bytes an entry file starts with before its metadata.
pub const PREAMBLE_LEN: usize = PREAMBLE;

/// The metadata length an entry's preamble announces.
pub fn metadata_len(bytes: &[u8]) -> Result<usize, CorruptEntry> {
    if bytes.len() < PREAMBLE {
        return Err(CorruptEntry::Truncated);
    }
    if &bytes[..4] != MAGIC || !matches!(bytes[4], FORMAT | FORMAT_ZSTD) {
        return Err(CorruptEntry::Format);
    }
    Ok(u32::from_le_bytes(array(&bytes[5..9])) as usize)
}

/// Parses and verifies the metadata at the start of an entry, without its body (listing a
/// cache reads no bodies).
pub fn decode_metadata(bytes: &[u8]) -> Result<EntryMeta, CorruptEntry> {
    let meta_len = metadata_len(bytes)?;
    let meta_sum = u64::from_le_bytes(array(&bytes[9..17]));
    let meta_end = PREAMBLE
        .checked_add(meta_len)
        .filter(|end| *end <= bytes.len())
        .ok_or(CorruptEntry::Truncated)?;
    let meta_bytes = &bytes[PREAMBLE..meta_end];
    if xxh3_64(meta_bytes) != meta_sum {
        return Err(CorruptEntry::Metadata);
    }
    serde_json::from_slice(meta_bytes).map_err(|_| CorruptEntry::Metadata)
}

fn array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    out
}
