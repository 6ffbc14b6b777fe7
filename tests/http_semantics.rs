//! Shared-cache HTTP semantics, specified against a loopback origin that counts requests and
//! answers conditionals: standard caching, revalidation, entry points that change, client
//! conditionals, stale-while-revalidate and stale-if-error, Vary, ranges, negative caching and
//! offline mode. Entries "stored long ago" are written to the disk tier before the proxy
//! starts, so no test waits for time to pass.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use asset_proxy::cache::disk::DiskTier;
use asset_proxy::cache::entry::{CachedResponse, EntryMeta, Lifetime};
use asset_proxy::cache::http::key::CacheKey;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_cache_semantics::{CacheOptions, CachePolicy};
use tokio::sync::Notify;

use support::{cache_status, get, random_bytes, wait_until, Origin, Route, TestCa, TestProxy};

const MEMORY_HIT: &str = "asset-proxy; hit; detail=memory";
const STORED: &str = "asset-proxy; fwd=miss; stored";
const REVALIDATED: &str = "asset-proxy; fwd=stale; fwd-status=304; detail=memory";

struct Setup {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    ca: TestCa,
    origin: Origin,
}

async fn origin() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let ca = TestCa::new(&path);
    let origin = Origin::https(&ca).await;
    Setup {
        _dir: dir,
        dir: path,
        ca,
        origin,
    }
}

impl Setup {
    async fn proxy(&self, config: &str) -> TestProxy {
        TestProxy::start(&self.dir, config, Some(&self.ca.path)).await
    }
}

/// Writes an entry for `url` to the disk tier as if the origin had answered `age` ago
/// with `headers` (a standard-semantics entry).
fn plant(
    dir: &Path,
    url: &str,
    headers: &[(&'static str, &'static str)],
    body: &'static [u8],
    age: Duration,
) {
    let url = url::Url::parse(url).expect("url");
    let mut response_headers = HeaderMap::new();
    for (name, value) in headers {
        response_headers.append(*name, HeaderValue::from_static(value));
    }
    let stored_at = SystemTime::now() - age;
    let mut request = http::Request::new(());
    *request.uri_mut() = url.as_str().parse().expect("uri");
    let mut response = http::Response::new(());
    *response.headers_mut() = response_headers.clone();
    let options = CacheOptions {
        shared: true,
        ..CacheOptions::default()
    };
    let policy = CachePolicy::new_options(&request, &response, stored_at, options);
    let key = CacheKey::new(&url, &HeaderMap::new());
    let meta = EntryMeta::new(
        key,
        StatusCode::OK,
        &response_headers,
        Lifetime::Standard(Box::new(policy)),
        stored_at,
        body,
    );
    let (disk, _) = DiskTier::open(&dir.join("cache")).expect("disk tier");
    disk.write(&CachedResponse::new(meta, Bytes::from_static(body)))
        .expect("plant entry");
}

#[tokio::test]
async fn explicitly_cacheable_responses_are_cached_whatever_their_url() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    let wasm = random_bytes(300_000, 21);
    s.origin.route(
        "/canvaskit/canvaskit.wasm",
        Route::ok(wasm.clone())
            .header("cache-control", "public, max-age=3600")
            .header("date", "Sat, 21 Nov 2026 05:00:00 GMT"),
    );
    let url = s.origin.url("/canvaskit/canvaskit.wasm");
    assert_eq!(get(&client, &url).await.1, STORED);
    proxy.settled().await;
    let response = client.get(&url).send().await.expect("request");
    assert_eq!(cache_status(&response), MEMORY_HIT);
    assert!(response.headers().contains_key("age"), "hits carry Age");
    assert_eq!(
        response.headers()["date"],
        "Sat, 21 Nov 2026 05:00:00 GMT",
        "Date is kept"
    );
    assert!(response.headers()["via"]
        .to_str()
        .expect("via")
        .contains("asset-proxy"));
    assert_eq!(response.bytes().await.expect("body"), wasm);
    assert_eq!(s.origin.hits("/canvaskit/canvaskit.wasm"), 1);
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_and_a_304_serves_the_stored_body() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    let body = random_bytes(40_000, 22);
    s.origin.route(
        "/main.dart.js",
        Route::ok(body.clone())
            .header("cache-control", "no-cache")
            .header("etag", "\"build-1\""),
    );
    let url = s.origin.url("/main.dart.js");
    assert_eq!(get(&client, &url).await.1, STORED);
    proxy.settled().await;
    for _ in 0..2 {
        let (status, cache, got) = get(&client, &url).await;
        assert_eq!((status, cache.as_str()), (200, REVALIDATED));
        assert_eq!(got, body);
        proxy.settled().await;
    }
    assert_eq!(s.origin.answers(), (2, 1), "two 304s, one full body");
    let stats = proxy.app.stats();
    assert_eq!(stats.bytes_saved_by_revalidation.get(), 2 * 40_000);
    assert_eq!(stats.not_modified.get(), 2);
}

#[tokio::test]
async fn a_redeployed_entry_point_is_never_served_stale() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    let page = |build: &str| {
        Route::ok(format!("<html>build {build}</html>")).header("cache-control", "no-cache")
    };
    s.origin
        .route("/index.html", page("1").header("etag", "\"1\""));
    let url = s.origin.url("/index.html");
    get(&client, &url).await;
    proxy.settled().await;

    s.origin
        .route("/index.html", page("2").header("etag", "\"2\""));
    let (_, cache, body) = get(&client, &url).await;
    assert_eq!(
        (cache.as_str(), &body[..]),
        (
            "asset-proxy; fwd=stale; stored",
            &b"<html>build 2</html>"[..]
        )
    );
    proxy.settled().await;
    assert_eq!(
        proxy.app.stats().version_changes.get(),
        1,
        "a changed entry point is a version change"
    );
    let (_, cache, body) = get(&client, &url).await;
    assert_eq!(
        (cache.as_str(), &body[..]),
        (REVALIDATED, &b"<html>build 2</html>"[..])
    );
}

#[tokio::test]
async fn concurrent_revalidations_coalesce() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    let mut route = Route::ok("shared")
        .header("cache-control", "no-cache")
        .header("etag", "\"x\"");
    s.origin.route("/flutter.js", route.clone());
    let url = s.origin.url("/flutter.js");
    get(&client, &url).await;
    proxy.settled().await;

    let gate = Arc::new(Notify::new());
    route.gate = Some(gate.clone());
    s.origin.route("/flutter.js", route);
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { get(&client, &url).await })
        })
        .collect();
    let stats = proxy.app.stats().clone();
    wait_until("nine requests waiting on one revalidation", || {
        stats.coalesced_waits.get() >= 9
    })
    .await;
    gate.notify_one();
    for request in requests {
        let (status, _, body) = request.await.expect("request task");
        assert_eq!((status, &body[..]), (200, &b"shared"[..]));
    }
    assert_eq!(
        s.origin.answers(),
        (1, 1),
        "one revalidation for ten requests"
    );
}

#[tokio::test]
async fn client_conditionals_get_a_304_from_a_fresh_entry() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    let modified = "Sat, 01 Nov 2025 10:00:00 GMT";
    s.origin.route(
        "/app.3f2a9c1b.js",
        Route::ok("code")
            .header("etag", "\"abc\"")
            .header("last-modified", modified),
    );
    let url = s.origin.url("/app.3f2a9c1b.js");
    get(&client, &url).await;
    proxy.settled().await;
    for (name, value) in [
        ("if-none-match", "\"abc\""),
        ("if-modified-since", modified),
    ] {
        let response = client
            .get(&url)
            .header(name, value)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 304, "{name}");
        assert_eq!(cache_status(&response), MEMORY_HIT);
        assert_eq!(response.headers()["etag"], "\"abc\"");
    }
    let response = client
        .get(&url)
        .header("if-none-match", "\"old\"")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(s.origin.hits("/app.3f2a9c1b.js"), 1);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let s = origin().await;
    let url = s.origin.url("/config.json");
    let cc = "max-age=10, stale-while-revalidate=3600";
    plant(
        &s.dir,
        &url,
        &[("cache-control", cc), ("etag", "\"1\"")],
        b"old",
        Duration::from_secs(100),
    );
    s.origin.route(
        "/config.json",
        Route::ok("new")
            .header("cache-control", cc)
            .header("etag", "\"2\""),
    );
    let proxy = s.proxy("{}").await;
    let client = proxy.client();

    let (status, cache, body) = get(&client, &url).await;
    assert_eq!(
        (status, cache.as_str(), &body[..]),
        (
            200,
            "asset-proxy; hit; detail=stale-while-revalidate",
            &b"old"[..]
        )
    );
    let stats = proxy.app.stats().clone();
    wait_until("the background refresh to store", || {
        stats.stored.get() == 1
    })
    .await;
    let (_, cache, body) = get(&client, &url).await;
    assert_eq!((cache.as_str(), &body[..]), (MEMORY_HIT, &b"new"[..]));
    assert_eq!(s.origin.hits("/config.json"), 1);
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_entry_when_the_origin_fails() {
    let s = origin().await;
    let cc = "max-age=10, stale-if-error=3600";
    let failing = s.origin.url("/status.json");
    plant(
        &s.dir,
        &failing,
        &[("cache-control", cc)],
        b"last good",
        Duration::from_secs(100),
    );
    s.origin
        .route("/status.json", Route::ok("oops").status(503));
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let down = format!("https://localhost:{dead_port}/status.json");
    plant(
        &s.dir,
        &down,
        &[("cache-control", cc)],
        b"last good",
        Duration::from_secs(100),
    );
    let gone = format!("https://localhost:{dead_port}/never-cached.json");
    let proxy = s.proxy("{}").await;
    let client = proxy.client();

    for url in [&failing, &down] {
        let (status, cache, body) = get(&client, url).await;
        assert_eq!(
            (status, cache.as_str(), &body[..]),
            (
                200,
                "asset-proxy; hit; detail=stale-if-error",
                &b"last good"[..]
            ),
            "{url}"
        );
    }
    let (status, cache, _) = get(&client, &gone).await;
    assert_eq!(
        (status, cache.as_str()),
        (502, "asset-proxy; fwd=miss; detail=upstream-connect")
    );
}

#[tokio::test]
async fn ranges_are_answered_from_a_complete_cached_body() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    let body = random_bytes(1000, 23);
    s.origin.route(
        "/video.v2.mp4?v=2",
        Route::ok(body.clone()).header("etag", "\"e\""),
    );
    let url = s.origin.url("/video.v2.mp4?v=2");
    let range = |value: &'static str| client.get(&url).header("range", value);

    let response = range("bytes=100-199")
        .send()
        .await
        .expect("range on a miss");
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["content-range"], "bytes 100-199/1000");
    assert_eq!(response.bytes().await.expect("body"), body.slice(100..200));
    assert!(
        s.origin
            .last_request_headers("/video.v2.mp4?v=2")
            .expect("seen")
            .get("range")
            .is_none(),
        "the whole body was fetched"
    );

    let response = range("bytes=-50").send().await.expect("suffix");
    assert_eq!(
        (response.status().as_u16(), cache_status(&response).as_str()),
        (206, MEMORY_HIT)
    );
    assert_eq!(response.bytes().await.expect("body"), body.slice(950..));
    let response = range("bytes=0-9")
        .header("if-range", "\"other\"")
        .send()
        .await
        .expect("if-range");
    assert_eq!(
        response.status(),
        200,
        "a failed If-Range gets the whole body"
    );
    assert_eq!(response.bytes().await.expect("body"), body);
    let response = range("bytes=5000-").send().await.expect("unsatisfiable");
    assert_eq!(response.status(), 416);
    assert_eq!(response.headers()["content-range"], "bytes */1000");
    assert_eq!(s.origin.hits("/video.v2.mp4?v=2"), 1);
}

#[tokio::test]
async fn missing_versions_are_cached_briefly_and_evict_nothing() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    s.origin.route("/main.dart.js?v=1", Route::ok("one"));
    s.origin
        .route("/main.dart.js?v=9", Route::ok("broken").status(500));
    let (v1, v2, v9) = (
        s.origin.url("/main.dart.js?v=1"),
        s.origin.url("/main.dart.js?v=2"),
        s.origin.url("/main.dart.js?v=9"),
    );
    get(&client, &v1).await;
    for _ in 0..2 {
        get(&client, &v2).await;
        proxy.settled().await;
    }
    let (status, cache, _) = get(&client, &v2).await;
    assert_eq!((status, cache.as_str()), (404, MEMORY_HIT));
    assert_eq!(s.origin.hits("/main.dart.js?v=2"), 1);
    assert_eq!(
        get(&client, &v1).await.1,
        MEMORY_HIT,
        "a 404 for a new version evicts nothing"
    );
    assert_eq!(proxy.app.stats().version_changes.get(), 0);
    for _ in 0..2 {
        assert_eq!(get(&client, &v9).await.0, 500);
    }
    assert_eq!(
        s.origin.hits("/main.dart.js?v=9"),
        2,
        "other errors are never cached"
    );
}

#[tokio::test]
async fn offline_mode_serves_only_from_the_cache() {
    let s = origin().await;
    s.origin.route("/app.js?v=1", Route::ok("cached"));
    let cached = s.origin.url("/app.js?v=1");
    let online = s.proxy("{}").await;
    get(&online.client(), &cached).await;
    online.stop().await;
    let stale = s.origin.url("/feed.json");
    plant(
        &s.dir,
        &stale,
        &[("cache-control", "max-age=10")],
        b"yesterday",
        Duration::from_secs(86_400),
    );

    let offline = TestProxy::start_with(&s.dir, "{}", Some(&s.ca.path), |config| {
        config.policy.mode = asset_proxy::config::Mode::Replay
    })
    .await;
    let client = offline.client();
    // From disk, or from memory when pre-warming read it first.
    let cache = get(&client, &cached).await.1;
    assert!(cache.starts_with("asset-proxy; hit; detail="), "{cache}");
    let (status, cache, body) = get(&client, &stale).await;
    assert_eq!(
        (status, cache.as_str(), &body[..]),
        (200, "asset-proxy; hit; detail=offline", &b"yesterday"[..])
    );
    let missing = s.origin.url("/app.js?v=2");
    let response = client.get(&missing).send().await.expect("answer");
    assert_eq!(response.status(), 504);
    assert!(response
        .text()
        .await
        .expect("body")
        .contains(&format!("offline: {missing} is not in the cache")));
    let response = client
        .post(s.origin.url("/api"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 504);
    assert_eq!(
        s.origin.hits("/app.js?v=1") + s.origin.hits("/feed.json") + s.origin.hits("/app.js?v=2"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_request_with_a_foreign_host_is_a_hit_and_the_origin_sees_the_url_authority(
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    let path = "/standard.css";
    origin.route(
        path,
        Route::ok("body { color: teal }").header("cache-control", "public, max-age=3600"),
    );
    let proxy = TestProxy::start(dir.path(), "{}", None).await;
    let client = proxy.client();
    let url = origin.url(path);
    // RFC 9112 §3.2.2: the authority of an absolute-form target replaces the received Host.
    let fetch = |host: Option<&'static str>| {
        let mut request = client.get(&url);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        async move { cache_status(&request.send().await.expect("response")) }
    };
    assert_eq!(fetch(Some("elsewhere.test")).await, STORED);
    proxy.settled().await;
    assert_eq!(fetch(Some("elsewhere.test")).await, MEMORY_HIT);
    assert_eq!(fetch(None).await, MEMORY_HIT);
    assert_eq!(fetch(Some("another.test:8080")).await, MEMORY_HIT);
    assert_eq!(origin.hits(path), 1);
    let seen = origin
        .last_request_headers(path)
        .expect("the origin saw the request");
    let authority = url.trim_start_matches("http://").trim_end_matches(path);
    assert_eq!(
        seen.get("host").and_then(|v| v.to_str().ok()),
        Some(authority)
    );
}

/// Playwright's request interception, proxy authentication and HAR recording make Chromium
/// send `Cache-Control: no-cache` and `Pragma: no-cache` on every request (to bypass its own
/// cache): a fresh entry still answers them, unless the config honours client reloads.
#[tokio::test]
async fn client_reload_headers_do_not_defeat_fresh_entries_unless_honoured() {
    let s = origin().await;
    s.origin.route(
        "/canvaskit/canvaskit.wasm",
        Route::ok(random_bytes(50_000, 4)).header("cache-control", "public, max-age=3600"),
    );
    let url = s.origin.url("/canvaskit/canvaskit.wasm");
    let reload = |client: &reqwest::Client| {
        let request = client
            .get(&url)
            .header("cache-control", "no-cache")
            .header("pragma", "no-cache");
        async move {
            let response = request.send().await.expect("request");
            let status = cache_status(&response);
            response.bytes().await.expect("body");
            status
        }
    };
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    assert_eq!(reload(&client).await, STORED);
    assert_eq!(reload(&client).await, MEMORY_HIT);
    assert_eq!(s.origin.hits("/canvaskit/canvaskit.wasm"), 1);
    proxy.stop().await;

    let proxy = s.proxy(r#"{"client_reload": "revalidate"}"#).await;
    let client = proxy.client();
    assert!(reload(&client).await.contains("fwd=stale"));
    assert_eq!(s.origin.hits("/canvaskit/canvaskit.wasm"), 2);
}

#[tokio::test]
async fn a_head_is_answered_from_a_stored_get_with_the_length_a_get_carries() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    // A standard entry (its lifetime from Cache-Control), the body streamed chunked with no
    // Content-Length, as compressing servers send it.
    let (route, parts) = Route::streamed();
    s.origin.route(
        "/main.4f2a9c.js",
        route.header("cache-control", "public, max-age=3600"),
    );
    let body = random_bytes(70_000, 24);
    parts.send(body.slice(..30_000)).expect("origin sends");
    parts.send(body.slice(30_000..)).expect("origin sends");
    drop(parts);
    let url = s.origin.url("/main.4f2a9c.js");
    let (status, cache, got) = get(&client, &url).await;
    assert_eq!((status, cache.as_str(), got), (200, STORED, body.clone()));
    proxy.settled().await;

    // A HEAD says what a GET would send (RFC 9110 §9.3.2): the stored body's length.
    let response = client.head(&url).send().await.expect("HEAD");
    assert_eq!(cache_status(&response), MEMORY_HIT);
    assert_eq!(response.headers()["content-length"], "70000");
    assert!(response.bytes().await.expect("no body").is_empty());
    let response = client.get(&url).send().await.expect("GET");
    assert_eq!(cache_status(&response), MEMORY_HIT);
    assert_eq!(response.headers()["content-length"], "70000");
    assert_eq!(response.bytes().await.expect("body"), body);
    assert_eq!(s.origin.hits("/main.4f2a9c.js"), 1);
}

/// A static file server of `dir` on loopback (plain HTTP): tower-http's `ServeDir`, which
/// answers `Range` with 206 and `HEAD` itself.
async fn file_server(dir: &Path) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let files = tower_http::services::ServeDir::new(dir);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let mut files = files.clone();
                    async move { files.try_call(request).await }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

/// A range, or a HEAD, for a body the cache will not store (here larger than
/// `max_object_mb`) is sent to the origin as the client asked: the client gets the origin's
/// 206 (resuming a download, seeking in a video), not the whole body.
#[tokio::test]
async fn ranges_of_bodies_too_large_to_store_are_answered_by_the_origin() {
    let s = origin().await;
    let files = s.dir.join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    let body = random_bytes(3 * 1024 * 1024, 29);
    std::fs::write(files.join("film.mp4"), &body).expect("write film");
    let origin = file_server(&files).await;
    let proxy = s.proxy(r#"{"max_object_mb": 1}"#).await;
    let client = proxy.client();
    let url = format!("http://{origin}/film.mp4?v=7");
    for round in 0..2 {
        let response = client
            .get(&url)
            .header("range", "bytes=1000-1099")
            .send()
            .await
            .expect("range");
        assert_eq!(
            (response.status().as_u16(), cache_status(&response).as_str()),
            (206, "asset-proxy; fwd=miss; detail=too-large"),
            "round {round}"
        );
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes 1000-1099/{}", body.len()).as_str()
        );
        assert_eq!(
            response.bytes().await.expect("body"),
            body.slice(1000..1100)
        );
    }
    let response = client.head(&url).send().await.expect("head");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        body.len().to_string().as_str()
    );
    let response = client.get(&url).send().await.expect("whole");
    assert_eq!(
        (response.status().as_u16(), cache_status(&response).as_str()),
        (200, "asset-proxy; fwd=miss; detail=too-large")
    );
    assert_eq!(response.bytes().await.expect("body"), body);
}

/// RFC 9111 §4.4: a cache invalidates a URL when an unsafe request to it gets a non-error
/// answer. An entry stored with an hour to live is fetched again after a PUT, a POST or a
/// DELETE to its URL succeeded, also for a client that accepts other codings; one that
/// failed leaves it.
#[tokio::test]
async fn a_successful_unsafe_request_invalidates_its_url() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    let path = "/api/profile";
    let url = s.origin.url(path);
    let route = |body: String, status: u16| {
        Route::ok(body)
            .status(status)
            .header("cache-control", "public, max-age=3600")
            .header("content-type", "application/json")
    };
    s.origin.route(path, route("{\"v\":1}".to_owned(), 200));
    assert_eq!(get(&client, &url).await.1, STORED);
    assert_eq!(get(&client, &url).await.1, MEMORY_HIT);

    s.origin.route(path, route("{\"error\":1}".to_owned(), 500));
    let failed = client.put(&url).body("{}").send().await.expect("put");
    assert_eq!(failed.status(), 500);
    assert_eq!(
        get(&client, &url).await,
        (200, MEMORY_HIT.to_owned(), Bytes::from_static(b"{\"v\":1}")),
        "a failed PUT leaves the entry"
    );

    let mut version = 1;
    for method in [http::Method::PUT, http::Method::POST, http::Method::DELETE] {
        version += 1;
        let body = format!("{{\"v\":{version}}}");
        s.origin.route(path, route(body.clone(), 200));
        let sent = client
            .request(method.clone(), &url)
            .body("{}")
            .send()
            .await
            .expect("unsafe request");
        assert_eq!(sent.status(), 200, "{method}");
        let browser = client
            .get(&url)
            .header("accept-encoding", "gzip, deflate, br, zstd")
            .send()
            .await
            .expect("get");
        assert_eq!(cache_status(&browser), STORED, "after a {method}");
        assert_eq!(browser.bytes().await.expect("body"), body.as_bytes());
    }
    assert_eq!(get(&client, &url).await.1, MEMORY_HIT);
}

/// RFC 9111 §5.2.1.7: a request with `Cache-Control: only-if-cached` is answered from a
/// fresh stored response, or with a 504; the origin is never asked.
#[tokio::test]
async fn only_if_cached_is_a_stored_answer_or_a_504() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    let path = "/main.dart.js?v=4";
    s.origin.route(path, Route::ok("main"));
    let url = s.origin.url(path);
    let only_if_cached = || {
        client
            .get(&url)
            .header("cache-control", "only-if-cached")
            .send()
    };
    let refused = only_if_cached().await.expect("request");
    assert_eq!(
        (refused.status().as_u16(), cache_status(&refused).as_str()),
        (504, "asset-proxy; fwd=miss; detail=only-if-cached")
    );
    assert_eq!(s.origin.hits(path), 0);
    assert_eq!(get(&client, &url).await.1, STORED);
    let answered = only_if_cached().await.expect("request");
    assert_eq!(
        (answered.status().as_u16(), cache_status(&answered).as_str()),
        (200, MEMORY_HIT)
    );
    assert_eq!(answered.bytes().await.expect("body"), "main");
    assert_eq!(s.origin.hits(path), 1);
}

/// RFC 9111 §5.2.1.5: nothing of a request with `Cache-Control: no-store`, nor of its answer,
/// is stored, whatever the URL; what the cache holds already still answers it.
#[tokio::test]
async fn a_client_no_store_stores_nothing_and_still_takes_what_is_held() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    let path = "/main.dart.js?v=5";
    s.origin.route(path, Route::ok("main"));
    let url = s.origin.url(path);
    let no_store = || client.get(&url).header("cache-control", "no-store").send();
    let first = no_store().await.expect("request");
    assert_eq!(
        cache_status(&first),
        "asset-proxy; fwd=miss; detail=no-store"
    );
    assert_eq!(first.bytes().await.expect("body"), "main");
    proxy.settled().await;
    assert_eq!(proxy.app.stats().stored.get(), 0);
    assert_eq!(get(&client, &url).await.1, STORED);
    assert_eq!(
        cache_status(&no_store().await.expect("request")),
        MEMORY_HIT
    );
    assert_eq!(s.origin.hits(path), 2);
}

/// A 304 that sets a cookie: the cookie goes to the client whose request was revalidated, and
/// never into the entry, so no other client is ever sent it (RFC 9111 §4.3.4 updates the
/// stored headers; a shared cache keeps no one's cookie).
#[tokio::test]
async fn a_cookie_set_by_a_304_reaches_its_client_only() {
    let s = origin().await;
    let proxy = s.proxy("{}").await;
    let client = proxy.client();
    let path = "/main.dart.js";
    let route = || {
        Route::ok("main")
            .header("cache-control", "no-cache")
            .header("etag", "\"build-1\"")
    };
    s.origin.route(path, route());
    let url = s.origin.url(path);
    assert_eq!(get(&client, &url).await.1, STORED);
    proxy.settled().await;

    s.origin
        .route(path, route().header("set-cookie", "session=user-a; Path=/"));
    let revalidated = client.get(&url).send().await.expect("revalidation");
    assert_eq!(cache_status(&revalidated), REVALIDATED);
    assert_eq!(
        revalidated
            .headers()
            .get("set-cookie")
            .map(|v| v.as_bytes()),
        Some(&b"session=user-a; Path=/"[..]),
        "the revalidated client gets its cookie"
    );
    proxy.settled().await;

    s.origin.route(path, route());
    let other = client.get(&url).send().await.expect("another client");
    assert_eq!(cache_status(&other), REVALIDATED);
    assert!(
        other.headers().get("set-cookie").is_none(),
        "another client's cookie: {:?}",
        other.headers()
    );
    assert_eq!(other.bytes().await.expect("body"), "main");
}
