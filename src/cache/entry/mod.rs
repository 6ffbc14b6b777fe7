//! A stored response: `EntryMeta` (serde) and its body, with what a held entry learns while
//! it is served (codings made, uses, a prefetch's mark). Its byte layout on disk is
//! `format`'s. Pure: no I/O.

mod format;

pub use format::{decode_metadata, entry_head, metadata_len, CorruptEntry, PREAMBLE_LEN};

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::cache::compress::{self, Coding};
use crate::cache::http::key::CacheKey;
use crate::cache::http::version::{AssetId, Version};

/// Bytes an entry holds beside what `EntryMeta::held_bytes` counts by length: its own fields
/// and the allocations they sit in.
const META_BOOKKEEPING: u64 = 700;
/// Bytes a stored header holds beside its text: two strings in the stored list, a slot and a
/// value in the parsed map.
const HEADER_BOOKKEEPING: u64 = 150;

/// Counts what is written to it.
struct CountedBytes(u64);

impl std::io::Write for CountedBytes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How long an entry may be served, and how it is judged after that.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Lifetime {
    /// Fresh for a fixed time from storing: versioned URLs (the version pins the content) and
    /// URLs a cache rule names.
    Pinned {
        /// Seconds.
        ttl_secs: u64,
    },
    /// HTTP caching (RFC 9111, shared cache) decides, from the stored request and response.
    Standard(Box<http_cache_semantics::CachePolicy>),
}

/// What is stored beside a body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryMeta {
    /// The key the entry was stored under; checked on read.
    pub key: CacheKey,
    /// Response status.
    pub status: u16,
    /// End-to-end response headers. Values are kept byte for byte: each byte is one char
    /// (Latin-1), so headers that are not UTF-8 survive the JSON.
    pub headers: Vec<(String, String)>,
    /// Asset identity, for versioned URLs.
    pub asset: Option<AssetId>,
    /// Version, for versioned URLs.
    pub version: Option<Version>,
    /// When the entry was stored (or last revalidated), in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// How long the entry may be served.
    pub lifetime: Lifetime,
    /// Body length in bytes.
    pub body_len: u64,
    /// xxh3-64 of the body.
    pub body_xxh3: u64,
    /// `headers` parsed, kept after the first use: every hit reads them several times.
    #[serde(skip)]
    parsed: OnceLock<HeaderMap>,
    /// Whether the body may be stored and sent compressed, kept after the first use.
    #[serde(skip)]
    compressible: OnceLock<bool>,
}

/// A complete cached response. Cloning shares the body: a hit copies no body bytes.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// Metadata.
    pub meta: EntryMeta,
    /// The body as received from the origin (content coding kept): `None` when the stored
    /// frame it is decoded from does not give it. Unset for an entry read from a file this
    /// process checked before and kept as its zstd frame, until a client needs it as it is.
    body: OnceLock<Option<Bytes>>,
    /// When this copy was last served; the disk index learns it in batches.
    pub used: UseStamp,
    /// Set when the entry was fetched ahead of any client's request.
    pub prefetched: Option<Arc<PrefetchMark>>,
    /// The body in content codings, made once each (stored compressed, or for clients).
    pub encodings: Encodings,
    /// Bytes of the buffer the body (or its stored frame) was read into, beyond it: the
    /// entry file's head read with it, and a reused buffer's rounding up. Kept as long as
    /// the body is.
    pub buffer_beside: u64,
}

/// An entry's body in content codings. Each is made at most once, off the request path; a
/// made coding that did not pay off is `None`.
#[derive(Debug, Default)]
pub struct Encodings {
    zstd: OnceLock<Option<Bytes>>,
    br: OnceLock<Option<Bytes>>,
    gzip: OnceLock<Option<Bytes>>,
    /// Codings (as bits) someone started to make, so that each is made once.
    started: AtomicU8,
}

impl Encodings {
    fn slot(&self, coding: Coding) -> &OnceLock<Option<Bytes>> {
        match coding {
            Coding::Zstd => &self.zstd,
            Coding::Br => &self.br,
            Coding::Gzip => &self.gzip,
        }
    }

    /// The body in `coding`, if it has been made and paid off.
    pub fn get(&self, coding: Coding) -> Option<&Bytes> {
        self.slot(coding).get().and_then(Option::as_ref)
    }

    /// Whether `coding` was made (whether or not it paid off).
    pub fn is_made(&self, coding: Coding) -> bool {
        self.slot(coding).get().is_some()
    }

    /// Claims the making of `coding`: true for the first caller only.
    pub fn claim(&self, coding: Coding) -> bool {
        let bit = 1 << coding as u8;
        self.started.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// Records `coding` as made.
    pub fn set(&self, coding: Coding, encoded: Option<Bytes>) {
        let _ = self.slot(coding).set(encoded);
    }

    /// Bytes of the codings made (those that paid off).
    pub fn made_bytes(&self) -> u64 {
        [Coding::Zstd, Coding::Br, Coding::Gzip]
            .into_iter()
            .filter_map(|coding| self.get(coding))
            .map(|bytes| bytes.len() as u64)
            .sum()
    }

    /// The zstd frame the body is stored as, made now if it was not: `None` when it does not
    /// pay off. Blocking (compression); for the disk writer.
    pub fn stored_zstd(&self, body: &[u8]) -> Option<&Bytes> {
        self.zstd
            .get_or_init(|| compress::zstd_if_smaller(body))
            .as_ref()
    }
}

impl Clone for Encodings {
    fn clone(&self) -> Encodings {
        Encodings {
            zstd: self.zstd.clone(),
            br: self.br.clone(),
            gzip: self.gzip.clone(),
            started: AtomicU8::new(0),
        }
    }
}

/// The mark of a prefetched entry: whether a client has used it yet, and its size. The
/// prefetcher keeps the same mark, to count unused prefetches as wasted.
#[derive(Debug, Default)]
pub struct PrefetchMark {
    used: AtomicBool,
    bytes: AtomicU64,
}

impl PrefetchMark {
    /// Records a client's use; true for the first one.
    pub fn claim(&self) -> bool {
        !self.used.load(Ordering::Relaxed) && !self.used.swap(true, Ordering::Relaxed)
    }

    /// Whether a client has used the entry.
    pub fn is_used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Records the body size once the entry is stored.
    pub fn set_bytes(&self, bytes: u64) {
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// The body size; 0 until stored.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// When this copy of an entry was last served, in milliseconds since the Unix epoch, and how
/// often: two relaxed atomic operations per hit, so recency and frequency cost the hot path
/// no lock and no disk write.
#[derive(Debug, Default)]
pub struct UseStamp {
    at_ms: AtomicU64,
    count: AtomicU64,
}

impl UseStamp {
    /// Records a use at `now_ms`.
    pub fn mark(&self, now_ms: u64) {
        // Hits of one entry from several threads in the same millisecond: a read of the
        // stamp is shared by all of them, a write is not.
        if self.at_ms.load(Ordering::Relaxed) < now_ms {
            self.at_ms.fetch_max(now_ms, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The last use recorded; 0 when never served.
    pub fn get(&self) -> u64 {
        self.at_ms.load(Ordering::Relaxed)
    }

    /// How often this copy was served.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Clone for UseStamp {
    fn clone(&self) -> UseStamp {
        UseStamp {
            at_ms: AtomicU64::new(self.get()),
            count: AtomicU64::new(self.count()),
        }
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl EntryMeta {
    /// Metadata for a body about to be stored; not versioned until `asset`/`version` are set.
    pub fn new(
        key: CacheKey,
        status: StatusCode,
        headers: &HeaderMap,
        lifetime: Lifetime,
        stored_at: SystemTime,
        body: &[u8],
    ) -> EntryMeta {
        let (len, xxh3) = (body.len() as u64, xxh3_64(body));
        EntryMeta::for_body(key, status, headers, lifetime, stored_at, len, xxh3)
    }

    /// Metadata for a body of `len` bytes whose xxh3 is `xxh3` (a body not in memory).
    pub fn for_body(
        key: CacheKey,
        status: StatusCode,
        headers: &HeaderMap,
        lifetime: Lifetime,
        stored_at: SystemTime,
        len: u64,
        xxh3: u64,
    ) -> EntryMeta {
        let mut meta = EntryMeta {
            key,
            status: status.as_u16(),
            headers: Vec::new(),
            asset: None,
            version: None,
            stored_at_ms: 0,
            lifetime,
            body_len: len,
            body_xxh3: xxh3,
            parsed: OnceLock::new(),
            compressible: OnceLock::new(),
        };
        meta.set_headers(headers);
        meta.set_stored_at(stored_at);
        meta
    }

    /// Replaces the stored headers.
    pub fn set_headers(&mut self, headers: &HeaderMap) {
        self.headers = headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), latin1(value.as_bytes())))
            .collect();
        self.parsed = OnceLock::new();
        self.compressible = OnceLock::new();
    }

    /// Sets when the entry was stored (or revalidated).
    pub fn set_stored_at(&mut self, at: SystemTime) {
        self.stored_at_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }

    /// When the entry was stored (or last revalidated).
    pub fn stored_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.stored_at_ms)
    }

    /// Status, falling back to 200 for a value that is not a status (never written so).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK)
    }

    /// Whether the body arrived without a content coding and is of a compressible type (see
    /// `compress::compressible`).
    pub fn is_compressible(&self) -> bool {
        *self.compressible.get_or_init(|| {
            let len = usize::try_from(self.body_len).unwrap_or(usize::MAX);
            compress::compressible(self.header_map(), len)
        })
    }

    /// Bytes the metadata holds in memory, estimated from what it keeps: its own fields, the
    /// key's text, each stored header as text and
    /// (once served) parsed, and a standard entry's caching policy, which keeps the request's
    /// and the response's headers again: four times the length of its JSON (measured: about
    /// three and a half, each header a slot in a map and a value of its own).
    pub fn held_bytes(&self) -> u64 {
        let headers: u64 = self
            .headers
            .iter()
            .map(|(name, value)| 2 * (name.len() + value.len()) as u64 + HEADER_BOOKKEEPING)
            .sum();
        let policy = match &self.lifetime {
            Lifetime::Pinned { .. } => 0,
            // Written out to be measured: the memory tier weighs an entry when it takes it.
            Lifetime::Standard(policy) => {
                let mut counted = CountedBytes(0);
                serde_json::to_writer(&mut counted, policy).map_or(0, |()| 4 * counted.0)
            }
        };
        META_BOOKKEEPING + self.key.text_len() + headers + policy
    }

    /// Whether the body came without a content coding: it answers every client, whatever
    /// codings it accepts.
    pub fn body_uncoded(&self) -> bool {
        compress::uncoded(self.header_map())
    }

    /// The stored headers as a map; a header that no longer parses is left out.
    pub fn header_map(&self) -> &HeaderMap {
        self.parsed.get_or_init(|| self.parse_headers())
    }

    fn parse_headers(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let bytes: Vec<u8> = value.chars().map(|c| c as u32 as u8).collect();
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&bytes),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

impl CachedResponse {
    /// A response with its metadata, not yet served.
    pub fn new(meta: EntryMeta, body: Bytes) -> CachedResponse {
        CachedResponse {
            meta,
            body: OnceLock::from(Some(body)),
            used: UseStamp::default(),
            prefetched: None,
            encodings: Encodings::default(),
            buffer_beside: 0,
        }
    }

    /// A response kept as the zstd `frame` its body is stored as: clients that take zstd get
    /// the frame, and the body is decoded only when one needs it as it is.
    pub fn from_frame(meta: EntryMeta, frame: Bytes) -> CachedResponse {
        let entry = CachedResponse {
            body: OnceLock::new(),
            ..CachedResponse::new(meta, Bytes::new())
        };
        entry.encodings.set(Coding::Zstd, Some(frame));
        entry
    }

    /// The body as received, decoded from the stored frame on the first call for an entry
    /// kept as its frame — and then checked against the metadata's length and checksum.
    /// `None` when it does not decode to that body: the entry is damaged. Blocking for an
    /// entry kept as its frame (see [`CachedResponse::body_is_at_hand`]).
    pub fn body(&self) -> Option<&Bytes> {
        self.body
            .get_or_init(|| {
                let frame = self.encodings.get(Coding::Zstd)?;
                let body = compress::unzstd(frame, self.meta.body_len)?;
                (body.len() as u64 == self.meta.body_len && xxh3_64(&body) == self.meta.body_xxh3)
                    .then_some(body)
            })
            .as_ref()
    }

    /// The zstd frame the body is stored as, made now if it was not: `None` when it does not
    /// pay off. Blocking (compression); for the disk writer.
    pub fn stored_zstd(&self) -> Option<&Bytes> {
        if self.encodings.is_made(Coding::Zstd) {
            return self.encodings.get(Coding::Zstd);
        }
        self.encodings.stored_zstd(self.body()?)
    }

    /// Whether [`CachedResponse::body`] answers without decoding.
    pub fn body_is_at_hand(&self) -> bool {
        self.body.get().is_some()
    }

    /// Bytes of the body held as it is: none while the entry is kept as its frame.
    pub fn body_bytes(&self) -> u64 {
        self.body
            .get()
            .and_then(Option::as_ref)
            .map_or(0, |body| body.len() as u64)
    }

    /// Bytes this entry holds: its body and every coding made of it, and the rest of the
    /// buffer they were read into.
    pub fn held_bytes(&self) -> u64 {
        self.body_bytes() + self.encodings.made_bytes() + self.buffer_beside
    }

    /// Bytes the entry holds in memory: its body and codings, and what its metadata holds
    /// (estimated; `tests/entry_weight.rs` holds the estimate to a count of the heap entries
    /// really take).
    pub fn heap_bytes(&self) -> u64 {
        self.held_bytes() + self.meta.held_bytes()
    }

    /// The same body with new metadata (after a 304): the codings made of the body are kept.
    pub fn with_meta(&self, meta: EntryMeta) -> CachedResponse {
        let mut entry = CachedResponse::new(meta, Bytes::new());
        entry.body = self.body.clone();
        entry.encodings = self.encodings.clone();
        entry.buffer_beside = self.buffer_beside;
        entry
    }
}

#[cfg(test)]
mod tests;
