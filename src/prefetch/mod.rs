//! Predictive prefetch: when the proxy serves an HTML document or a bootstrap script, it
//! scans a copy of the body (bounded, after the bytes went to the client) for the same-origin
//! assets it refers to and fetches the ones the cache does not hold, so that they are there
//! (or on their way, and the browser's request joins the fetch) when the browser asks.
//!
//! This module owns the limits and the accounting: which responses are scanned, how many
//! prefetches run at once (in all and per origin), and which prefetched entries were used
//! or wasted. The fetch itself is the proxy's ordinary cache path (`proxy::prefetch`).

pub mod refs;
pub mod tap;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::HeaderMap;
use tokio::sync::Semaphore;
use url::Url;

use crate::cache::entry::PrefetchMark;
use crate::config::PrefetchConfig;
use crate::stats::Stats;
pub use refs::Kind;

/// Prefetches waiting for a slot at most; more are dropped (and counted).
const MAX_WAITING: usize = 256;
/// A prefetched entry no client used within this time counts as wasted.
pub const USE_WINDOW: Duration = Duration::from_secs(300);
/// Decoded text scanned at most, whatever the body's compression ratio.
const MAX_DECODED: usize = 4 << 20;

/// The prefetcher: limits and accounting.
pub struct Prefetcher {
    config: PrefetchConfig,
    slots: Arc<Semaphore>,
    origins: Mutex<HashMap<String, Arc<Semaphore>>>,
    waiting: Arc<AtomicUsize>,
    /// Prefetched entries not yet used, oldest first.
    unused: Mutex<VecDeque<(Instant, Arc<PrefetchMark>)>>,
    stats: Arc<Stats>,
}

impl Prefetcher {
    /// A prefetcher with `config`'s limits.
    pub fn new(config: PrefetchConfig, stats: Arc<Stats>) -> Prefetcher {
        Prefetcher {
            slots: Arc::new(Semaphore::new(config.concurrency)),
            config,
            origins: Mutex::new(HashMap::new()),
            waiting: Arc::new(AtomicUsize::new(0)),
            unused: Mutex::new(VecDeque::new()),
            stats,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PrefetchConfig {
        &self.config
    }

    /// Whether a 200 answer for `url` with `headers` is scanned, and as what.
    pub fn scan_kind(&self, url: &Url, headers: &HeaderMap) -> Option<Kind> {
        if !self.config.enabled {
            return None;
        }
        // Runs for every 200 answer: no allocation until a script's name is matched.
        let content_type = headers.get(CONTENT_TYPE).map_or(&b""[..], |v| v.as_bytes());
        let starts_with = |prefix: &[u8]| {
            content_type
                .get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        };
        if starts_with(b"text/html") || starts_with(b"application/xhtml") {
            return Some(Kind::Html);
        }
        let file_name = url
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .unwrap_or("");
        let js_name = file_name
            .get(file_name.len().saturating_sub(3)..)
            .is_some_and(|end| end.eq_ignore_ascii_case(".js"));
        let js_type = || {
            content_type
                .windows(b"javascript".len())
                .any(|w| w.eq_ignore_ascii_case(b"javascript"))
        };
        if !js_name && !js_type() {
            return None;
        }
        // The globs match ignoring case.
        self.config
            .scripts
            .is_match(file_name)
            .then_some(Kind::Script)
    }

    /// Bytes of a body scanned at most.
    pub fn scan_limit(&self) -> usize {
        self.config.scan_bytes
    }

    /// Runs `job` once a slot for `origin` and a slot over all are free. `false` (the job is
    /// dropped, and counted) when too many wait already.
    pub fn submit(&self, origin: &str, job: impl Future<Output = ()> + Send + 'static) -> bool {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.stats.prefetch_dropped.inc();
            return false;
        }
        let per_origin = self
            .origins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(origin.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_origin)))
            .clone();
        let (slots, waiting) = (self.slots.clone(), self.waiting.clone());
        tokio::spawn(async move {
            let origin_slot = per_origin.acquire_owned().await;
            let slot = slots.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::Relaxed);
            if origin_slot.is_ok() && slot.is_ok() {
                job.await;
            }
        });
        self.forget_idle_origins();
        true
    }

    /// A new mark for an entry about to be prefetched; remembered until it is used or its
    /// time to be used has passed.
    pub fn mark(&self) -> Arc<PrefetchMark> {
        let mark = Arc::new(PrefetchMark::default());
        let mut unused = self.unused.lock().unwrap_or_else(PoisonError::into_inner);
        unused.push_back((Instant::now(), mark.clone()));
        drop(unused);
        self.sweep(Instant::now());
        mark
    }

    /// Counts as wasted the prefetched bytes no client used within `USE_WINDOW` of `now`,
    /// and forgets the marks that are settled. Called on every new mark and every read of
    /// the figures.
    pub fn sweep(&self, now: Instant) {
        let mut unused = self.unused.lock().unwrap_or_else(PoisonError::into_inner);
        unused.retain(|(at, mark)| {
            if mark.is_used() {
                return false;
            }
            if now.saturating_duration_since(*at) < USE_WINDOW {
                return true;
            }
            self.stats.prefetch_wasted_bytes.add(mark.bytes());
            false
        });
    }

    /// Drops the per-origin limits no prefetch holds or waits for, so that the map stays as
    /// small as the set of origins being prefetched from.
    fn forget_idle_origins(&self) {
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        if origins.len() > 64 {
            origins.retain(|_, limit| Arc::strong_count(limit) > 1);
        }
    }
}

/// The text of a scanned body: decoded per `Content-Encoding` (gzip, deflate, br), bounded;
/// `None` for codings it cannot read.
pub fn body_text(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let coding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let mut decoded = Vec::new();
    let read = crate::cache::compress::decoder(coding, body)?
        .take(MAX_DECODED as u64)
        .read_to_end(&mut decoded);
    // A body cut at the scan limit ends mid-stream: what was decoded is still worth scanning.
    if read.is_err() && decoded.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&decoded).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn unused_prefetches_count_as_wasted_once_their_window_passed() {
        let stats = Arc::new(Stats::default());
        let prefetcher = Prefetcher::new(crate::config::Config::default().prefetch, stats.clone());
        let (used, unused) = (prefetcher.mark(), prefetcher.mark());
        used.set_bytes(100);
        unused.set_bytes(40);
        assert!(used.claim());
        assert!(!used.claim(), "a use is counted once");
        prefetcher.sweep(Instant::now());
        assert_eq!(stats.prefetch_wasted_bytes.get(), 0);
        prefetcher.sweep(Instant::now() + USE_WINDOW);
        assert_eq!(stats.prefetch_wasted_bytes.get(), 40);
        prefetcher.sweep(Instant::now() + USE_WINDOW * 2);
        assert_eq!(stats.prefetch_wasted_bytes.get(), 40, "counted once");
    }

    #[test]
    fn documents_and_bootstrap_scripts_are_scanned() {
        let prefetcher = Prefetcher::new(
            crate::config::Config::default().prefetch,
            Arc::new(Stats::default()),
        );
        let cases = [
            (
                "https://a.test/",
                "text/html; charset=utf-8",
                Some(Kind::Html),
            ),
            ("https://a.test/x", "TEXT/HTML", Some(Kind::Html)),
            (
                "https://a.test/flutter_bootstrap.js",
                "text/javascript",
                Some(Kind::Script),
            ),
            ("https://a.test/web/Flutter.JS", "", Some(Kind::Script)),
            (
                "https://a.test/app-bootstrap.min.js",
                "application/javascript",
                Some(Kind::Script),
            ),
            ("https://a.test/main.dart.js?v=1", "text/javascript", None),
            (
                "https://a.test/flutter_bootstrap.js",
                "image/png",
                Some(Kind::Script),
            ),
            ("https://a.test/logo.png", "image/png", None),
        ];
        for (url, content_type, want) in cases {
            let mut headers = HeaderMap::new();
            if !content_type.is_empty() {
                headers.insert(CONTENT_TYPE, content_type.parse().expect("value"));
            }
            let url = Url::parse(url).expect("url");
            assert_eq!(
                prefetcher.scan_kind(&url, &headers),
                want,
                "{url} {content_type}"
            );
        }
    }

    #[test]
    fn compressed_bodies_are_decoded_for_scanning() {
        let text = "<script src=\"main.dart.js?v=3\"></script>";
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(text.as_bytes()).expect("gzip");
        let gzip = gzip.finish().expect("gzip");
        let mut headers = HeaderMap::new();
        assert_eq!(body_text(&headers, text.as_bytes()).as_deref(), Some(text));
        headers.insert(CONTENT_ENCODING, "gzip".parse().expect("value"));
        assert_eq!(body_text(&headers, &gzip).as_deref(), Some(text));
        // Cut short, as a scan limit cuts it: the decodable start is kept.
        assert!(
            body_text(&headers, &gzip[..gzip.len() - 8]).is_some_and(|t| t.starts_with("<script"))
        );
        headers.insert(CONTENT_ENCODING, "compress".parse().expect("value"));
        assert_eq!(body_text(&headers, &gzip), None);
    }
}
