//! Compressed storage against a real origin and real clients: a compressible body that arrives
//! uncompressed is stored on disk as a zstd frame and sent to each client in a coding it
//! accepts (zstd at once, br and gzip once made) with the right headers; ranges, HEAD and
//! conditionals still work; a body that arrived compressed is stored as it came; a damaged
//! compressed file is caught; `disk.compress: false` stores bodies as they are.

mod support;

use std::io::Read;
use std::path::Path;

use asset_proxy::cache::compress::Coding;
use asset_proxy::cache::http::key::CacheKey;
use bytes::Bytes;
use http::HeaderMap;
use support::{random_bytes, wait_until, Origin, Route, TestCa, TestProxy};

const PATH: &str = "/assets/app.4f3a2b1c.js";
const NO_PREWARM: &str = r#"{ "memory": { "prewarm": false } }"#;

/// About 400 KB of JavaScript-like text: compressible, as real bundles are.
fn script() -> Bytes {
    let text: String = (0..8_000)
        .map(|n| format!("function component{n}(props) {{ return render(props.items[{n}]); }}\n"))
        .collect();
    Bytes::from(text)
}

fn serve_script(origin: &Origin) {
    origin.route(
        PATH,
        Route::ok(script())
            .header("content-type", "text/javascript")
            .header("etag", "\"abc\""),
    );
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

async fn fetch(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request through proxy");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.expect("body"),
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The cache key of a request for `url` with this Accept-Encoding. (A body the origin sends
/// without a coding is kept under the key of a client that accepts none, `key(url, "")`,
/// whatever the client that fetched it accepts.)
fn key(url: &str, accept_encoding: &str) -> CacheKey {
    let mut headers = HeaderMap::new();
    if !accept_encoding.is_empty() {
        headers.insert("accept-encoding", accept_encoding.parse().expect("value"));
    }
    CacheKey::new(&url::Url::parse(url).expect("url"), &headers)
}

fn entry_file(proxy: &TestProxy, key: &CacheKey) -> Vec<u8> {
    std::fs::read(proxy.app.cache().disk_path(key)).expect("entry file")
}

/// Waits until the entry for `key` has `coding` made.
async fn made(proxy: &TestProxy, key: &CacheKey, coding: Coding) {
    let (cache, key) = (proxy.app.cache().clone(), key.clone());
    wait_until("the coding is made", move || {
        cache
            .memory_entry(&key)
            .is_some_and(|entry| entry.encodings.is_made(coding))
    })
    .await;
}

async fn start(dir: &Path, config: &str, ca: &TestCa) -> TestProxy {
    TestProxy::start(dir, config, Some(&ca.path)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressible_body_is_stored_as_zstd_and_sent_as_each_client_takes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    serve_script(&origin);
    let proxy = start(dir.path(), NO_PREWARM, &ca).await;
    let client = proxy.client();
    let url = origin.url(PATH);
    let body = script();

    // A client that takes no coding: the body as it is, and it is stored compressed.
    let plain = fetch(&client, &url, &[]).await;
    assert_eq!((plain.status, plain.body.clone()), (200, body.clone()));
    proxy.settled().await;
    let file = entry_file(&proxy, &key(&url, ""));
    assert_eq!((&file[..4], file[4]), (&b"APXE"[..], 3), "a zstd entry");
    assert!(file.len() < body.len() / 4, "{} bytes on disk", file.len());
    let stats = proxy.app.stats();
    assert_eq!(stats.disk_compressed_writes.get(), 1);
    assert!(stats.disk_bytes_saved_by_compression.get() > body.len() as u64 / 2);
    let figures = support::admin_json(proxy.admin, "/stats").await;
    assert_eq!(figures["disk_compressed_writes"], 1, "{figures}");
    let hit = fetch(&client, &url, &[]).await;
    assert_eq!(hit.body, body);
    assert_eq!(header(&hit, "content-encoding"), "");
    assert_eq!(header(&hit, "vary"), "Accept-Encoding");
    assert_eq!(header(&hit, "etag"), "\"abc\"");

    // zstd: the same entry, answered with the frame made of it (the disk holds it already).
    let zstd = [("accept-encoding", "gzip, deflate, br, zstd")];
    fetch(&client, &url, &zstd).await;
    proxy.settled().await;
    made(&proxy, &key(&url, ""), Coding::Zstd).await;
    let answer = fetch(&client, &url, &zstd).await;
    assert_eq!(header(&answer, "content-encoding"), "zstd");
    assert_eq!(
        header(&answer, "content-length"),
        answer.body.len().to_string()
    );
    assert_eq!(header(&answer, "etag"), "W/\"abc\"");
    assert_eq!(header(&answer, "vary"), "Accept-Encoding");
    let mut decoded = Vec::new();
    zstd::stream::Decoder::new(&answer.body[..])
        .expect("zstd")
        .read_to_end(&mut decoded)
        .expect("decode");
    assert_eq!(decoded, body);

    // br and gzip: made once in the background; the body goes out as it is until then.
    for (accept, coding) in [("br", Coding::Br), ("gzip", Coding::Gzip)] {
        let headers = [("accept-encoding", accept)];
        fetch(&client, &url, &headers).await;
        let first_hit = fetch(&client, &url, &headers).await;
        assert!(first_hit.body == body || header(&first_hit, "content-encoding") == accept);
        made(&proxy, &key(&url, ""), coding).await;
        let answer = fetch(&client, &url, &headers).await;
        assert_eq!(header(&answer, "content-encoding"), accept);
        let mut decoded = Vec::new();
        match coding {
            Coding::Br => brotli::Decompressor::new(&answer.body[..], 4096)
                .read_to_end(&mut decoded)
                .expect("unbrotli"),
            _ => flate2::read::GzDecoder::new(&answer.body[..])
                .read_to_end(&mut decoded)
                .expect("gunzip"),
        };
        assert_eq!(decoded, body, "{accept}");
    }

    // The memory tier weighs what it holds: the body and the codings made of it (one entry
    // answers every coding class: the zstd frame and the br and gzip bodies made of it).
    let (cache, keys) = (proxy.app.cache().clone(), [key(&url, "")]);
    let codings: u64 = keys
        .iter()
        .filter_map(|key| cache.memory_entry(key))
        .map(|entry| entry.encodings.made_bytes())
        .sum();
    assert!(codings > 0);
    let admin = proxy.admin;
    let mut figures = serde_json::Value::Null;
    for _ in 0..1000 {
        figures = support::admin_json(admin, "/stats").await;
        if figures["tiers"]["memory_coding_bytes"].as_u64() == Some(codings) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let tiers = &figures["tiers"];
    assert_eq!(
        tiers["memory_coding_bytes"].as_u64(),
        Some(codings),
        "{tiers}"
    );
    assert!(
        tiers["memory_bytes"].as_u64()
            >= Some(codings + tiers["memory_body_bytes"].as_u64().unwrap_or(0)),
        "{tiers}"
    );

    // Ranges come from the body as it is; HEAD says what GET would send; a client's weak
    // tag matches.
    let range = fetch(&client, &url, &[zstd[0], ("range", "bytes=0-99")]).await;
    assert_eq!(range.status, 206);
    assert_eq!(
        (header(&range, "content-encoding"), &range.body[..]),
        ("", &body[..100])
    );
    let head = client
        .head(&url)
        .header("accept-encoding", zstd[0].1)
        .send()
        .await
        .expect("head");
    assert_eq!(head.headers()["content-encoding"], "zstd");
    let conditional = fetch(&client, &url, &[zstd[0], ("if-none-match", "W/\"abc\"")]).await;
    assert_eq!(conditional.status, 304);
    assert_eq!(header(&conditional, "etag"), "W/\"abc\"");
    assert_eq!(
        origin.hits(PATH),
        1,
        "one fetch: a body sent without a coding answers every coding class"
    );
}

/// Over a megabyte: the fill spills its body to a file, and the entry file is written from it.
fn large_script() -> Bytes {
    let text: String = (0..40_000)
        .map(|n| {
            format!("export function widget{n}(tree) {{ return layout(tree.children[{n}]); }}\n")
        })
        .collect();
    Bytes::from(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spilled_body_is_kept_in_memory_with_the_frame_its_file_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let body = large_script();
    assert!(body.len() as u64 > asset_proxy::cache::disk::spill::SPILL_AT);
    origin.route(
        PATH,
        Route::ok(body.clone()).header("content-type", "text/javascript"),
    );
    let proxy = start(dir.path(), NO_PREWARM, &ca).await;
    let client = proxy.client();
    let url = origin.url(PATH);
    let zstd = [("accept-encoding", "gzip, deflate, br, zstd")];

    let filled = fetch(&client, &url, &zstd).await;
    assert_eq!((filled.status, filled.body), (200, body.clone()));
    proxy.settled().await;
    let key = key(&url, "");
    let file = entry_file(&proxy, &key);
    assert_eq!(file[4], 3, "a zstd entry");
    // No wait for a coding to be made: the first hit already goes in zstd.
    let hit = fetch(&client, &url, &zstd).await;
    assert_eq!(header(&hit, "content-encoding"), "zstd");
    assert_eq!(proxy.app.stats().hits_memory.get(), 1);
    assert!(file.ends_with(&hit.body), "the frame the file holds");
    let mut decoded = Vec::new();
    zstd::stream::Decoder::new(&hit.body[..])
        .expect("zstd")
        .read_to_end(&mut decoded)
        .expect("decode");
    assert_eq!(decoded, body);
}

/// An origin answering `PATH` with `route` (a script), and a proxy whose memory tier is too
/// small for that body as it is, large enough for its zstd frame.
async fn start_for_a_kept_frame(dir: &std::path::Path, route: Route) -> (Origin, TestProxy) {
    let ca = TestCa::new(dir);
    let origin = Origin::https(&ca).await;
    origin.route(PATH, route.header("content-type", "text/javascript"));
    let config = r#"{ "memory": { "prewarm": false, "max_mb": 1 } }"#;
    let proxy = start(dir, config, &ca).await;
    (origin, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_or_a_not_modified_answer_from_a_kept_frame_does_not_decode_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = large_script();
    let route = Route::ok(body.clone()).header("etag", "\"big\"");
    let (origin, proxy) = start_for_a_kept_frame(dir.path(), route).await;
    let client = proxy.client();
    let url = origin.url(PATH);
    // A client that takes no coding: a body it is sent is always decoded first.
    let key = key(&url, "");
    fetch(&client, &url, &[]).await;
    proxy.settled().await;
    // The first disk hit checks the file, decoding its body: too heavy to keep in memory.
    assert_eq!(fetch(&client, &url, &[]).await.body, body);
    assert!(proxy.app.cache().memory_entry(&key).is_none());

    let head = client.head(url.as_str()).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    let length = head.headers().get("content-length").map(|v| v.as_bytes());
    assert_eq!(length, Some(body.len().to_string().as_bytes()));
    let held = proxy
        .app
        .cache()
        .memory_entry(&key)
        .expect("held as its frame");
    assert!(!held.body_is_at_hand(), "a HEAD decoded the frame");
    let not_modified = fetch(&client, &url, &[("if-none-match", "\"big\"")]).await;
    assert_eq!((not_modified.status, not_modified.body.len()), (304, 0));
    assert!(!held.body_is_at_hand(), "a 304 decoded the frame");
    assert_eq!(proxy.app.stats().hits_disk.get(), 2);
    assert_eq!(proxy.app.stats().hits_memory.get(), 1);
    // A GET needs the body, and gets it whole.
    assert_eq!(fetch(&client, &url, &[]).await.body, body);
    assert_eq!(origin.hits(PATH), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_hit_on_a_checked_file_sends_its_frame_without_decoding_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = large_script();
    let (origin, proxy) = start_for_a_kept_frame(dir.path(), Route::ok(body.clone())).await;
    let client = proxy.client();
    let url = origin.url(PATH);
    let zstd = [("accept-encoding", "gzip, deflate, br, zstd")];
    let key = key(&url, "");
    let decoded = |answer: &Answer| {
        assert_eq!(header(answer, "content-encoding"), "zstd");
        let mut decoded = Vec::new();
        zstd::stream::Decoder::new(&answer.body[..])
            .expect("zstd")
            .read_to_end(&mut decoded)
            .expect("decode");
        decoded
    };

    fetch(&client, &url, &zstd).await;
    proxy.settled().await;
    let file = entry_file(&proxy, &key);
    assert!(file.len() < 1024 * 1024, "{} bytes on disk", file.len());
    // The first disk hit checks the file, decoding its body: too heavy to keep in memory.
    let first = fetch(&client, &url, &zstd).await;
    assert_eq!(decoded(&first), body);
    assert!(proxy.app.cache().memory_entry(&key).is_none());
    // The next keeps the file's frame only, sends it as it is, and fits in memory.
    let second = fetch(&client, &url, &zstd).await;
    assert!(file.ends_with(&second.body), "the file's own frame");
    assert_eq!(decoded(&second), body);
    assert_eq!(proxy.app.stats().hits_disk.get(), 2);
    let held = proxy
        .app
        .cache()
        .memory_entry(&key)
        .expect("held as its frame");
    assert!(!held.body_is_at_hand());
    let from_memory = fetch(&client, &url, &zstd).await;
    assert_eq!(decoded(&from_memory), body);
    assert_eq!(proxy.app.stats().hits_memory.get(), 1);
    // curl decodes the frame as it came to the very body.
    let ca_file = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca_file, proxy.ca_pem()).expect("ca file");
    let (proxy_url, target, out) = (
        format!("http://{}", proxy.addr),
        url.clone(),
        dir.path().join("curl.js"),
    );
    let written = out.clone();
    let curl = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--fail", "--compressed", "-D", "-", "-o"])
            .arg(&written)
            .args(["-H", "accept-encoding: gzip, deflate, br, zstd"])
            .args(["-x", &proxy_url, "--cacert"])
            .arg(&ca_file)
            .arg(&target)
            .output()
            .expect("run curl")
    })
    .await
    .expect("curl task");
    let head = String::from_utf8_lossy(&curl.stdout).to_ascii_lowercase();
    assert!(head.contains("content-encoding: zstd"), "{head}");
    assert_eq!(std::fs::read(&out).expect("curl output"), body);
    assert_eq!(proxy.app.stats().hits_memory.get(), 2);

    // A range needs the body as it is: decoded then, checked, and weighed.
    let range = fetch(&client, &url, &[zstd[0], ("range", "bytes=100-199")]).await;
    assert_eq!((range.status, &range.body[..]), (206, &body[100..200]));
    assert!(held.body_is_at_hand());
    let figures = support::admin_json(proxy.admin, "/stats").await;
    assert_eq!(figures["corrupt_entries"], 0, "{figures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_frame_that_does_not_decode_to_its_body_is_dropped_from_every_tier() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    serve_script(&origin);
    let proxy = start(dir.path(), NO_PREWARM, &ca).await;
    let url = origin.url(PATH);
    fetch(&proxy.client(), &url, &[]).await;
    proxy.settled().await;
    let key = key(&url, "");
    let cache = proxy.app.cache();
    let path = cache.disk_path(&key);
    let mut file = std::fs::read(&path).expect("entry file");
    // Damage after the frame's header, as a failing medium would after the file was checked.
    let at = file.len() - 20;
    file[at] ^= 0x01;
    let kept =
        asset_proxy::cache::CachedResponse::decode_checking(Bytes::from(file), 0, false, true)
            .expect("the head is sound");
    // Found first by the making of a coding, say: still dropped when a request needs it.
    assert!(kept.body().is_none());
    assert!(cache.body_of(&std::sync::Arc::new(kept)).is_none());
    assert!(cache.memory_entry(&key).is_none());
    let stats = proxy.app.stats().clone();
    wait_until("the damage is counted", || stats.corrupt_entries.get() == 1).await;
    assert!(!path.exists(), "the file is removed");
    let again = fetch(&proxy.client(), &url, &[]).await;
    assert_eq!(again.body, script(), "fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_arrived_compressed_or_incompressible_is_stored_as_it_came() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let gzipped = random_bytes(50_000, 4);
    origin.route(
        "/app.9f8e7d6c.js",
        Route::ok(gzipped.clone())
            .header("content-type", "text/javascript")
            .header("content-encoding", "gzip"),
    );
    origin.route(
        "/canvaskit.9f8e7d6c.wasm",
        Route::ok(random_bytes(80_000, 5)).header("content-type", "application/wasm"),
    );
    let proxy = start(dir.path(), NO_PREWARM, &ca).await;
    let client = proxy.client();
    for (path, class) in [
        ("/app.9f8e7d6c.js", "gzip, zstd"),
        ("/canvaskit.9f8e7d6c.wasm", ""),
    ] {
        let url = origin.url(path);
        fetch(&client, &url, &[("accept-encoding", "gzip, zstd")]).await;
        proxy.settled().await;
        let file = entry_file(&proxy, &key(&url, class));
        assert_eq!(file[4], 2, "{path} stored as it came");
        let hit = fetch(&client, &url, &[("accept-encoding", "gzip, zstd")]).await;
        assert_eq!(hit.status, 200);
        assert_ne!(header(&hit, "content-encoding"), "zstd", "{path}");
    }
    assert_eq!(proxy.app.stats().disk_compressed_writes.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_compressed_entry_is_caught_and_refetched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    serve_script(&origin);
    let url = origin.url(PATH);
    let proxy = start(dir.path(), NO_PREWARM, &ca).await;
    fetch(&proxy.client(), &url, &[]).await;
    proxy.settled().await;
    let path = proxy.app.cache().disk_path(&key(&url, ""));
    proxy.stop().await;
    let mut file = std::fs::read(&path).expect("entry file");
    let last = file.len() - 20;
    file[last] ^= 0x40;
    std::fs::write(&path, &file).expect("damage");

    let proxy = start(dir.path(), NO_PREWARM, &ca).await;
    let answer = fetch(&proxy.client(), &url, &[]).await;
    assert_eq!(answer.body, script());
    assert_eq!(origin.hits(PATH), 2);
    assert_eq!(proxy.app.stats().corrupt_entries.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_compression_off_bodies_are_stored_and_sent_as_they_came() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    serve_script(&origin);
    let config = r#"{ "memory": { "prewarm": false }, "disk": { "compress": false },
                     "serve_compressed": false }"#;
    let proxy = start(dir.path(), config, &ca).await;
    let url = origin.url(PATH);
    let zstd = [("accept-encoding", "zstd")];
    fetch(&proxy.client(), &url, &zstd).await;
    proxy.settled().await;
    assert_eq!(entry_file(&proxy, &key(&url, ""))[4], 2);
    let hit = fetch(&proxy.client(), &url, &zstd).await;
    assert_eq!(
        (header(&hit, "content-encoding"), hit.body.clone()),
        ("", script())
    );
    assert_eq!(header(&hit, "vary"), "");
}

/// A body the origin sends without a coding answers every client, whatever codings it
/// accepts: a list warmed with `proxy warm` (which accepts none) serves a browser, Python
/// `requests`, and a range from `fetch` (which asks for `identity`) with no fetch more. A body
/// the origin sent in a coding is kept for the clients that accept it only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_without_a_coding_answers_clients_of_every_coding_class() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    serve_script(&origin);
    let gzipped = "/app.9f8e7d6c.js";
    origin.route(
        gzipped,
        Route::ok(random_bytes(20_000, 9))
            .header("content-type", "text/javascript")
            .header("content-encoding", "gzip"),
    );
    let proxy = start(dir.path(), NO_PREWARM, &ca).await;
    let client = proxy.client();
    let url = origin.url(PATH);

    let warmed = asset_proxy::commands::warm_through(proxy.addr, vec![url.clone()], 1).await;
    assert!(warmed.failures().is_empty(), "{:?}", warmed.failures());
    proxy.settled().await;
    let classes = [
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-encoding", "gzip, deflate"),
        ("accept-encoding", "br"),
    ];
    for accept in classes {
        let answer = fetch(&client, &url, &[accept]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            header(&answer, "cache-status"),
            "asset-proxy; hit; detail=memory",
            "{accept:?}"
        );
    }
    let range = fetch(
        &client,
        &url,
        &[("accept-encoding", "identity"), ("range", "bytes=10-19")],
    )
    .await;
    assert_eq!(
        (range.status, header(&range, "cache-status")),
        (206, "asset-proxy; hit; detail=memory")
    );
    assert_eq!(range.body, script().slice(10..20));
    assert_eq!(origin.hits(PATH), 1, "fetched once, by the warm");

    let url = origin.url(gzipped);
    fetch(&client, &url, &[("accept-encoding", "gzip")]).await;
    proxy.settled().await;
    for accept in ["br", ""] {
        let answer = fetch(&client, &url, &[("accept-encoding", accept)]).await;
        assert!(
            header(&answer, "cache-status").starts_with("asset-proxy; fwd=miss"),
            "a gzip body is not kept for a client accepting {accept:?}"
        );
    }
    assert_eq!(origin.hits(gzipped), 3);
}
