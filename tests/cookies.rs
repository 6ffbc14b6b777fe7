//! Sessions that carry cookies: static assets are fetched once for every session (RFC 9111:
//! the response decides whether it may be shared), personalised answers never cross
//! sessions, live API answers are neither stored nor collapsed, and no cookie, token or
//! password is ever written down — not in entry files, the journal, Redis, or the log.

mod support;

use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use support::redis_server::RedisServer;
use support::{
    cache_status, files_in, random_bytes, Origin, ProxyProcess, Route, TestCa, TestProxy,
};

async fn get_with(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (String, Bytes) {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let cache = cache_status(&response);
    (cache, response.bytes().await.expect("body"))
}

struct Setup {
    dir: tempfile::TempDir,
    ca: TestCa,
    origin: Origin,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    Setup { dir, ca, origin }
}

fn script(body: Bytes) -> Route {
    Route::ok(body)
        .header("content-type", "text/javascript")
        .header("cache-control", "public, max-age=31536000")
}

#[tokio::test]
async fn four_sessions_with_their_own_cookies_fetch_each_asset_once() {
    let s = setup().await;
    let proxy = TestProxy::start(s.dir.path(), "{}", Some(&s.ca.path)).await;
    let client = proxy.client();
    let main = random_bytes(300_000, 1);
    s.origin.route(
        "/app/main.dart.js?v=c1",
        Route::ok(main.clone())
            .header("content-type", "text/javascript")
            .header("cache-control", "no-cache")
            .header("etag", "\"c1\""),
    );
    let lib = random_bytes(50_000, 2);
    s.origin.route("/lib/script.js", script(lib.clone()));
    let wasm = random_bytes(80_000, 3);
    s.origin.route(
        "/canvaskit/canvaskit.wasm",
        Route::ok(wasm.clone())
            .header("content-type", "application/wasm")
            .header("cache-control", "public, max-age=3600"),
    );
    let assets = [
        ("/app/main.dart.js?v=c1", main, "script"),
        ("/lib/script.js", lib, "script"),
        // fetch()-loaded, as Flutter loads CanvasKit.
        ("/canvaskit/canvaskit.wasm", wasm, "empty"),
    ];
    // Two sessions at the same moment on a cold cache, then two one after the other.
    let mut together = Vec::new();
    for session in ["sid=a1; theme=dark", "sid=b2"] {
        for (path, body, dest) in assets.clone() {
            let (client, url) = (client.clone(), s.origin.url(path));
            together.push(tokio::spawn(async move {
                let headers = [("cookie", session), ("sec-fetch-dest", dest)];
                let (_, got) = get_with(&client, &url, &headers).await;
                assert_eq!(got, body, "{url}");
            }));
        }
    }
    for task in together {
        task.await.expect("session");
    }
    proxy.settled().await;
    for session in ["sid=c3", "sid=d4"] {
        for (path, body, dest) in &assets {
            let headers = [("cookie", session), ("sec-fetch-dest", *dest)];
            let (cache, got) = get_with(&client, &s.origin.url(path), &headers).await;
            assert_eq!(&got, body, "{path}");
            assert!(cache.contains("hit"), "{path}: {cache}");
        }
    }
    for (path, _, _) in &assets {
        assert_eq!(
            s.origin.hits(path),
            1,
            "{path} fetched once for four sessions"
        );
    }
}

#[tokio::test]
async fn personalised_answers_stay_with_their_session() {
    let s = setup().await;
    let config = r#"{"rules": [{"glob": "localhost:*/own/**", "share_credentials": false}]}"#;
    let proxy = TestProxy::start(s.dir.path(), config, Some(&s.ca.path)).await;
    let client = proxy.client();
    let cases = [
        // A document: answers to cookie-carrying requests are kept per cookie.
        Route::ok("page")
            .header("content-type", "text/html")
            .header("cache-control", "public, max-age=600"),
        // JSON with an explicit lifetime: stored, per cookie.
        Route::ok("{}")
            .header("content-type", "application/json")
            .header("cache-control", "max-age=600"),
        // An asset that says it varies on the cookie.
        script(Bytes::from_static(b"js")).header("vary", "Cookie"),
    ];
    for (i, route) in cases.into_iter().enumerate() {
        let path = format!("/p{i}?v=1");
        s.origin.route(&path, route);
        let url = s.origin.url(&path);
        get_with(&client, &url, &[("cookie", "sid=alice")]).await;
        proxy.settled().await;
        let (cache, _) = get_with(&client, &url, &[("cookie", "sid=bob")]).await;
        assert!(cache.contains("fwd=miss"), "{path}: {cache}");
        proxy.settled().await;
        // Asked before any copy without a cookie exists: only her own can answer.
        let (cache, _) = get_with(&client, &url, &[("cookie", "sid=alice")]).await;
        assert!(
            cache.contains("hit"),
            "{path}: alice's own copy serves her: {cache}"
        );
        let (cache, _) = get_with(&client, &url, &[]).await;
        assert!(
            cache.contains("fwd=miss"),
            "{path} without a cookie: {cache}"
        );
        assert_eq!(s.origin.hits(&path), 3, "{path}");
    }
    // A rule keeps even versioned assets per cookie.
    s.origin
        .route("/own/app.js?v=1", script(Bytes::from_static(b"own")));
    for session in ["sid=alice", "sid=bob"] {
        get_with(
            &client,
            &s.origin.url("/own/app.js?v=1"),
            &[("cookie", session)],
        )
        .await;
        proxy.settled().await;
    }
    assert_eq!(s.origin.hits("/own/app.js?v=1"), 2);
    // An answer that sets a cookie is never stored.
    s.origin.route(
        "/login.js?v=1",
        script(Bytes::from_static(b"hi")).header("set-cookie", "sid=new"),
    );
    for _ in 0..2 {
        let (cache, _) = get_with(&client, &s.origin.url("/login.js?v=1"), &[]).await;
        assert_eq!(cache, "asset-proxy; fwd=miss; detail=set-cookie");
    }
}

#[tokio::test]
async fn live_api_answers_are_neither_stored_nor_collapsed() {
    let s = setup().await;
    let proxy = TestProxy::start(s.dir.path(), "{}", Some(&s.ca.path)).await;
    let client = proxy.client();
    // Each request gets a body of its own; the origin holds all three until all arrived.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut route = Route::ok("{\"n\": 1}")
        .header("content-type", "application/json")
        .header("etag", "\"n1\"");
    route.gate = Some(gate.clone());
    s.origin.route("/api/me", route);
    let mut tasks = Vec::new();
    for dest in ["empty", "empty", "empty"] {
        let (client, url) = (client.clone(), s.origin.url("/api/me"));
        tasks.push(tokio::spawn(async move {
            get_with(&client, &url, &[("sec-fetch-dest", dest)]).await
        }));
    }
    support::wait_until("three requests at the origin", || {
        s.origin.hits("/api/me") == 3
    })
    .await;
    gate.notify_waiters();
    for task in tasks {
        let (cache, _) = task.await.expect("request");
        assert_eq!(cache, "asset-proxy; fwd=miss; detail=live");
    }
    // Not from a browser's fetch() either: JSON without a lifetime is live.
    s.origin.route(
        "/api/list",
        Route::ok("[]")
            .header("content-type", "application/json")
            .header("etag", "\"l\""),
    );
    for _ in 0..2 {
        let (cache, _) = get_with(&client, &s.origin.url("/api/list"), &[]).await;
        assert_eq!(cache, "asset-proxy; fwd=miss; detail=live");
    }
    proxy.settled().await;
    assert_eq!(proxy.app.stats().version_changes.get(), 0);
    // With an explicit lifetime the answer is the origin's to share.
    s.origin.route(
        "/api/config",
        Route::ok("{}")
            .header("content-type", "application/json")
            .header("cache-control", "public, max-age=60"),
    );
    get_with(
        &client,
        &s.origin.url("/api/config"),
        &[("sec-fetch-dest", "empty")],
    )
    .await;
    proxy.settled().await;
    let (cache, _) = get_with(
        &client,
        &s.origin.url("/api/config"),
        &[("sec-fetch-dest", "empty")],
    )
    .await;
    assert_eq!(cache, "asset-proxy; hit; detail=memory");
}

/// The secrets a session carries, and how they might be written down.
const SECRETS: [&str; 4] = [
    "sid=s3cr3t-cookie-value",
    "Bearer t0ken-for-the-api",
    "fleet:pr0xy-passw0rd",
    "sess=another-cookie-987",
];

fn forms_of(secret: &str) -> Vec<String> {
    let value = secret.rsplit_once('=').map_or(secret, |(_, v)| v);
    let value = value.rsplit_once(' ').map_or(value, |(_, v)| v);
    let value = value.rsplit_once(':').map_or(value, |(_, v)| v);
    vec![
        value.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::STANDARD.encode(value),
    ]
}

fn assert_no_secret_in(what: &str, haystack: &[u8]) {
    for secret in SECRETS {
        for form in forms_of(secret) {
            assert!(
                !haystack.windows(form.len()).any(|w| w == form.as_bytes()),
                "{what} holds {form:?} (from {secret:?})"
            );
        }
    }
}

fn assert_no_secret_in_dir(dir: &Path) {
    let files = files_in(dir);
    assert!(files.len() > 3, "entries were written: {files:?}");
    for file in files {
        let bytes = std::fs::read(&file).expect("read cache file");
        assert_no_secret_in(&file.display().to_string(), &bytes);
    }
}

#[tokio::test]
async fn no_cookie_token_or_password_is_ever_written_down() {
    let s = setup().await;
    let redis = RedisServer::start(s.dir.path());
    let config_path = s.dir.path().join("proxy.json");
    std::fs::write(
        &config_path,
        r#"{"clients": {"proxy_auth": {"username": "fleet", "password": "pr0xy-passw0rd"}},
            "rules": [{"glob": "localhost:*/team/**", "share_credentials": true}]}"#,
    )
    .expect("config");
    let proxy = ProxyProcess::start(
        s.dir.path(),
        &[
            "--config",
            config_path.to_str().expect("utf-8"),
            "--upstream-ca",
            s.ca.path.to_str().expect("utf-8"),
            "--shared-cache",
            &redis.url(),
            "--log",
            "trace",
        ],
    );
    let ca_pem = std::fs::read_to_string(s.dir.path().join("certs/ca.pem")).expect("CA");
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .proxy(
            reqwest::Proxy::all(format!("http://{}", proxy.addr))
                .expect("proxy")
                .basic_auth("fleet", "pr0xy-passw0rd"),
        )
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"))
        .build()
        .expect("client");
    let routes = [
        ("/app.js?v=1", script(random_bytes(10_000, 4))),
        (
            "/page.html",
            Route::ok("<p>hi</p>")
                .header("content-type", "text/html")
                .header("cache-control", "public, max-age=600")
                .header("etag", "\"p\""),
        ),
        (
            "/styles.css",
            Route::ok("p{}")
                .header("content-type", "text/css")
                .header("cache-control", "max-age=600")
                .header("vary", "Cookie"),
        ),
        (
            "/team/report.js",
            script(random_bytes(5_000, 5)).header("vary", "Authorization"),
        ),
    ];
    for (path, route) in routes {
        s.origin.route(path, route);
        for secrets in [
            [("cookie", SECRETS[0]), ("authorization", SECRETS[1])],
            [("cookie", SECRETS[3]), ("x-other", "1")],
        ] {
            let mut headers: Vec<(&str, &str)> = secrets.to_vec();
            if !path.starts_with("/team") {
                headers.retain(|(name, _)| *name != "authorization");
            }
            let (cache, _) = get_with(&client, &s.origin.url(path), &headers).await;
            assert!(!cache.is_empty(), "{path}");
        }
    }
    // Everything is written: every tier, the journal, the shared tier.
    let stats = reqwest::Client::new()
        .get(format!("http://{}/stats", proxy.admin))
        .send()
        .await
        .expect("stats")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert!(stats["stored"].as_u64() >= Some(6), "{stats}");
    support::wait_until("the shared tier holds the entries", || {
        redis.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap_or(0) >= 6
    })
    .await;
    let entries = reqwest::Client::new()
        .get(format!("http://{}/entries", proxy.admin))
        .send()
        .await
        .expect("entries")
        .bytes()
        .await
        .expect("body");
    let activity = reqwest::Client::new()
        .get(format!("http://{}/activity", proxy.admin))
        .send()
        .await
        .expect("activity")
        .bytes()
        .await
        .expect("body");
    drop(client);
    let log = proxy.log().join("\n");
    let status = proxy.terminate();
    assert!(status.success());
    assert_no_secret_in_dir(&s.dir.path().join("cache"));
    assert_no_secret_in("/entries", &entries);
    assert_no_secret_in("/activity", &activity);
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging on"
    );
    assert_no_secret_in("the log", log.as_bytes());
    let keys = redis.cli(&["--scan"]);
    assert!(keys.lines().count() >= 6, "{keys}");
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let value = redis.cli(&["--no-raw", "GET", key]);
        assert_no_secret_in(&format!("redis {key}"), value.as_bytes());
    }
}
