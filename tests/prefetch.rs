//! Predictive prefetch against a real loopback origin: a document and a bootstrap script
//! passing through the proxy make it fetch the versioned assets they name before the client
//! asks, with the headers of the document's client; the client's request joins a prefetch
//! under way; nothing is prefetched for requests with credentials, for URLs a rule excludes,
//! for other origins, or with prefetch off.

mod support;

use std::io::Write;
use std::sync::Arc;

use support::{get, random_bytes, wait_until, Origin, Route, TestCa, TestProxy};
use tokio::sync::Notify;

const CANVASKIT: &str =
    "/flutter-canvaskit/36335019a8eab588c3c2ea783c618d90505be233/canvaskit.wasm";

const INDEX: &str = r#"<!doctype html><html><head>
<script src="flutter_bootstrap.js" async></script>
<link rel="preload" href="/assets/app.3f2a9c1b.js" as="script">
<link rel="preload" href="OTHER/lib.js?v=1" as="script">
<link rel="icon" href="favicon.png">
</head><body></body></html>"#;

fn bootstrap() -> String {
    format!(
        r#"_flutter.loader.load({{ main: "main.dart.js?v=7", wasm: '{CANVASKIT}', api: "/api/user" }});"#
    )
}

/// An origin serving the app; `other` is where the document's cross-origin reference points.
fn serve_app(origin: &Origin, other: &Origin) {
    let index = INDEX.replace("OTHER", other.url("").trim_end_matches('/'));
    origin.route(
        "/index.html",
        Route::ok(index)
            .header("content-type", "text/html; charset=utf-8")
            .header("cache-control", "no-cache")
            .header("etag", "\"i1\""),
    );
    origin.route(
        "/flutter_bootstrap.js",
        Route::ok(bootstrap())
            .header("content-type", "text/javascript")
            .header("cache-control", "no-cache")
            .header("etag", "\"b1\""),
    );
    origin.route(
        "/assets/app.3f2a9c1b.js",
        Route::ok(random_bytes(50_000, 1)),
    );
    origin.route("/main.dart.js?v=7", Route::ok(random_bytes(400_000, 2)));
    origin.route(CANVASKIT, Route::ok(random_bytes(300_000, 3)));
    other.route("/lib.js?v=1", Route::ok("other origin"));
}

/// A test directory and CA, and two HTTPS origins: the first serving the app, the second the
/// document's cross-origin reference.
async fn app() -> (tempfile::TempDir, TestCa, Origin, Origin) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let (origin, other) = (Origin::https(&ca).await, Origin::https(&ca).await);
    serve_app(&origin, &other);
    (dir, ca, origin, other)
}

async fn prefetched(proxy: &TestProxy, count: u64) {
    let app = proxy.app.clone();
    wait_until("prefetched entries stored", move || {
        app.stats().prefetched.get() == count
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_assets_a_document_and_its_bootstrap_name_are_fetched_before_they_are_asked_for()
{
    let (dir, ca, origin, other) = app().await;
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let client = proxy.client();

    assert_eq!(get(&client, &origin.url("/index.html")).await.0, 200);
    prefetched(&proxy, 1).await;
    assert_eq!(origin.hits("/assets/app.3f2a9c1b.js"), 1);
    // Unversioned references are left to the browser; other origins are never fetched.
    assert_eq!(origin.hits("/flutter_bootstrap.js"), 0);
    assert_eq!(origin.hits("/favicon.png"), 0);
    assert_eq!(other.hits("/lib.js?v=1"), 0);

    assert_eq!(
        get(&client, &origin.url("/flutter_bootstrap.js")).await.0,
        200
    );
    prefetched(&proxy, 3).await;
    assert_eq!(origin.hits("/api/user"), 0);
    for path in ["/assets/app.3f2a9c1b.js", "/main.dart.js?v=7", CANVASKIT] {
        let (status, cache, _) = get(&client, &origin.url(path)).await;
        assert_eq!(status, 200);
        assert!(cache.contains("hit"), "{path}: {cache}");
        assert_eq!(origin.hits(path), 1, "{path}");
    }
    let stats = support::admin_json(proxy.admin, "/stats").await;
    let prefetch = &stats["prefetch"];
    assert_eq!(prefetch["scans"], 2, "{prefetch}");
    assert_eq!(prefetch["fetches"], 3, "{prefetch}");
    assert_eq!(prefetch["used"], 3, "{prefetch}");
    assert_eq!(prefetch["used_bytes"], 750_000, "{prefetch}");
    assert_eq!(prefetch["wasted_bytes"], 0, "{prefetch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_request_joins_a_prefetch_under_way() {
    let (dir, ca, origin, _other) = app().await;
    let gate = Arc::new(Notify::new());
    let mut held = Route::ok(random_bytes(400_000, 2));
    held.gate = Some(gate.clone());
    origin.route("/main.dart.js?v=7", held);
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let client = proxy.client();

    get(&client, &origin.url("/flutter_bootstrap.js")).await;
    wait_until("the prefetch reached the origin", || {
        origin.hits("/main.dart.js?v=7") == 1
    })
    .await;
    let url = origin.url("/main.dart.js?v=7");
    let browser = tokio::spawn({
        let client = client.clone();
        async move { get(&client, &url).await }
    });
    let app = proxy.app.clone();
    wait_until("the browser's request waits for the prefetch", move || {
        app.stats().coalesced_waits.get() == 1
    })
    .await;
    gate.notify_one();
    let (status, cache, body) = browser.await.expect("browser request");
    assert_eq!((status, body.len()), (200, 400_000));
    assert!(cache.contains("hit; collapsed"), "{cache}");
    assert_eq!(origin.hits("/main.dart.js?v=7"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_documents_are_scanned_too() {
    let (dir, ca, origin, _other) = app().await;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(bootstrap().as_bytes()).expect("gzip");
    origin.route(
        "/flutter_bootstrap.js",
        Route::ok(gzip.finish().expect("gzip"))
            .header("content-type", "text/javascript")
            .header("content-encoding", "gzip")
            .header("cache-control", "no-cache")
            .header("etag", "\"b1\""),
    );
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    get(&proxy.client(), &origin.url("/flutter_bootstrap.js")).await;
    prefetched(&proxy, 2).await;
    assert_eq!(origin.hits("/main.dart.js?v=7"), 1);
    assert_eq!(origin.hits(CANVASKIT), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetch_asks_as_the_client_of_the_document_did() {
    let (dir, ca, origin, _other) = app().await;
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let client = proxy.client();
    let document = |extra: Option<(&'static str, &'static str)>| {
        let mut request = client
            .get(origin.url("/index.html"))
            .header("user-agent", "Scanner/1.0")
            .header("accept-language", "fr-CH, fr;q=0.9")
            .header("x-other", "not copied");
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        request
    };

    // With credentials the document may be the user's own: not scanned.
    let response = document(Some(("authorization", "Bearer t0ken")))
        .send()
        .await;
    response.expect("request").bytes().await.expect("body");
    proxy.settled().await;
    assert_eq!(proxy.app.stats().prefetch_scans.get(), 0);

    let response = document(None).send().await;
    response.expect("request").bytes().await.expect("body");
    prefetched(&proxy, 1).await;
    let sent = origin
        .last_request_headers("/assets/app.3f2a9c1b.js")
        .expect("the prefetch reached the origin");
    assert_eq!(sent["user-agent"], "Scanner/1.0");
    assert_eq!(sent["accept-language"], "fr-CH, fr;q=0.9");
    assert!(!sent.contains_key("x-other"), "{sent:?}");
    assert!(!sent.contains_key("authorization"), "{sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_prefetched_for_credentials_excluded_urls_or_with_prefetch_off() {
    let (dir, ca, origin, _other) = app().await;
    let config = r#"{ "rules": [ { "glob": "*/flutter-canvaskit/**", "action": "bypass" } ] }"#;
    let proxy = TestProxy::start(&dir.path().join("a"), config, Some(&ca.path)).await;
    let client = proxy.client();

    // With a cookie, the document may be the user's own: not scanned.
    let response = client
        .get(origin.url("/flutter_bootstrap.js"))
        .header("cookie", "session=1")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("body");
    // Without, it is; the rule keeps canvaskit out.
    get(&client, &origin.url("/flutter_bootstrap.js")).await;
    prefetched(&proxy, 1).await;
    proxy.settled().await;
    assert_eq!(proxy.app.stats().prefetch_scans.get(), 1);
    assert_eq!(origin.hits("/main.dart.js?v=7"), 1);
    assert_eq!(origin.hits(CANVASKIT), 0);

    let off = r#"{ "prefetch": { "enabled": false } }"#;
    let proxy = TestProxy::start(&dir.path().join("b"), off, Some(&ca.path)).await;
    get(&proxy.client(), &origin.url("/index.html")).await;
    get(&proxy.client(), &origin.url("/flutter_bootstrap.js")).await;
    proxy.settled().await;
    assert_eq!(proxy.app.stats().prefetch_scans.get(), 0);
    assert_eq!(origin.hits("/assets/app.3f2a9c1b.js"), 0);
}
