//! Egress control against real servers on loopback: a SOCKS5 upstream (Debian's microsocks,
//! with a user name and password) carries misses, bypasses and WebSockets but never hits;
//! `socks5h` leaves name resolution to it; wrong credentials, garbage and silence are clear
//! 502s naming it; named upstreams chosen per rule, each counting what it carried exactly as
//! the upstream saw it, and what hits kept off it; block rules and a blocklist answer at once.

mod support;

use std::path::Path;

use serde_json::Value;
use support::socks_server::{BadSocks, BadSocksServer, CountingRelay, SocksServer};
use support::websocket::{round_trip, wss_via_proxy, WsOrigin};
use support::{
    admin_json, cache_status, get, random_bytes, ChainMode, ConnectProxy, Origin, Route, TestCa,
    TestProxy,
};

async fn proxy_with(dir: &Path, config: &str, ca: &TestCa) -> TestProxy {
    TestProxy::start(dir, config, Some(&ca.path)).await
}

/// The origin's port.
fn port_of(origin: &Origin) -> u16 {
    url::Url::parse(&origin.url("/"))
        .ok()
        .and_then(|u| u.port())
        .expect("origin port")
}

fn upstream_config(url: &str) -> String {
    serde_json::json!({ "upstream": { "proxy": url, "connect_timeout_secs": 2 } }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socks5_upstream_carries_misses_bypasses_and_websockets_but_never_hits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let body = random_bytes(200_000, 7);
    origin.route("/main.dart.js?v=1", Route::ok(body.clone()));
    origin.route(
        "/api/live",
        Route::ok("live").header("cache-control", "no-store"),
    );
    let socks = SocksServer::start("fleet", "pa55").await;
    let config = upstream_config(&socks.url("socks5h", "fleet", "pa55"));
    let proxy = proxy_with(dir.path(), &config, &ca).await;
    let client = proxy.client();

    let url = origin.url("/main.dart.js?v=1");
    assert_eq!(get(&client, &url).await.2, body);
    assert!(socks.relay.connections() >= 1, "the miss went through it");
    let mut by_name = vec![5u8, 1, 0, 3, 9];
    by_name.extend_from_slice(b"localhost");
    by_name.extend_from_slice(&port_of(&origin).to_be_bytes());
    assert!(
        socks.relay.opening_contains(&by_name),
        "socks5h sends the name for the proxy to resolve"
    );
    proxy.settled().await;
    let before = (socks.relay.connections(), socks.relay.bytes());
    let (_, cache, got) = get(&client, &url).await;
    assert!(cache.contains("hit"), "{cache}");
    assert_eq!(got, body);
    assert_eq!(
        (socks.relay.connections(), socks.relay.bytes()),
        before,
        "a hit never touches the upstream"
    );
    let (status, _, live) = get(&client, &origin.url("/api/live")).await;
    assert_eq!((status, &live[..]), (200, &b"live"[..]));
    assert!(
        socks.relay.bytes().1 > before.1 .1,
        "the bypass went through it"
    );

    let ws = WsOrigin::tls(&ca).await;
    let connections = socks.relay.connections();
    let (mut socket, _) = wss_via_proxy(proxy.addr, &proxy.ca_pem(), &ws, "/chat")
        .await
        .expect("WebSocket through the SOCKS upstream");
    assert_eq!(round_trip(&mut socket, "hello").await, "hello");
    drop(socket);
    assert!(
        socks.relay.connections() > connections,
        "the socket went through it"
    );

    let stats = admin_json(proxy.admin, "/stats").await;
    let upstream = &stats["upstreams"][0];
    assert_eq!(upstream["name"], "default", "{stats}");
    assert_eq!(
        upstream["url"],
        format!("socks5h://{}", socks.relay.addr),
        "{stats}"
    );
    assert!(
        !stats.to_string().contains("pa55"),
        "no password in the stats"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_resolves_names_here_and_sends_the_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/app.css?v=2", Route::ok("body{}"));
    let socks = SocksServer::start("fleet", "pa55").await;
    let proxy = proxy_with(
        dir.path(),
        &upstream_config(&socks.url("socks5", "fleet", "pa55")),
        &ca,
    )
    .await;
    let (status, _, _) = get(&proxy.client(), &origin.url("/app.css?v=2")).await;
    assert_eq!(status, 200);
    let mut request = vec![5u8, 1, 0, 1, 127, 0, 0, 1];
    request.extend_from_slice(&port_of(&origin).to_be_bytes());
    let mut by_name = vec![5u8, 1, 0, 3, 9];
    by_name.extend_from_slice(b"localhost");
    assert!(!socks.relay.opening_contains(&by_name), "no name sent");
    assert!(
        socks.relay.opening_contains(&request),
        "a CONNECT to the address resolved here"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_failures_are_502s_that_name_the_upstream_and_never_its_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/main.dart.js?v=9", Route::ok("x"));
    let url = origin.url("/main.dart.js?v=9");
    let socks = SocksServer::start("fleet", "pa55").await;
    let garbage = BadSocksServer::start(BadSocks::Garbage).await;
    let silent = BadSocksServer::start(BadSocks::Silent).await;
    let unreachable = BadSocksServer::start(BadSocks::HostUnreachable).await;
    let cases = [
        (socks.url("socks5h", "fleet", "wrong-secret"), "RFC 1929"),
        (
            format!("socks5h://u:wrong-secret@{}", garbage.addr),
            "does not answer as a SOCKS5 server",
        ),
        (
            format!("socks5h://u:wrong-secret@{}", silent.addr),
            "within",
        ),
        (
            format!("socks5h://{}", unreachable.addr),
            "SOCKS reply 4 (Host unreachable)",
        ),
    ];
    for (n, (upstream, want)) in cases.into_iter().enumerate() {
        let proxy = proxy_with(
            &dir.path().join(n.to_string()),
            &upstream_config(&upstream),
            &ca,
        )
        .await;
        let started = std::time::Instant::now();
        let response = proxy.client().get(&url).send().await.expect("answer");
        assert_eq!(response.status(), 502, "{upstream}");
        let text = response.text().await.expect("body");
        let shown = upstream.split('@').next_back().unwrap_or("");
        assert!(text.contains(shown), "{text} names {shown}");
        assert!(text.contains(want), "{text} says {want}");
        assert!(!text.contains("wrong-secret"), "{text}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "bounded by the connect timeout"
        );
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_choose_named_upstreams_and_each_counts_what_it_carried() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let (api, asset, paid_asset, logo) = (
        random_bytes(30_000, 1),
        random_bytes(100_000, 2),
        random_bytes(150_000, 3),
        random_bytes(5_000, 4),
    );
    origin.route(
        "/api/prices",
        Route::ok(api.clone()).header("cache-control", "no-store"),
    );
    origin.route("/app.js?v=3", Route::ok(asset.clone()));
    origin.route("/res/data.js?v=1", Route::ok(paid_asset.clone()));
    origin.route("/static/logo.png?v=1", Route::ok(logo.clone()));
    let socks = SocksServer::start("res", "pool-secret").await;
    let connect = ConnectProxy::start(ChainMode::Open).await;
    let dc = CountingRelay::start(connect.addr).await;
    let config = serde_json::json!({
        "upstreams": {
            "residential": socks.url("socks5h", "res", "pool-secret"),
            "dc": format!("http://{}", dc.addr),
        },
        "upstream": { "proxy": "dc" },
        "rules": [
            { "glob": "**/api/**", "upstream": "residential" },
            { "glob": "**/res/**", "upstream": "residential" },
            { "glob": "**/static/**", "direct": true },
        ],
    });
    let proxy = proxy_with(dir.path(), &config.to_string(), &ca).await;
    let client = proxy.client();

    assert_eq!(get(&client, &origin.url("/api/prices")).await.2, api);
    assert_eq!(
        socks.relay.connections(),
        1,
        "the API went through the residential pool"
    );
    assert_eq!(dc.connections(), 0);
    assert_eq!(get(&client, &origin.url("/app.js?v=3")).await.2, asset);
    assert_eq!(
        dc.connections(),
        1,
        "the asset went through the default, dc"
    );
    assert_eq!(
        get(&client, &origin.url("/static/logo.png?v=1")).await.2,
        logo
    );
    assert_eq!(
        (socks.relay.connections(), dc.connections()),
        (1, 1),
        "direct"
    );
    assert_eq!(
        get(&client, &origin.url("/res/data.js?v=1")).await.2,
        paid_asset
    );
    proxy.settled().await;
    let (_, cache, _) = get(&client, &origin.url("/res/data.js?v=1")).await;
    assert!(cache.contains("hit"), "{cache}");

    let figures = |stats: &Value, name: &str| -> Value {
        stats["upstreams"]
            .as_array()
            .and_then(|all| all.iter().find(|u| u["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    // What each upstream saw, both ways, is what the proxy counted against it.
    let admin = proxy.admin;
    for (name, relay) in [("residential", &socks.relay), ("dc", &dc)] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let counted = figures(&admin_json(admin, "/stats").await, name);
            let (up, down) = relay.bytes();
            if counted["bytes_sent"] == up && counted["bytes_received"] == down {
                assert!(down > 0, "{counted}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: counted {counted}, the upstream saw {up} up and {down} down"
            );
            // Bytes still in flight between the relay and the proxy (HTTP/2 window updates).
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let stats = admin_json(admin, "/stats").await;
    let residential = figures(&stats, "residential");
    assert_eq!(residential["requests"], 2, "{residential}");
    assert_eq!(
        residential["bytes_kept_off"],
        paid_asset.len(),
        "the hit kept its body off the residential pool: {residential}"
    );
    assert_eq!(figures(&stats, "dc")["bytes_kept_off"], 0);
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "asset_proxy_upstream_kept_off_bytes_total{{upstream=\"residential\"}} {}",
            paid_asset.len()
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("pool-secret") && !stats.to_string().contains("pool-secret"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_urls_are_answered_at_once_and_never_reach_the_origin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/index.html", Route::ok("<html>page</html>"));
    origin.route("/ads/banner.js", Route::ok("ad"));
    origin.route("/collect", Route::ok("tracked"));
    let list = dir.path().join("blocklist.txt");
    std::fs::write(
        &list,
        "# trackers\n0.0.0.0 tracker.test\n*.ads.test   # every ad host\n\n",
    )
    .expect("blocklist");
    let config = serde_json::json!({
        "blocklist_file": list,
        "rules": [
            // A rule that only shares does not unblock what a later block rule names.
            { "glob": "localhost:*/**", "share_credentials": false },
            { "glob": "**/ads/**", "action": "block" },
            { "glob": "**/collect", "action": "block", "block_status": 204 },
        ],
    });
    let proxy = proxy_with(dir.path(), &config.to_string(), &ca).await;
    let client = proxy.client();

    let (status, _, body) = get(&client, &origin.url("/index.html")).await;
    assert_eq!((status, &body[..]), (200, &b"<html>page</html>"[..]));
    let response = client
        .get(origin.url("/ads/banner.js"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 403);
    assert!(cache_status(&response).contains("blocked"));
    let response = client
        .get(origin.url("/collect"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 204);
    assert_eq!(response.bytes().await.expect("body").len(), 0);
    assert_eq!(origin.hits("/ads/banner.js") + origin.hits("/collect"), 0);

    // Listed hosts are refused before any lookup: the names do not even exist.
    let plain = support::plain_client(proxy.addr);
    for url in ["http://tracker.test/pixel.gif", "http://cdn.ads.test/x.js"] {
        let response = plain.get(url).send().await.expect("answer");
        assert_eq!(response.status(), 403, "{url}");
    }
    let (tunnel, head) = support::websocket::connect_tunnel(proxy.addr, "cdn.ads.test:443").await;
    drop(tunnel);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["blocked"], 5, "{stats}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_password_never_reaches_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    origin.route("/a.css?v=1", Route::ok("a{}"));
    let socks = SocksServer::start("fleet", "pool-pw-1").await;
    let good = socks.url("socks5h", "fleet", "pool-pw-1");
    let bad = socks.url("socks5h", "fleet", "pool-pw-2");
    for upstream in [good, bad] {
        let proxy = support::ProxyProcess::start(
            dir.path(),
            &["--log", "trace", "--upstream-proxy", &upstream],
        );
        let _ = support::plain_client(proxy.addr)
            .get(origin.url("/a.css?v=1"))
            .send()
            .await
            .expect("answer");
        proxy.wait_for_line(|line| line.contains("a.css"));
        let log = proxy.log();
        assert!(proxy.terminate().success());
        for line in &log {
            assert!(!line.contains("pool-pw"), "{line}");
        }
    }
    assert_eq!(origin.hits("/a.css?v=1"), 1);
}
