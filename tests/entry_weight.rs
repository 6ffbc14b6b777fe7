//! The memory tier weighs an entry by what it holds: its body, its codings and an estimate
//! of what its metadata holds (and its own bookkeeping beside); this measures what entries
//! really take on the heap (a counting allocator) and holds the estimate to it.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use url::Url;

use asset_proxy::cache::entry::{CachedResponse, EntryMeta, Lifetime};
use asset_proxy::cache::http::key::CacheKey;
use asset_proxy::cache::http::policy::{classify_request, storable, StoreLimits};
use asset_proxy::config::Config;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const ENTRIES: usize = 2000;

/// A CDN's answer to a small script, as a browser fetches it.
const RESPONSE: [(&str, &str); 12] = [
    ("content-type", "text/javascript; charset=utf-8"),
    ("content-length", "2048"),
    ("etag", "\"5f3c1a2b-800\""),
    ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
    ("cache-control", "public, max-age=600"),
    ("date", "Thu, 03 Dec 2026 12:00:00 GMT"),
    ("server", "cloudflare"),
    ("accept-ranges", "bytes"),
    ("access-control-allow-origin", "*"),
    ("vary", "Accept-Encoding"),
    ("x-content-type-options", "nosniff"),
    ("cf-cache-status", "HIT"),
];

const REQUEST: [(&str, &str); 9] = [
    ("host", "cdn.example.com"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
    ("accept", "*/*"),
    ("accept-language", "en-US,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("referer", "https://www.example.com/app/index.html"),
    ("sec-fetch-dest", "script"),
    ("sec-fetch-mode", "no-cors"),
    ("sec-fetch-site", "cross-site"),
];

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                http::HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("value"),
            )
        })
        .collect()
}

/// `ENTRIES` entries of 2 KiB bodies made by `make`, each served once (its headers parsed,
/// as a hit does): the heap they hold, per entry, and the weight of each.
fn measure(make: impl Fn(usize) -> CachedResponse) -> (u64, u64) {
    let mut held = Vec::with_capacity(ENTRIES);
    let before = dhat::HeapStats::get().curr_bytes;
    for n in 0..ENTRIES {
        let entry = make(n);
        let _ = entry.meta.header_map();
        held.push(Arc::new(entry));
    }
    let after = dhat::HeapStats::get().curr_bytes;
    let per_entry = (after - before) as u64 / ENTRIES as u64;
    let weight = held[0].heap_bytes();
    (per_entry, weight)
}

#[test]
fn an_entrys_weight_covers_the_heap_it_holds() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let config = Config::default();
    let limits = StoreLimits {
        max_object_bytes: u64::MAX,
        negative_ttl: std::time::Duration::from_secs(60),
        record_for: None,
    };
    let now = SystemTime::now();
    let body = vec![b'x'; 2048];
    let response_headers = headers(&RESPONSE);

    let pinned = |n: usize| {
        let url =
            Url::parse(&format!("https://cdn.example.com/assets/app.{n:08x}.js")).expect("url");
        let meta = EntryMeta::new(
            CacheKey::new(&url, &HeaderMap::new()),
            StatusCode::OK,
            &response_headers,
            Lifetime::Pinned { ttl_secs: 86_400 },
            now,
            &body,
        );
        CachedResponse::new(meta, Bytes::copy_from_slice(&body))
    };
    let standard = |n: usize| {
        let url = Url::parse(&format!("https://cdn.example.com/lib/widget{n}.js")).expect("url");
        let request_headers = headers(&REQUEST);
        let plan = classify_request(
            &Method::GET,
            &url,
            &request_headers,
            &config.policy,
            config.cache.max_age,
        )
        .expect("cacheable");
        let mut request = Request::new(());
        *request.uri_mut() = url.as_str().parse().expect("uri");
        *request.headers_mut() = request_headers;
        let mut response = Response::new(());
        *response.headers_mut() = response_headers.clone();
        let lifetime = storable(&plan, &request, &response, now, &limits).expect("storable");
        assert!(matches!(lifetime, Lifetime::Standard(_)));
        let meta = EntryMeta::new(
            CacheKey::new(&url, &HeaderMap::new()),
            StatusCode::OK,
            &response_headers,
            lifetime,
            now,
            &body,
        );
        CachedResponse::new(meta, Bytes::copy_from_slice(&body))
    };

    let measured = [("pinned", measure(pinned)), ("standard", measure(standard))];
    for (kind, (heap, weight)) in measured {
        println!("{kind}: {heap} bytes of heap per entry, weighed {weight}");
    }
    for (kind, (heap, weight)) in measured {
        assert!(weight >= heap, "{kind}: weighed {weight}, holds {heap}");
        assert!(
            weight <= heap * 2,
            "{kind}: weighed {weight}, twice what it holds ({heap})"
        );
    }
}
