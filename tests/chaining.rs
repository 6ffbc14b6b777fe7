//! Upstream proxy chaining against a real CONNECT proxy on loopback: misses, bypasses and
//! tunnels go through it, hits never do, `no_proxy` hosts and `direct` rules skip it, and its
//! failures are 502s that name it (and never its password).

mod support;

use std::path::Path;

use support::{
    admin_json, client_via, get, plain_client, random_bytes, ChainMode, ConnectProxy, Origin,
    ProxyProcess, Route, TestCa, TestProxy,
};

async fn proxy_through(dir: &Path, chain: &str, config: &str, ca: &TestCa) -> TestProxy {
    let chain = chain.to_owned();
    TestProxy::start_with(dir, config, Some(&ca.path), move |config| {
        config
            .upstream
            .set_default_proxy(&chain)
            .expect("chain URL");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_and_bypasses_go_through_the_upstream_proxy_and_hits_never_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let api = Origin::https(&ca).await;
    let chain = ConnectProxy::start(ChainMode::Open).await;
    let proxy = proxy_through(dir.path(), &format!("http://{}", chain.addr), "{}", &ca).await;
    let client = proxy.client();
    let body = random_bytes(300_000, 1);
    origin.route("/main.dart.js?v=1", Route::ok(body.clone()));
    api.route("/api/user", Route::ok("dynamic"));

    let url = origin.url("/main.dart.js?v=1");
    assert_eq!(get(&client, &url).await.2, body);
    let origin_authority = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or("");
    assert_eq!(
        *chain.tunnels.lock().expect("tunnels"),
        vec![origin_authority.to_owned()]
    );
    for _ in 0..3 {
        let (status, cache, hit) = get(&client, &url).await;
        assert_eq!((status, hit), (200, body.clone()));
        assert!(cache.contains("hit"), "{cache}");
    }
    assert_eq!(
        chain.tunnel_count(),
        1,
        "hits never reach the upstream proxy"
    );
    assert_eq!(origin.hits("/main.dart.js?v=1"), 1);

    let (status, cache, _) = get(&client, &api.url("/api/user")).await;
    assert_eq!(status, 200);
    assert!(cache.contains("not-cacheable"), "{cache}");
    assert_eq!(
        chain.tunnel_count(),
        2,
        "a bypassed request goes through it too"
    );

    let stats = admin_json(proxy.admin, "/stats").await;
    let upstream = &stats["upstream_proxy"];
    assert_eq!(upstream["url"], format!("http://{}", chain.addr));
    assert!(
        upstream["bytes_through"].as_u64() >= Some(300_000),
        "{stats}"
    );
    assert!(
        upstream["bytes_not_through"].as_u64() >= Some(900_000),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_origins_and_passthrough_tunnels_go_through_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let plain = Origin::http().await;
    let tls = Origin::https(&ca).await;
    let chain = ConnectProxy::start(ChainMode::Open).await;
    let config = r#"{"passthrough": ["localhost"]}"#;
    let proxy = proxy_through(dir.path(), &format!("http://{}", chain.addr), config, &ca).await;
    plain.route("/app.js?v=1", Route::ok(random_bytes(10_000, 2)));
    tls.route("/tunnelled.js?v=1", Route::ok(random_bytes(10_000, 3)));

    let (status, _, body) = get(&plain_client(proxy.addr), &plain.url("/app.js?v=1")).await;
    assert_eq!((status, body), (200, random_bytes(10_000, 2)));
    assert_eq!(chain.tunnel_count(), 1);

    // Passthrough: the client's TLS goes end to end with the origin, through both proxies.
    let client = client_via(
        proxy.addr,
        &std::fs::read_to_string(&ca.path).expect("test CA"),
    );
    let (status, cache, body) = get(&client, &tls.url("/tunnelled.js?v=1")).await;
    assert_eq!((status, body), (200, random_bytes(10_000, 3)));
    assert!(cache.is_empty(), "not intercepted: {cache}");
    assert_eq!(chain.tunnel_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_hosts_and_direct_rules_skip_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::http().await;
    let chain = ConnectProxy::start(ChainMode::Open).await;
    origin.route("/direct/a.js?v=1", Route::ok("direct"));
    origin.route("/chained/a.js?v=1", Route::ok("chained"));
    let config = r#"{"rules": [{"regex": "/direct/", "direct": true}]}"#;
    let proxy = proxy_through(dir.path(), &format!("http://{}", chain.addr), config, &ca).await;
    let client = plain_client(proxy.addr);
    assert_eq!(get(&client, &origin.url("/direct/a.js?v=1")).await.0, 200);
    assert_eq!(
        chain.tunnel_count(),
        0,
        "a direct rule skips the upstream proxy"
    );
    assert_eq!(get(&client, &origin.url("/chained/a.js?v=1")).await.0, 200);
    assert_eq!(chain.tunnel_count(), 1);
    proxy.stop().await;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = r#"{"upstream": {"no_proxy": ["127.0.0.1", "*.internal"]}}"#;
    let proxy = proxy_through(dir.path(), &format!("http://{}", chain.addr), config, &ca).await;
    origin.route("/other.js?v=1", Route::ok("no proxy"));
    let client = plain_client(proxy.addr);
    assert_eq!(get(&client, &origin.url("/other.js?v=1")).await.0, 200);
    assert_eq!(
        chain.tunnel_count(),
        1,
        "a no_proxy host is reached directly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_proxy_failures_are_502s_naming_it() {
    let ca_dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(ca_dir.path());
    let origin = Origin::http().await;
    origin.route("/a.js?v=1", Route::ok("asset"));
    let url = origin.url("/a.js?v=1");
    let guarded = ConnectProxy::start(ChainMode::NeedsAuth).await;
    let silent = ConnectProxy::start(ChainMode::Silent).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let cases = [
        (
            format!("http://{}", guarded.addr),
            "407",
            "give credentials",
        ),
        (
            format!("http://user:wrong@{}", guarded.addr),
            "407",
            "refused the credentials",
        ),
        (format!("http://{closed}"), "cannot connect", ""),
        (format!("http://{}", silent.addr), "no tunnel", "within 1s"),
    ];
    for (chain, want, also) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = r#"{"upstream": {"connect_timeout_secs": 1}}"#;
        let proxy = proxy_through(dir.path(), &chain, config, &ca).await;
        let response = plain_client(proxy.addr)
            .get(&url)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 502, "{chain}");
        let text = response.text().await.expect("body");
        let shown = chain.replace("user:wrong@", "");
        assert!(
            text.contains(&format!("upstream proxy {shown}")),
            "{chain}: {text}"
        );
        assert!(
            text.contains(want) && text.contains(also),
            "{chain}: {text}"
        );
        assert!(!text.contains("wrong"), "no password in answers: {text}");
        proxy.stop().await;
    }
    assert_eq!(origin.hits("/a.js?v=1"), 0);

    // With the right credentials the same proxy tunnels.
    let dir = tempfile::tempdir().expect("temp dir");
    let chain = format!("http://user:secret@{}", guarded.addr);
    let proxy = proxy_through(dir.path(), &chain, "{}", &ca).await;
    assert_eq!(get(&plain_client(proxy.addr), &url).await.0, 200);
    assert_eq!(guarded.tunnel_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_names_the_upstream_proxy_and_never_logs_its_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    origin.route("/cli.js?v=1", Route::ok("through"));
    let chain = ConnectProxy::start(ChainMode::NeedsAuth).await;
    let upstream = format!("http://user:secret@{}", chain.addr);
    let cache = dir.path().join("cache").display().to_string();
    let certs = dir.path().join("certs").display().to_string();
    let proxy = ProxyProcess::start(
        dir.path(),
        &[
            "--cache-dir",
            &cache,
            "--ca-dir",
            &certs,
            "--upstream-proxy",
            &upstream,
            "--log",
            "debug",
        ],
    );
    let line = proxy.wait_for_line(|l| l.contains("through an upstream proxy"));
    assert!(line.contains(&format!("http://{}", chain.addr)), "{line}");
    assert_eq!(
        get(&plain_client(proxy.addr), &origin.url("/cli.js?v=1"))
            .await
            .0,
        200
    );
    assert_eq!(chain.tunnel_count(), 1);
    proxy.signal("TERM");
    proxy.wait_for_line(|l| l == "<exited>");
    let log = proxy.log().join("\n");
    assert!(!log.contains("secret"), "{log}");
    assert!(!log.contains("dXNlcjpzZWNyZXQ"), "nor its base64: {log}");
}
