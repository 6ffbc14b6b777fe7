//! The disk tier at fleet scale, measured with the real `proxy` binary (`scripts/bench_disk.sh`).
//!
//! 1. Start: time from spawning the proxy to the answer of a disk hit, over a cache of one
//!    entry (the peer) and over 100,000 entries — with their index, and with the index lost
//!    (the proxy serves at once and rebuilds it in the background; the rebuild is timed too).
//! 2. Pre-warming: the first requests after a restart, for 100 recently used 256 KiB assets,
//!    with the memory tier pre-warmed from disk and without (each then a disk hit).
//! 3. Memory bound: peak resident memory of the proxy under sustained load that misses, hits
//!    and evicts, against `memory.max_mb` + 64 MiB; disk usage against `disk.max_mb`.
//! 4. Compressed storage: bytes on disk and disk-hit throughput (read, verify and, for zstd
//!    entries, decompress) for JavaScript-like bodies stored as they are (the peer) and as
//!    zstd frames.
//!
//! Sizes can be changed with `DISK_BENCH_ENTRIES` and `DISK_BENCH_LOAD_SECS`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use url::Url;

use asset_proxy::cache::compress::Coding;
use asset_proxy::cache::disk::{DiskTier, ReadNow};
use asset_proxy::cache::entry::{CachedResponse, EntryMeta, Lifetime};
use asset_proxy::cache::http::key::CacheKey;

mod entries;
mod memory_bound;
mod proxy;

use entries::{bench_url, populate, populate_sized};
use memory_bound::memory_bound;
use proxy::{get_through, Proxy};

const MIB: u64 = 1024 * 1024;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let entries = env_or("DISK_BENCH_ENTRIES", 100_000);
    let load_secs = env_or("DISK_BENCH_LOAD_SECS", 30);
    let work = tempfile::tempdir().expect("temp dir");
    println!("disk tier benchmark: {entries} entries, {load_secs} s of load");
    start_times(work.path(), entries);
    first_requests_after_restart(work.path());
    compressed_storage(work.path());
    memory_bound(work.path(), load_secs);
}

/// Spawn to listening, and spawn to the answer of a disk hit, in milliseconds.
fn time_start(dir: &Path, cache: &Path, url: &str) -> (f64, f64, Proxy) {
    let started = Instant::now();
    let proxy = Proxy::spawn(dir, cache, &[]);
    let listening = started.elapsed().as_secs_f64() * 1000.0;
    let status = get_through(proxy.addr, url);
    let answered = started.elapsed().as_secs_f64() * 1000.0;
    assert!(status.contains("hit"), "a disk hit: {status}");
    (listening, answered, proxy)
}

/// Milliseconds for the first request of each of `count` assets after a restart, with and
/// without pre-warming.
fn first_requests_after_restart(work: &Path) {
    let count = 100;
    let cache = work.join("prewarm-cache");
    populate_sized(&cache, count, 256 * 1024);
    // A first start builds the index (the entries were written straight into the layout).
    let mut first = Proxy::spawn(work, &cache, &[]);
    first.wait_for("corrected");
    first.stop();
    let mut rows = Vec::new();
    for prewarm in [false, true] {
        let config = work.join(format!("prewarm-{prewarm}.json"));
        std::fs::write(
            &config,
            format!(r#"{{"memory": {{"prewarm": {prewarm}}}}}"#),
        )
        .expect("config");
        let config_arg = config.display().to_string();
        let mut proxy = Proxy::spawn(work, &cache, &["--config", &config_arg]);
        if prewarm {
            proxy.wait_for("pre-warmed");
        }
        let started = Instant::now();
        let mut tiers = (0, 0);
        for n in 0..count {
            let status = get_through(proxy.addr, &bench_url(n));
            if status.contains("detail=memory") {
                tiers.0 += 1;
            } else if status.contains("detail=disk") {
                tiers.1 += 1;
            }
        }
        let per_request = started.elapsed().as_secs_f64() * 1000.0 / count as f64;
        proxy.stop();
        rows.push((prewarm, per_request, tiers));
    }
    let without = rows[0].1;
    println!("\n| first request after a restart ({count} assets of 256 KiB, one at a time) | ms per request | memory / disk hits | ratio to without |");
    println!("|---|---:|---:|---:|");
    for (prewarm, per_request, (memory, disk)) in rows {
        let name = if prewarm {
            "pre-warmed"
        } else {
            "without pre-warming (peer)"
        };
        println!(
            "| {name} | {per_request:.3} | {memory} / {disk} | {:.2}x |",
            per_request / without
        );
    }
}

/// A JavaScript-like body: varied identifiers, numbers and strings, as bundlers emit them.
fn script_body(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words = [
        "props", "state", "render", "children", "key", "value", "items", "length", "push", "map",
    ];
    let mut out = String::with_capacity(len + 200);
    while out.len() < len {
        let (a, b, c) = (next(), next(), next());
        out.push_str(&format!(
            "function c{:x}(e,t){{var n=e.{}[{}];return t.{}(n,\"{:x}\")+{}}};",
            a % 0xffff_ffff,
            words[(b % 10) as usize],
            b % 1000,
            words[(c % 10) as usize],
            c,
            a % 97
        ));
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Bytes on disk and disk-hit throughput, bodies stored as they are and as zstd frames.
fn compressed_storage(work: &Path) {
    let (count, body_len) = (200u64, 256 * 1024);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/javascript"));
    let mut rows = Vec::new();
    for compressed in [false, true] {
        let (tier, _) = DiskTier::open(&work.join(format!("compress-{compressed}"))).expect("tier");
        let mut keys = Vec::new();
        let mut on_disk = 0;
        for n in 0..count {
            let url = Url::parse(&bench_url(n)).expect("url");
            let key = CacheKey::new(&url, &HeaderMap::new());
            let body = script_body(body_len, n + 1);
            let lifetime = Lifetime::Pinned { ttl_secs: 86_400 };
            let meta = EntryMeta::new(
                key.clone(),
                StatusCode::OK,
                &headers,
                lifetime,
                SystemTime::now(),
                &body,
            );
            let entry = CachedResponse::new(meta, body);
            if compressed {
                entry.stored_zstd();
            }
            on_disk += tier.write(&entry).expect("write");
            keys.push(key);
        }
        // Warm page cache: this measures the CPU cost of a disk hit, not the device. A first
        // round reads every file once, as the first hit of a process does (it checks them).
        let rounds = 5;
        let read = |kept: bool| {
            for key in &keys {
                let entry = if kept {
                    match tier.read_now(key) {
                        ReadNow::Read(entry) => entry.expect("entry"),
                        ReadNow::Later => panic!("the page cache holds it"),
                    }
                } else {
                    let entry = tier.read_digest(&key.digest_bytes()).expect("read");
                    entry.expect("entry")
                };
                let sent = match entry.encodings.get(Coding::Zstd) {
                    Some(frame) if kept => frame.len(),
                    _ => entry.body().expect("body").len(),
                };
                black_box(sent);
            }
        };
        let ways: &[bool] = if compressed { &[false, true] } else { &[false] };
        for &kept in ways {
            read(kept);
            let started = Instant::now();
            for _ in 0..rounds {
                read(kept);
            }
            let served = (rounds * count) as f64 * body_len as f64;
            let mib_per_sec = served / started.elapsed().as_secs_f64() / MIB as f64;
            rows.push((compressed, kept, on_disk, mib_per_sec));
        }
    }
    let (plain_bytes, plain_rate) = (rows[0].2 as f64, rows[0].3);
    println!("\n| {count} JavaScript-like bodies of 256 KiB | MiB on disk | disk-hit throughput (MiB/s of body) | disk bytes ratio | throughput ratio |");
    println!("|---|---:|---:|---:|---:|");
    for (compressed, kept, on_disk, rate) in rows {
        let name = match (compressed, kept) {
            (false, _) => "as they are (peer)",
            (true, false) => "zstd frames (disk.compress), decoded",
            (true, true) => "zstd frames, sent as they are to a client that takes zstd",
        };
        println!(
            "| {name} | {:.1} | {rate:.0} | {:.2}x | {:.2}x |",
            on_disk as f64 / MIB as f64,
            on_disk as f64 / plain_bytes,
            rate / plain_rate
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn start_times(work: &Path, entries: u64) {
    let small = work.join("one-entry");
    let large = work.join("many-entries");
    populate(&small, 1);
    let began = Instant::now();
    populate(&large, entries);
    println!(
        "populated {entries} entries in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    // The first start builds the index from the files (as after a layout migration).
    let mut first = Proxy::spawn(work, &large, &[]);
    let line = first.wait_for("corrected");
    println!("index built from {entries} entries: {line}");
    first.stop();

    let target = bench_url(entries / 2);
    let mut rows = Vec::new();
    for (name, cache, lose_index) in [
        ("1 entry (peer)".to_owned(), &small, false),
        (format!("{entries} entries, index present"), &large, false),
        (format!("{entries} entries, index lost"), &large, true),
    ] {
        let mut listening = Vec::new();
        let mut answered = Vec::new();
        let target = if cache == &small {
            bench_url(0)
        } else {
            target.clone()
        };
        for _ in 0..3 {
            if lose_index {
                let _ = std::fs::remove_file(cache.join("v1/index.journal"));
            }
            let (l, a, mut proxy) = time_start(work, cache, &target);
            if lose_index {
                let line = proxy.wait_for("corrected");
                println!("  rebuilt in the background: {line}");
            }
            proxy.stop();
            listening.push(l);
            answered.push(a);
        }
        rows.push((name, median(listening), median(answered)));
    }
    let peer = rows[0].2;
    println!("\n| start over | listening (ms) | first disk hit answered (ms) | ratio to peer |");
    println!("|---|---:|---:|---:|");
    for (name, listening, answered) in &rows {
        println!(
            "| {name} | {listening:.0} | {answered:.0} | {:.2}x |",
            answered / peer
        );
    }
}
