//! Micro-benchmarks of the work done on every cacheable request before any I/O: version
//! detection, key building and hashing, a memory-tier lookup, and entry decoding (a disk hit).
//! Each group has a peer to compare against in the same run (a plain URL parse, a clone).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, StatusCode};
use url::Url;

use asset_proxy::cache::entry::{CachedResponse, EntryMeta, Lifetime};
use asset_proxy::cache::http::key::CacheKey;
use asset_proxy::cache::http::version;
use asset_proxy::cache::memory::MemoryTier;
use asset_proxy::Config;

const URLS: [&str; 4] = [
    "https://app.example.com/main.dart.js?v=3f2a9c1b",
    "https://cdn.example.com/assets/index-BxK9a2Zq.js",
    "https://www.gstatic.com/flutter-canvaskit/0123456789abcdef0123456789abcdef01234567/canvaskit.wasm",
    "https://app.example.com/api/users/42?page=2",
];

fn detection(c: &mut Criterion) {
    let policy = Config::default().policy;
    let urls: Vec<Url> = URLS.iter().map(|u| Url::parse(u).expect("url")).collect();
    let mut group = c.benchmark_group("version detection");
    group.bench_function("peer: url parse", |b| {
        b.iter(|| URLS.map(|u| Url::parse(black_box(u)).is_ok()))
    });
    group.bench_function("detect", |b| {
        b.iter(|| {
            urls.iter()
                .filter(|u| version::detect(black_box(u), &policy).is_some())
                .count()
        })
    });
    group.finish();
}

fn keys(c: &mut Criterion) {
    let url = Url::parse(URLS[0]).expect("url");
    let mut headers = HeaderMap::new();
    headers.insert(
        "accept-encoding",
        HeaderValue::from_static("gzip, deflate, br, zstd"),
    );
    let mut group = c.benchmark_group("cache key");
    group.bench_function("peer: url clone", |b| b.iter(|| black_box(&url).clone()));
    group.bench_function("build", |b| {
        b.iter(|| CacheKey::new(black_box(&url), &headers))
    });
    let key = CacheKey::new(&url, &headers);
    group.bench_function("digest (file name)", |b| {
        b.iter(|| black_box(&key).digest())
    });
    group.finish();
}

fn tiers(c: &mut Criterion) {
    let url = Url::parse(URLS[0]).expect("url");
    let key = CacheKey::new(&url, &HeaderMap::new());
    let body = Bytes::from(vec![7u8; 4 * 1024 * 1024]);
    let meta = EntryMeta::new(
        key.clone(),
        StatusCode::OK,
        &HeaderMap::new(),
        Lifetime::Pinned { ttl_secs: 60 },
        SystemTime::now(),
        &body,
    );
    let entry = CachedResponse::new(meta, body);
    let memory = MemoryTier::new(1 << 30, Duration::from_secs(300));
    memory.insert(Arc::new(entry.clone()));
    let encoded = entry.encode();
    let body = entry.body().cloned().unwrap_or_default();

    let mut group = c.benchmark_group("4 MiB entry");
    group.bench_function("peer: Bytes clone", |b| b.iter(|| black_box(&body).clone()));
    group.bench_function("memory get", |b| b.iter(|| memory.get(black_box(&key))));
    group.bench_function("decode + verify (disk hit)", |b| {
        b.iter(|| CachedResponse::decode(black_box(encoded.clone())).is_ok())
    });
    group.finish();
}

criterion_group!(benches, detection, keys, tiers);
criterion_main!(benches);
