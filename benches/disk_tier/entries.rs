//! Entries written straight into a cache directory's layout.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use url::Url;

use asset_proxy::cache::disk::DiskTier;
use asset_proxy::cache::entry::{CachedResponse, EntryMeta, Lifetime};
use asset_proxy::cache::http::key::CacheKey;

pub fn bench_url(n: u64) -> String {
    format!("http://127.0.0.1:9/bench/{n}.js?v=1")
}

/// Writes `count` small entries straight into the layout, as a long-running proxy would have.
pub fn populate(cache: &Path, count: u64) {
    populate_sized(cache, count, 1024);
}

pub fn populate_sized(cache: &Path, count: u64, body_len: usize) {
    let (tier, _) = DiskTier::open(cache).expect("open tier");
    let tier = Arc::new(tier);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/javascript"));
    let body = Bytes::from(vec![b'x'; body_len]);
    let threads: Vec<_> = (0..2u64)
        .map(|part| {
            let (tier, headers, body) = (tier.clone(), headers.clone(), body.clone());
            std::thread::spawn(move || {
                for n in (part..count).step_by(2) {
                    let url = Url::parse(&bench_url(n)).expect("url");
                    let key = CacheKey::new(&url, &HeaderMap::new());
                    let meta = EntryMeta::new(
                        key,
                        StatusCode::OK,
                        &headers,
                        Lifetime::Pinned {
                            ttl_secs: 30 * 86_400,
                        },
                        SystemTime::now(),
                        &body,
                    );
                    let entry = CachedResponse::new(meta, body.clone());
                    let path = tier.path_of(&entry.meta.key);
                    std::fs::create_dir_all(path.parent().expect("fan-out dir")).expect("dir");
                    std::fs::write(&path, entry.encode()).expect("write entry");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
}
