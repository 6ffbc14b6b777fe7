//! The cache path, specified against real loopback origins through a proxy running in this
//! process: what is stored, where it is served from, what a new version evicts, and what is
//! never cached.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

use support::{cache_status, get, random_bytes, wait_until, Origin, Route, TestCa, TestProxy};

const MEMORY_HIT: &str = "asset-proxy; hit; detail=memory";
const DISK_HIT: &str = "asset-proxy; hit; detail=disk";
const STORED: &str = "asset-proxy; fwd=miss; stored";

struct Setup {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    ca: TestCa,
    origin: Origin,
    proxy: TestProxy,
}

async fn setup(config: &str) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let ca = TestCa::new(&path);
    let origin = Origin::https(&ca).await;
    let proxy = TestProxy::start(&path, config, Some(&ca.path)).await;
    Setup {
        _dir: dir,
        dir: path,
        ca,
        origin,
        proxy,
    }
}

#[tokio::test]
async fn mitm_round_trip_is_byte_identical() {
    let s = setup("{}").await;
    let body = random_bytes(3 * 1024 * 1024 + 17, 1);
    s.origin.route(
        "/main.dart.js?v=1",
        Route::ok(body.clone()).header("content-type", "text/javascript"),
    );
    s.origin.route("/api/user", Route::ok("{\"name\":\"a\"}"));
    let client = s.proxy.client();

    let (status, cache, got) = get(&client, &s.origin.url("/main.dart.js?v=1")).await;
    assert_eq!((status, cache.as_str()), (200, STORED));
    assert_eq!(got, body);
    let (status, _, got) = get(&client, &s.origin.url("/api/user")).await;
    assert_eq!(status, 200);
    assert_eq!(&got[..], b"{\"name\":\"a\"}");
}

#[tokio::test]
async fn second_get_is_served_from_memory() {
    let s = setup("{}").await;
    let body = random_bytes(100_000, 2);
    s.origin.route(
        "/app.3f2a9c1b.js",
        Route::ok(body.clone()).header("cache-control", "no-cache"),
    );
    let client = s.proxy.client();
    let url = s.origin.url("/app.3f2a9c1b.js");

    assert_eq!(get(&client, &url).await.1, STORED);
    s.proxy.settled().await;
    let (status, cache, got) = get(&client, &url).await;
    assert_eq!((status, cache.as_str()), (200, MEMORY_HIT));
    assert_eq!(got, body);
    assert_eq!(s.origin.hits("/app.3f2a9c1b.js"), 1);
}

#[tokio::test]
async fn client_reload_headers_do_not_defeat_a_versioned_entry() {
    let s = setup("{}").await;
    s.origin.route(
        "/v7/app.js",
        Route::ok("x").header("cache-control", "max-age=0"),
    );
    let client = s.proxy.client();
    let url = s.origin.url("/v7/app.js");
    get(&client, &url).await;
    s.proxy.settled().await;
    let response = client
        .get(&url)
        .header("cache-control", "no-cache")
        .header("pragma", "no-cache")
        .send()
        .await
        .expect("request");
    assert_eq!(cache_status(&response), MEMORY_HIT);
    assert_eq!(s.origin.hits("/v7/app.js"), 1);
}

#[tokio::test]
async fn entries_survive_a_restart_and_are_served_from_disk() {
    let s = setup("{}").await;
    let body = random_bytes(200_000, 3);
    s.origin.route(
        "/canvaskit/v1.2.3/canvaskit.wasm",
        Route::ok(body.clone()).header("content-type", "application/wasm"),
    );
    let url = s.origin.url("/canvaskit/v1.2.3/canvaskit.wasm");
    assert_eq!(get(&s.proxy.client(), &url).await.1, STORED);
    s.proxy.stop().await;

    // Without pre-warming, so that the first read is the disk tier's.
    let config = r#"{"memory": {"prewarm": false}}"#;
    let proxy = TestProxy::start(&s.dir, config, Some(&s.ca.path)).await;
    let client = proxy.client();
    let (status, cache, got) = get(&client, &url).await;
    assert_eq!((status, cache.as_str()), (200, DISK_HIT));
    assert_eq!(got, body);
    assert_eq!(
        get(&client, &url).await.1,
        MEMORY_HIT,
        "a disk hit is promoted to memory"
    );
    assert_eq!(s.origin.hits("/canvaskit/v1.2.3/canvaskit.wasm"), 1);
}

#[tokio::test]
async fn with_retire_after_zero_a_new_version_retires_the_old_at_once() {
    let s = setup(r#"{"versioned": {"retire_after_secs": 0}}"#).await;
    s.origin
        .route("/main.dart.js?v=1", Route::ok("version one"));
    s.origin
        .route("/main.dart.js?v=2", Route::ok("version two"));
    let client = s.proxy.client();
    let (v1, v2) = (
        s.origin.url("/main.dart.js?v=1"),
        s.origin.url("/main.dart.js?v=2"),
    );

    get(&client, &v1).await;
    s.proxy.settled().await;
    let v1_file = s.proxy.app.cache().disk_path(&key(&v1));
    assert!(v1_file.exists(), "v1 written to disk");

    assert_eq!(get(&client, &v2).await.1, STORED);
    s.proxy.settled().await;
    assert!(!v1_file.exists(), "v1 removed from disk");
    assert_eq!(s.proxy.app.stats().version_changes.get(), 1);
    let (_, cache, _) = get(&client, &v2).await;
    assert_eq!(cache, MEMORY_HIT);

    // v1 asked again: an old version is like any other, fetched, stored and in use again.
    let (status, cache, body) = get(&client, &v1).await;
    assert_eq!((status, &body[..]), (200, &b"version one"[..]));
    assert_eq!(cache, STORED, "v1 was dropped from memory too");
    s.proxy.settled().await;
    assert!(v1_file.exists(), "v1 is held again");
    assert_eq!(s.origin.hits("/main.dart.js?v=1"), 2);
    assert_eq!(get(&client, &v1).await.1, MEMORY_HIT);
}

fn key(url: &str) -> asset_proxy::cache::http::key::CacheKey {
    asset_proxy::cache::http::key::CacheKey::new(
        &url::Url::parse(url).expect("url"),
        &http::HeaderMap::new(),
    )
}

#[tokio::test]
async fn concurrent_cold_requests_reach_the_origin_once() {
    let s = setup("{}").await;
    let body = random_bytes(1024 * 1024, 4);
    let gate = Arc::new(Notify::new());
    let mut route = Route::ok(body.clone());
    route.gate = Some(gate.clone());
    s.origin.route("/main.dart.js?v=cold", route);
    let client = s.proxy.client();
    let url = s.origin.url("/main.dart.js?v=cold");

    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { get(&client, &url).await })
        })
        .collect();
    let stats = s.proxy.app.stats().clone();
    wait_until("49 requests waiting on the first", || {
        stats.coalesced_waits.get() >= 49
    })
    .await;
    gate.notify_one();

    let mut statuses = Vec::new();
    for request in requests {
        let (status, cache, got) = request.await.expect("request task");
        assert_eq!(status, 200);
        assert_eq!(got, body);
        statuses.push(cache);
    }
    assert_eq!(s.origin.hits("/main.dart.js?v=cold"), 1);
    assert_eq!(statuses.iter().filter(|c| *c == STORED).count(), 1);
    let collapsed = statuses
        .iter()
        .filter(|c| c.contains("hit; collapsed"))
        .count();
    assert_eq!(collapsed, 49, "{statuses:?}");
}

#[tokio::test]
async fn private_answers_are_never_stored() {
    let s = setup("{}").await;
    let client = s.proxy.client();
    type RequestHeader = Option<(&'static str, &'static str)>;
    let cases: [(&str, Route, RequestHeader, &str); 5] = [
        (
            "/a.js?v=no-store",
            Route::ok("a").header("cache-control", "no-store"),
            None,
            "fwd=miss; detail=no-store",
        ),
        (
            "/a.js?v=private",
            Route::ok("a").header("cache-control", "private, max-age=60"),
            None,
            "fwd=miss; detail=private",
        ),
        (
            "/a.js?v=cookie",
            Route::ok("a").header("set-cookie", "session=1"),
            None,
            "fwd=miss; detail=set-cookie",
        ),
        (
            "/a.js?v=auth",
            Route::ok("a"),
            Some(("authorization", "Bearer secret")),
            "fwd=bypass; detail=authorization",
        ),
        (
            "/a.js?v=vary",
            Route::ok("a").header("vary", "*"),
            None,
            "fwd=miss; detail=vary",
        ),
    ];
    for (path, route, request_header, want) in cases {
        s.origin.route(path, route);
        for _ in 0..2 {
            let mut request = client.get(s.origin.url(path));
            if let Some((name, value)) = request_header {
                request = request.header(name, value);
            }
            let response = request.send().await.expect("request");
            assert_eq!(
                cache_status(&response),
                format!("asset-proxy; {want}"),
                "{path}"
            );
            s.proxy.settled().await;
        }
        assert_eq!(
            s.origin.hits(path),
            2,
            "{path} reached the origin each time"
        );
    }
}

#[tokio::test]
async fn dynamic_urls_are_forwarded_every_time() {
    let s = setup(r#"{"rules": [{"glob": "localhost:*/feed", "standard_caching": false}]}"#).await;
    let client = s.proxy.client();
    s.origin.route("/api/data?page=1", Route::ok("[1]"));
    s.origin
        .route("/main.dart.js", Route::ok("no validators, no lifetime"));
    s.origin.route(
        "/feed",
        Route::ok("{}").header("cache-control", "public, max-age=600"),
    );
    let cases = [
        (
            "/api/data?page=1",
            "asset-proxy; fwd=miss; detail=not-cacheable",
        ),
        (
            "/main.dart.js",
            "asset-proxy; fwd=miss; detail=not-cacheable",
        ),
        ("/feed", "asset-proxy; fwd=bypass; detail=not-versioned"),
    ];
    for (path, want) in cases {
        for _ in 0..3 {
            let (status, cache, _) = get(&client, &s.origin.url(path)).await;
            assert_eq!((status, cache.as_str()), (200, want), "{path}");
            s.proxy.settled().await;
        }
        assert_eq!(s.origin.hits(path), 3);
    }
    let response = client
        .post(s.origin.url("/api/data?page=1"))
        .body("payload")
        .send()
        .await
        .expect("post");
    assert_eq!(cache_status(&response), "asset-proxy; fwd=method");
}

#[tokio::test]
async fn rules_cache_or_exclude_urls() {
    let config = r#"{"rules": [
        {"glob": "localhost:*/fonts/**", "action": "cache", "ttl_secs": 3600},
        {"glob": "localhost:*/live/**", "action": "bypass"}
    ]}"#;
    let s = setup(config).await;
    let client = s.proxy.client();
    s.origin.route("/fonts/Roboto.ttf", Route::ok("font"));
    s.origin.route("/live/app.js?v=1", Route::ok("live"));
    get(&client, &s.origin.url("/fonts/Roboto.ttf")).await;
    s.proxy.settled().await;
    assert_eq!(
        get(&client, &s.origin.url("/fonts/Roboto.ttf")).await.1,
        MEMORY_HIT
    );
    for _ in 0..2 {
        assert_eq!(
            get(&client, &s.origin.url("/live/app.js?v=1")).await.1,
            "asset-proxy; fwd=bypass; detail=rule"
        );
    }
    assert_eq!(s.origin.hits("/fonts/Roboto.ttf"), 1);
    assert_eq!(s.origin.hits("/live/app.js?v=1"), 2);
}

#[tokio::test]
async fn head_is_answered_from_a_cached_get() {
    let s = setup("{}").await;
    let client = s.proxy.client();
    s.origin
        .route("/logo.v2.png?v=2", Route::ok(random_bytes(5000, 5)));
    let url = s.origin.url("/logo.v2.png?v=2");
    get(&client, &url).await;
    s.proxy.settled().await;
    let response = client.head(&url).send().await.expect("head");
    assert_eq!(cache_status(&response), MEMORY_HIT);
    assert_eq!(response.headers()["content-length"], "5000");
    assert!(response.bytes().await.expect("body").is_empty());
    assert_eq!(s.origin.hits("/logo.v2.png?v=2"), 1);
}

#[tokio::test]
async fn content_codings_are_kept_apart() {
    let s = setup("{}").await;
    let client = s.proxy.client();
    let gzip_body = Bytes::from_static(b"\x1f\x8b pretend gzip");
    s.origin.route(
        "/main.dart.js?v=enc",
        Route::ok(gzip_body.clone())
            .header("content-encoding", "gzip")
            .header("vary", "Accept-Encoding"),
    );
    let url = s.origin.url("/main.dart.js?v=enc");
    let browser = |client: &reqwest::Client| {
        client
            .get(&url)
            .header("accept-encoding", "gzip, deflate, br, zstd")
    };
    let response = browser(&client).send().await.expect("browser request");
    assert_eq!(cache_status(&response), STORED);
    s.proxy.settled().await;
    let response = browser(&client).send().await.expect("browser request");
    assert_eq!(cache_status(&response), MEMORY_HIT);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.bytes().await.expect("body"), gzip_body);

    // A client that accepts no coding is not handed the gzip body.
    let response = client.get(&url).send().await.expect("plain request");
    assert_eq!(cache_status(&response), STORED);
    assert_eq!(s.origin.hits("/main.dart.js?v=enc"), 2);
}

#[tokio::test]
async fn an_unreachable_origin_gives_a_502_that_says_why() {
    let s = setup("{}").await;
    let client = s.proxy.client();
    // Bound but not listening: connections to it are refused, and no other test can take
    // the port meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let response = client
        .get(format!("http://127.0.0.1:{port}/main.dart.js?v=1"))
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), 502);
    assert_eq!(
        cache_status(&response),
        "asset-proxy; fwd=miss; detail=upstream-connect"
    );
    let text = response.text().await.expect("body");
    assert!(
        text.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{text}"
    );

    // The proxy keeps serving.
    s.origin.route("/ok.js?v=1", Route::ok("fine"));
    assert_eq!(get(&client, &s.origin.url("/ok.js?v=1")).await.0, 200);
}

#[tokio::test]
async fn an_untrusted_origin_certificate_gives_a_502() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/a.js?v=1", Route::ok("a"));
    // This proxy does not trust the origin's CA.
    let proxy = TestProxy::start(dir.path(), "{}", None).await;
    let response = proxy
        .client()
        .get(origin.url("/a.js?v=1"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 502);
    let text = response.text().await.expect("body");
    assert!(text.contains("TLS handshake with localhost"), "{text}");
}

#[tokio::test]
async fn a_truncated_origin_body_is_not_committed() {
    let s = setup("{}").await;
    let client = s.proxy.client();
    let body = random_bytes(300_000, 6);
    let mut route = Route::ok(body.clone());
    route.truncate_at = Some(100_000);
    s.origin.route("/main.dart.js?v=cut", route);
    let url = s.origin.url("/main.dart.js?v=cut");

    let result = async { client.get(&url).send().await?.bytes().await }.await;
    assert!(
        result.is_err() || result.as_ref().is_ok_and(|b| b.len() < body.len()),
        "the client sees a broken body"
    );
    s.proxy.settled().await;
    assert!(
        !s.proxy.app.cache().disk_path(&key(&url)).exists(),
        "nothing written"
    );

    s.origin
        .route("/main.dart.js?v=cut", Route::ok(body.clone()));
    let (status, cache, got) = get(&client, &url).await;
    assert_eq!(
        (status, cache.as_str()),
        (200, STORED),
        "the next request fetches again"
    );
    assert_eq!(got, body);
}

#[tokio::test]
async fn a_corrupted_disk_entry_is_detected_and_refetched() {
    let s = setup("{}").await;
    let body = random_bytes(50_000, 7);
    s.origin.route("/app-3f2a9c1b.css", Route::ok(body.clone()));
    let url = s.origin.url("/app-3f2a9c1b.css");
    get(&s.proxy.client(), &url).await;
    s.proxy.stop().await;

    let no_prewarm = r#"{"memory": {"prewarm": false}}"#;
    let file = {
        // Without pre-warming: a pre-warm still reading when this proxy stops could read the
        // file half-damaged below, and remove it before the proxy under test sees it.
        let proxy = TestProxy::start(&s.dir, no_prewarm, Some(&s.ca.path)).await;
        let file = proxy.app.cache().disk_path(&key(&url));
        proxy.stop().await;
        file
    };
    let mut bytes = std::fs::read(&file).expect("entry file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&file, bytes).expect("corrupt the entry");

    // Without pre-warming again: the request's own read is what must find the damage (a
    // small file in the page cache, read without waiting for the disk, then by the read that
    // removes it).
    let proxy = TestProxy::start(&s.dir, no_prewarm, Some(&s.ca.path)).await;
    let (status, cache, got) = get(&proxy.client(), &url).await;
    assert_eq!((status, cache.as_str()), (200, STORED));
    assert_eq!(got, body);
    assert_eq!(proxy.app.stats().corrupt_entries.get(), 1);
    assert_eq!(s.origin.hits("/app-3f2a9c1b.css"), 2);
}

#[tokio::test]
async fn http2_is_spoken_to_the_client_and_http1_origins_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https_http1_only(&ca).await;
    origin.route("/app.js?v=h2", Route::ok("over h2"));
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let response = proxy
        .client()
        .get(origin.url("/app.js?v=h2"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await.expect("body"), "over h2");
}

#[tokio::test]
async fn plain_http_is_proxied_with_request_bodies_streamed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    origin.route("/submit", Route::ok("thanks"));
    origin.route("/img/photo.12345678.jpg", Route::ok("jpeg"));
    let proxy = TestProxy::start(dir.path(), "{}", None).await;
    let client = proxy.client();
    let response = client
        .post(origin.url("/submit"))
        .header("connection", "x-secret")
        .header("x-secret", "hop")
        .body(random_bytes(2 * 1024 * 1024, 8))
        .send()
        .await
        .expect("post");
    assert_eq!(response.text().await.expect("body"), "thanks");
    let seen = origin
        .last_request_headers("/submit")
        .expect("origin saw it");
    assert_eq!(origin.last_body_len("/submit"), Some(2 * 1024 * 1024));
    assert!(
        seen.get("x-secret").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert!(seen["via"].to_str().expect("via").ends_with("asset-proxy"));

    get(&client, &origin.url("/img/photo.12345678.jpg")).await;
    proxy.settled().await;
    assert_eq!(
        get(&client, &origin.url("/img/photo.12345678.jpg")).await.1,
        MEMORY_HIT
    );
}

#[tokio::test]
async fn passthrough_hosts_are_tunnelled_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/a.js?v=1", Route::ok("direct"));
    let proxy = TestProxy::start(
        dir.path(),
        r#"{"passthrough": ["localhost"]}"#,
        Some(&ca.path),
    )
    .await;
    // Trusting only the origin's CA works: the certificate is the origin's own.
    let client = support::client_via(proxy.addr, &ca.pem);
    for _ in 0..2 {
        let response = client
            .get(origin.url("/a.js?v=1"))
            .send()
            .await
            .expect("request");
        assert!(response.headers().get("cache-status").is_none());
        assert_eq!(response.text().await.expect("body"), "direct");
    }
    assert_eq!(origin.hits("/a.js?v=1"), 2);
}

#[tokio::test]
async fn entries_older_than_max_age_are_fetched_again() {
    use asset_proxy::cache::entry::{CachedResponse, EntryMeta, Lifetime};
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/app.js?v=old", Route::ok("fresh from origin"));
    let url = origin.url("/app.js?v=old");
    {
        // An entry stored 25 hours ago (the default max age is 24).
        let (disk, _) = asset_proxy::cache::disk::DiskTier::open(&dir.path().join("cache"))
            .expect("open disk tier");
        let body = Bytes::from_static(b"stale body");
        let stored_at = SystemTime::now() - Duration::from_secs(25 * 3600);
        let meta = EntryMeta::new(
            key(&url),
            http::StatusCode::OK,
            &http::HeaderMap::new(),
            Lifetime::Pinned {
                ttl_secs: 24 * 3600,
            },
            stored_at,
            &body,
        );
        disk.write(&CachedResponse::new(meta, body))
            .expect("write old entry");
    }
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let (status, cache, body) = get(&proxy.client(), &url).await;
    assert_eq!(
        (status, cache.as_str(), &body[..]),
        (
            200,
            "asset-proxy; fwd=stale; stored",
            &b"fresh from origin"[..]
        )
    );
    assert_eq!(origin.hits("/app.js?v=old"), 1);
}

#[tokio::test]
async fn bodies_over_max_object_size_are_streamed_not_stored() {
    let s = setup(r#"{"max_object_mb": 1}"#).await;
    let client = s.proxy.client();
    let body = random_bytes(1024 * 1024 + 1, 9);
    s.origin.route("/big.js?v=1", Route::ok(body.clone()));
    for _ in 0..2 {
        let (status, cache, got) = get(&client, &s.origin.url("/big.js?v=1")).await;
        assert_eq!(
            (status, cache.as_str()),
            (200, "asset-proxy; fwd=miss; detail=too-large")
        );
        assert_eq!(got, body);
    }
    assert_eq!(s.origin.hits("/big.js?v=1"), 2);
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let s = setup("{}").await;
    let client = s.proxy.client();
    let gate = Arc::new(Notify::new());
    let mut route = Route::ok(random_bytes(400_000, 10));
    route.gate = Some(gate.clone());
    s.origin.route("/slow.js?v=1", route);
    let url = s.origin.url("/slow.js?v=1");
    let arrived = s.origin.arrived.notified();
    let request = tokio::spawn(async move { get(&client, &url).await });
    arrived.await;

    let addr = s.proxy.addr;
    let stopping = tokio::spawn(s.proxy.stop());
    // Once the listener is closed, shutdown is under way; then let the origin answer.
    wait_until("the listener to close", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    gate.notify_one();
    let (status, cache, body) = request.await.expect("request task");
    assert_eq!((status, cache.as_str(), body.len()), (200, STORED, 400_000));
    stopping.await.expect("proxy stopped");
}

#[tokio::test]
async fn a_silent_origin_gives_a_504() {
    let s = setup(r#"{"upstream": {"response_timeout_secs": 1}}"#).await;
    let mut route = Route::ok("never sent");
    route.gate = Some(Arc::new(Notify::new()));
    s.origin.route("/hang.js?v=1", route);
    let response = s
        .proxy
        .client()
        .get(s.origin.url("/hang.js?v=1"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 504);
    assert_eq!(
        cache_status(&response),
        "asset-proxy; fwd=miss; detail=upstream-timeout"
    );
    let text = response.text().await.expect("body");
    assert!(text.contains("did not answer within 1s"), "{text}");
}

#[tokio::test]
async fn two_proxies_share_one_cache_directory() {
    let s = setup("{}").await;
    let body = random_bytes(80_000, 13);
    s.origin.route("/shared.js?v=1", Route::ok(body.clone()));
    let url = s.origin.url("/shared.js?v=1");
    let other = TestProxy::start(&s.dir, "{}", Some(&s.ca.path)).await;
    assert_eq!(get(&s.proxy.client(), &url).await.1, STORED);
    s.proxy.settled().await;
    let (status, cache, got) = get(&other.client(), &url).await;
    assert_eq!((status, cache.as_str()), (200, DISK_HIT));
    assert_eq!(got, body);
    assert_eq!(s.origin.hits("/shared.js?v=1"), 1);
}

#[test]
fn temp_files_of_a_crashed_writer_are_removed_at_start_unless_another_proxy_runs() {
    use asset_proxy::cache::disk::DiskTier;
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let fan_out = cache.join("v1/entries/ab");
    std::fs::create_dir_all(&fan_out).expect("mkdir");
    let temp = fan_out.join(".tmp-crashed");

    std::fs::write(&temp, b"half an entry").expect("write temp");
    let (running, report) = DiskTier::open(&cache).expect("open");
    assert_eq!(report.temps_removed, 1);
    assert!(!temp.exists());

    // While `running` holds the directory, a second opener leaves temp files alone: they may
    // be the first one's writes in progress.
    std::fs::write(&temp, b"a write in progress").expect("write temp");
    let (_second, report) = DiskTier::open(&cache).expect("open again");
    assert!(report.shared_with_another_process);
    assert_eq!(report.temps_removed, 0);
    assert!(temp.exists());
    drop(running);
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_refused_before_any_lookup() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    origin.route("/ok.js?v=1", Route::ok("allowed"));
    let proxy = TestProxy::start(
        dir.path(),
        r#"{"upstream": {"allow_hosts": ["127.0.0.1"]}}"#,
        None,
    )
    .await;
    let client = proxy.client();
    assert_eq!(get(&client, &origin.url("/ok.js?v=1")).await.0, 200);

    // `.invalid` never resolves: a 403 rather than a 502 shows no lookup was tried.
    let response = client
        .get("http://update.example.invalid/check")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 403);
    assert_eq!(
        cache_status(&response),
        "asset-proxy; fwd=request; detail=host-not-allowed"
    );
    assert!(response
        .text()
        .await
        .expect("body")
        .contains("update.example.invalid is not in upstream.allow_hosts"));

    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"CONNECT clients.example.invalid:443 HTTP/1.1\r\nHost: clients.example.invalid:443\r\n\r\n")
        .await
        .expect("write");
    let mut reply = vec![0u8; 12];
    stream.read_exact(&mut reply).await.expect("read");
    assert_eq!(&reply, b"HTTP/1.1 403");
}

#[tokio::test]
async fn vary_keys_entries_by_the_named_request_headers() {
    let s = setup("{}").await;
    let client = s.proxy.client();
    s.origin.route(
        "/styles.css?v=1",
        Route::ok("per-language").header("vary", "Accept-Language"),
    );
    let url = s.origin.url("/styles.css?v=1");
    let fetch = |language: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client
                .get(&url)
                .header("accept-language", language)
                .send()
                .await
                .expect("request");
            cache_status(&response)
        }
    };
    assert_eq!(fetch("en").await, STORED);
    s.proxy.settled().await;
    assert_eq!(fetch("en").await, MEMORY_HIT);
    assert_eq!(
        fetch("fr").await,
        STORED,
        "another language is another variant"
    );
    s.proxy.settled().await;
    assert_eq!(fetch("fr").await, MEMORY_HIT);
    assert_eq!(fetch("en").await, MEMORY_HIT, "both variants are kept");
    assert_eq!(s.origin.hits("/styles.css?v=1"), 2);
}
