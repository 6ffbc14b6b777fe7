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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use url::Url;

use asset_proxy::cache::disk::DiskTier;
use asset_proxy::cache::entry::{CachedResponse, EntryMeta, Lifetime};
use asset_proxy::cache::http::key::CacheKey;

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

/// A proxy process with its log lines arriving on a channel.
struct Proxy {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Proxy {
    fn spawn(dir: &Path, cache: &Path, extra: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
            .current_dir(dir)
            .args(["--port", "0", "--log", "info", "--cache-dir"])
            .arg(cache)
            .arg("--ca-dir")
            .arg(dir.join("certs"))
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn proxy");
        let stderr = child.stderr.take().expect("stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let mut proxy = Proxy {
            child,
            lines,
            addr: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
        };
        let admin = proxy.wait_for("admin API listening addr=");
        let main = proxy.wait_for(": listening addr=");
        proxy.admin = address(&admin);
        proxy.addr = address(&main);
        proxy
    }

    fn wait_for(&mut self, text: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .expect("proxy log line");
            if line.contains(text) {
                return line;
            }
        }
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn address(line: &str) -> SocketAddr {
    line.split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .expect("address in log line")
}

/// One GET in absolute form through the proxy; returns the Cache-Status line.
fn get_through(proxy: SocketAddr, url: &str) -> String {
    let mut stream = TcpStream::connect(proxy).expect("connect");
    let host = Url::parse(url).expect("url").authority().to_owned();
    write!(
        stream,
        "GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let text = String::from_utf8_lossy(&response);
    text.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("cache-status"))
        .unwrap_or("")
        .to_owned()
}

fn bench_url(n: u64) -> String {
    format!("http://127.0.0.1:9/bench/{n}.js?v=1")
}

/// Writes `count` small entries straight into the layout, as a long-running proxy would have.
fn populate(cache: &Path, count: u64) {
    populate_sized(cache, count, 1024);
}

fn populate_sized(cache: &Path, count: u64, body_len: usize) {
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
                entry.encodings.stored_zstd(&entry.body);
            }
            on_disk += tier.write(&entry).expect("write");
            keys.push(key.digest_bytes());
        }
        // Warm page cache: this measures the CPU cost of a disk hit, not the device.
        let rounds = 5;
        let started = Instant::now();
        for _ in 0..rounds {
            for digest in &keys {
                let entry = tier.read_digest(digest).expect("read").expect("entry");
                assert_eq!(entry.body.len(), body_len);
            }
        }
        let served = (rounds * count) as f64 * body_len as f64;
        let mib_per_sec = served / started.elapsed().as_secs_f64() / MIB as f64;
        rows.push((compressed, on_disk, mib_per_sec));
    }
    let (plain_bytes, plain_rate) = (rows[0].1 as f64, rows[0].2);
    println!("\n| {count} JavaScript-like bodies of 256 KiB | MiB on disk | disk-hit throughput (MiB/s of body) | disk bytes ratio | throughput ratio |");
    println!("|---|---:|---:|---:|---:|");
    for (compressed, on_disk, rate) in rows {
        let name = if compressed {
            "zstd frames (disk.compress)"
        } else {
            "as they are (peer)"
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

/// Serves `/mem/<n>.js?v=1` with a 1 MiB body, as fast as loopback allows.
fn spawn_origin(runtime: &tokio::runtime::Runtime) -> SocketAddr {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let body = Bytes::from(vec![b'm'; MIB as usize]);
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut response = http::Response::new(Full::new(body));
                        response
                            .headers_mut()
                            .insert("content-type", HeaderValue::from_static("text/javascript"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn memory_bound(work: &Path, load_secs: u64) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let origin = spawn_origin(&runtime);
    let config = work.join("memory-bound.json");
    let (memory_mb, disk_mb) = (env_or("DISK_BENCH_MEMORY_MB", 64), 256);
    std::fs::write(
        &config,
        format!(r#"{{"memory": {{"max_mb": {memory_mb}}}, "disk": {{"max_mb": {disk_mb}}}}}"#),
    )
    .expect("config");
    let cache = work.join("memory-bound-cache");
    let config_arg = config.display().to_string();
    let proxy = Proxy::spawn(work, &cache, &["--config", &config_arg]);
    let stop = Arc::new(AtomicBool::new(false));
    let (requests, bytes, next_url) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", proxy.addr)).expect("proxy url"))
        .build()
        .expect("client");
    let began = Instant::now();
    let deadline = began + Duration::from_secs(load_secs);
    let workers: Vec<_> = (0..8u64)
        .map(|worker| {
            let (client, stop, requests, bytes, next_url) = (
                client.clone(),
                stop.clone(),
                requests.clone(),
                bytes.clone(),
                next_url.clone(),
            );
            runtime.spawn(async move {
                let mut turn = worker;
                // Bounded in time and in count.
                while !stop.load(Ordering::Relaxed) && requests.load(Ordering::Relaxed) < 200_000 {
                    turn += 1;
                    // Half new assets (miss, store, evict), half recent ones (hits).
                    let n = if turn % 2 == 0 {
                        next_url.fetch_add(1, Ordering::Relaxed)
                    } else {
                        next_url.load(Ordering::Relaxed).saturating_sub(turn % 100)
                    };
                    let url = format!("http://{origin}/mem/{n}.js?v=1");
                    if let Ok(response) = client.get(&url).send().await {
                        if let Ok(body) = response.bytes().await {
                            bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                        }
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut peak_sampled = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        peak_sampled = peak_sampled.max(proxy.peak_rss_kib());
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = runtime.block_on(worker);
    }
    let peak_mib = proxy.peak_rss_kib().max(peak_sampled) as f64 / 1024.0;
    let stats: serde_json::Value = runtime.block_on(async {
        reqwest::get(format!("http://{}/stats", proxy.admin))
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats JSON")
    });
    proxy.stop();
    let seconds = began.elapsed().as_secs_f64();
    let bound = (memory_mb + 64) as f64;
    println!("\n| sustained load ({seconds:.0} s, 8 connections, 1 MiB assets) | value |");
    println!("|---|---:|");
    println!(
        "| requests | {} ({:.0}/s, {:.0} MB/s) |",
        requests.load(Ordering::Relaxed),
        requests.load(Ordering::Relaxed) as f64 / seconds,
        bytes.load(Ordering::Relaxed) as f64 / 1e6 / seconds
    );
    println!(
        "| peak resident memory | {peak_mib:.0} MiB (bound {bound:.0} MiB: memory.max_mb {memory_mb} + 64) = {:.2}x of the bound |",
        peak_mib / bound
    );
    println!(
        "| disk usage at the end | {:.0} MiB (disk.max_mb {disk_mb}) |",
        stats["tiers"]["disk_bytes"].as_f64().unwrap_or(0.0) / MIB as f64
    );
    println!(
        "| entries written / skipped (queue full) / evicted | {} / {} / {} |",
        stats["disk_writes"], stats["disk_writes_skipped"], stats["disk_evictions"]
    );
    println!(
        "| hits memory / disk, misses | {} / {}, {} |",
        stats["hits"]["memory"], stats["hits"]["disk"], stats["misses"]
    );
}
