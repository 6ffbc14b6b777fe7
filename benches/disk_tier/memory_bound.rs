//! Peak resident memory under load that misses, hits and evicts, against `memory.max_mb`
//! + 64 MiB; disk usage against `disk.max_mb`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;

use super::proxy::Proxy;
use super::{env_or, MIB};

/// Serves `/mem/<n>.js?v=1` with a 1 MiB body, as fast as loopback allows. The body does not
/// compress, so each entry file is as large as its body and the disk tier's cap is reached.
fn spawn_origin(runtime: &tokio::runtime::Runtime) -> SocketAddr {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let body: Bytes = (0..MIB)
        .map(|_| {
            // xorshift64: bytes without the repetition a compressor could use.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
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

pub fn memory_bound(work: &Path, load_secs: u64) {
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
    let (mut peak_sampled, mut peak_queued, mut peak_waiting) = (0, 0.0_f64, 0.0_f64);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        peak_sampled = peak_sampled.max(proxy.peak_rss_kib());
        let tiers = runtime.block_on(stats(proxy.admin))["tiers"].clone();
        peak_queued = peak_queued.max(tiers["write_queue_bytes"].as_f64().unwrap_or(0.0));
        peak_waiting = peak_waiting.max(tiers["write_waiting_bytes"].as_f64().unwrap_or(0.0));
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = runtime.block_on(worker);
    }
    let peak_mib = proxy.peak_rss_kib().max(peak_sampled) as f64 / 1024.0;
    let stats = runtime.block_on(stats(proxy.admin));
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
        "| entries held for the disk writer, at most (sampled every 200 ms) | {:.0} MiB queued, {:.0} MiB waiting for room |",
        peak_queued / MIB as f64,
        peak_waiting / MIB as f64
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

async fn stats(admin: SocketAddr) -> serde_json::Value {
    reqwest::get(format!("http://{admin}/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON")
}
