//! Namespaces: key spaces of one cache, named by the proxy URL's user name (CONNECT tunnels
//! and absolute-form requests) or the `X-Asset-Proxy-Namespace` header. Two namespaces fetch
//! the same URL once each, are listed, counted and purged separately; the default namespace
//! is the cache without namespaces; the origin never sees the namespace; a bad name is a 400;
//! `require_namespace` asks with a 407; a fleet on Redis shares a namespace's entries.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use support::redis_server::RedisServer;
use support::{
    admin_json, cache_status, get, random_bytes, run_proxy, Origin, Route, TestCa, TestProxy,
};

/// A client through the proxy at `addr` whose proxy URL carries `user` (no password).
fn client_as(addr: SocketAddr, user: &str, ca_pem: &str) -> reqwest::Client {
    support::crypto();
    reqwest::Client::builder()
        .use_rustls_tls()
        .proxy(reqwest::Proxy::all(format!("http://{user}@{addr}")).expect("proxy URL"))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn purge(admin: SocketAddr, body: Value) -> (u16, Value) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("http://{admin}/purge"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("purge");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaces_fetch_once_each_and_are_purged_separately() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let body = random_bytes(40_000, 3);
    origin.route("/main.dart.js?v=1", Route::ok(body.clone()));
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let url = origin.url("/main.dart.js?v=1");
    let (team_a, team_b) = (
        client_as(proxy.addr, "team-a", &proxy.ca_pem()),
        client_as(proxy.addr, "team-b", &proxy.ca_pem()),
    );

    for client in [&team_a, &team_b, &team_a, &team_b] {
        let (status, _, got) = get(client, &url).await;
        assert_eq!((status, got.len()), (200, body.len()));
    }
    assert_eq!(origin.hits("/main.dart.js?v=1"), 2, "once per namespace");
    let (_, cache, _) = get(&team_a, &url).await;
    assert!(cache.contains("hit"), "{cache}");
    // The default namespace is a third key space: the cache without namespaces.
    let (_, cache, _) = get(&proxy.client(), &url).await;
    assert!(cache.contains("fwd=miss"), "{cache}");
    assert_eq!(origin.hits("/main.dart.js?v=1"), 3);
    let seen = origin
        .last_request_headers("/main.dart.js?v=1")
        .expect("origin saw the request");
    assert!(
        !seen.contains_key("x-asset-proxy-namespace") && !seen.contains_key("proxy-authorization"),
        "the namespace is the proxy's alone: {seen:?}"
    );
    proxy.settled().await;

    let listed = admin_json(proxy.admin, "/entries?namespace=team-b").await;
    let entries = listed["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["namespace"], "team-b");
    assert!(entries[0]["key"]
        .as_str()
        .is_some_and(|k| k.ends_with("[namespace team-b]")));
    let every = admin_json(proxy.admin, "/entries").await;
    assert_eq!(
        every["entries"].as_array().map(Vec::len),
        Some(3),
        "{every}"
    );
    let stats = admin_json(proxy.admin, "/stats?namespace=team-a").await;
    assert_eq!(stats["requests"]["requests"], 3, "{stats}");
    assert_eq!(stats["requests"]["hits"], 2, "{stats}");
    assert_eq!(stats["requests"]["misses"], 1, "{stats}");
    assert_eq!(stats["entries"], 1, "{stats}");
    assert_eq!(stats["body_bytes"], body.len(), "{stats}");
    let all = admin_json(proxy.admin, "/stats").await;
    assert_eq!(all["namespaces"]["default"]["requests"], 1, "{all}");

    let (status, report) = purge(
        proxy.admin,
        json!({ "prefix": origin.url("/"), "namespace": "team-a" }),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["disk"], 1, "{report}");
    let (_, cache, _) = get(&team_b, &url).await;
    assert!(cache.contains("hit"), "team-b keeps its entry: {cache}");
    let (_, cache, _) = get(&team_a, &url).await;
    assert!(cache.contains("fwd=miss"), "team-a's was purged: {cache}");
    assert_eq!(origin.hits("/main.dart.js?v=1"), 4);

    let (status, report) = purge(
        proxy.admin,
        json!({ "all": true, "namespace": "not/a name" }),
    )
    .await;
    assert_eq!(status, 400, "{report}");
    proxy.stop().await;
}

/// The URLs and body texts of a HAR archive.
fn har_answers(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).expect("archive");
    let har: Value = serde_json::from_str(&text).expect("HAR is JSON");
    har["log"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| {
            let url = entry["request"]["url"].as_str().unwrap_or("").to_owned();
            let body = entry["response"]["content"]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            (url, body)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_are_exported_from_and_imported_into_one_namespace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let url = origin.url("/app.js?v=1");
    // The same URL answered differently for each namespace: a build per CI run.
    for (namespace, build) in [("team-a", "build a"), ("team-b", "build b")] {
        origin.route("/app.js?v=1", Route::ok(build));
        let client = client_as(proxy.addr, namespace, &proxy.ca_pem());
        let (status, _, body) = get(&client, &url).await;
        assert_eq!((status, &body[..]), (200, build.as_bytes()));
    }
    proxy.settled().await;
    let export = |file: &str, namespace: Option<&str>| {
        let mut args = vec!["--cache-dir", "cache", "cache", "export", "--har", file];
        args.extend(namespace.iter().flat_map(|name| ["--namespace", *name]));
        let (code, out, err) = run_proxy(dir.path(), &args);
        assert_eq!(code, 0, "{out}{err}");
        har_answers(&dir.path().join(file))
    };
    assert_eq!(
        export("b.har", Some("team-b")),
        [(url.clone(), "build b".to_owned())]
    );
    assert_eq!(
        export("a.har", Some("team-a")),
        [(url.clone(), "build a".to_owned())]
    );
    assert_eq!(export("none.har", Some("default")), []);
    // Every namespace: one answer per URL, the default namespace's when it holds one.
    origin.route("/app.js?v=1", Route::ok("build of the default"));
    let (_, _, body) = get(&proxy.client(), &url).await;
    assert_eq!(&body[..], b"build of the default");
    proxy.settled().await;
    assert_eq!(
        export("all.har", None),
        [(url.clone(), "build of the default".to_owned())]
    );

    // Imported into the namespace named, whatever namespace the archive's requests name.
    let fresh = dir.path().join("fresh");
    let fresh = fresh.to_str().expect("utf-8");
    let import = |namespace: Option<&str>| {
        let mut args = vec!["--cache-dir", fresh, "cache", "import", "b.har"];
        args.extend(namespace.iter().flat_map(|name| ["--namespace", *name]));
        let (code, out, err) = run_proxy(dir.path(), &args);
        assert_eq!((code, out.contains("1 stored")), (0, true), "{out}{err}");
    };
    let listed = |namespace: &str| {
        let args = [
            "--cache-dir",
            fresh,
            "cache",
            "ls",
            "--namespace",
            namespace,
        ];
        let (code, out, err) = run_proxy(dir.path(), &args);
        assert_eq!(code, 0, "{err}");
        out.matches("/app.js?v=1").count()
    };
    import(Some("team-c"));
    assert_eq!((listed("team-c"), listed("team-b")), (1, 0));
    // An archive recorded by a client that named its namespace in a header.
    let archive = dir.path().join("b.har");
    let mut har: Value =
        serde_json::from_slice(&std::fs::read(&archive).expect("read")).expect("HAR");
    har["log"]["entries"][0]["request"]["headers"]
        .as_array_mut()
        .expect("request headers")
        .push(json!({"name": "X-Asset-Proxy-Namespace", "value": "team-b"}));
    std::fs::write(&archive, har.to_string()).expect("write");
    import(None);
    assert_eq!((listed("default"), listed("team-b")), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_names_a_namespace_and_bad_names_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    origin.route(
        "/app.css",
        Route::ok("body { color: red }").header("cache-control", "max-age=600"),
    );
    let proxy = TestProxy::start(dir.path(), "{}", None).await;
    let client = support::plain_client(proxy.addr);
    let url = origin.url("/app.css");
    let fetch = |namespace: Option<&'static str>| {
        let mut request = client.get(&url);
        if let Some(name) = namespace {
            request = request.header("x-asset-proxy-namespace", name);
        }
        async move {
            let response = request.send().await.expect("request");
            (response.status().as_u16(), cache_status(&response))
        }
    };
    assert_eq!(fetch(Some("ci-1")).await.0, 200);
    assert!(fetch(Some("ci-1")).await.1.contains("hit"));
    assert!(fetch(Some("ci-2")).await.1.contains("fwd=miss"));
    // `default` names the default namespace.
    assert!(fetch(None).await.1.contains("fwd=miss"));
    assert!(fetch(Some("default")).await.1.contains("hit"));
    assert_eq!(origin.hits("/app.css"), 3);

    let response = client
        .get(&url)
        .header("x-asset-proxy-namespace", "../etc")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let text = response.text().await.expect("body");
    assert!(text.contains("namespace"), "{text}");
    assert_eq!(origin.hits("/app.css"), 3, "a refused request goes nowhere");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_requires_a_namespace_asks_for_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/logo.svg?v=7", Route::ok("<svg/>"));
    let proxy = TestProxy::start_with(dir.path(), "{}", Some(&ca.path), |config| {
        config.clients.require_namespace = true;
    })
    .await;
    let url = origin.url("/logo.svg?v=7");
    let error = proxy
        .client()
        .get(&url)
        .send()
        .await
        .expect_err("a CONNECT without a namespace is refused");
    assert!(
        format!("{error:?}").contains("ProxyAuthRequired"),
        "{error:?}"
    );
    let plain = support::plain_client(proxy.addr)
        .get(origin.url("/logo.svg?v=7").replace("https:", "http:"))
        .send()
        .await
        .expect("absolute-form request");
    assert_eq!(plain.status(), 407);
    let challenge = plain
        .headers()
        .get("proxy-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(challenge.contains("namespace"), "{challenge}");
    let (status, _, got) = get(&client_as(proxy.addr, "run-1", &proxy.ca_pem()), &url).await;
    assert_eq!((status, &got[..]), (200, &b"<svg/>"[..]));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_a_namespace_through_redis() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let redis = RedisServer::start(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/canvaskit.wasm?v=2", Route::ok(random_bytes(300_000, 5)));
    let mut fleet = Vec::new();
    for n in 0..2 {
        let proxy = TestProxy::start_with(
            &dir.path().join(format!("proxy-{n}")),
            r#"{ "memory": { "prewarm": false } }"#,
            Some(&ca.path),
            |config| {
                config
                    .cache
                    .shared
                    .set_nodes(&redis.url())
                    .expect("redis URL")
            },
        )
        .await;
        let app = proxy.app.clone();
        support::wait_until("the proxy connected to Redis", move || {
            app.cache().shared().is_some_and(|s| s.is_up())
        })
        .await;
        fleet.push(proxy);
    }
    let url = origin.url("/canvaskit.wasm?v=2");
    let as_team = |proxy: &TestProxy, team: &str| client_as(proxy.addr, team, &proxy.ca_pem());

    let (status, _, _) = get(&as_team(&fleet[0], "team-a"), &url).await;
    assert_eq!(status, 200);
    fleet[0].settled().await;
    let (_, cache, _) = get(&as_team(&fleet[1], "team-a"), &url).await;
    assert!(
        cache.contains("hit"),
        "the fleet shares team-a's entry: {cache}"
    );
    let (_, cache, _) = get(&as_team(&fleet[1], "team-b"), &url).await;
    assert!(cache.contains("fwd=miss"), "team-b is its own: {cache}");
    assert_eq!(origin.hits("/canvaskit.wasm?v=2"), 2);
    for proxy in fleet {
        proxy.stop().await;
    }
}
