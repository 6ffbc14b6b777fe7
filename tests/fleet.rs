//! The fleet's shared tier against a real redis-server on loopback: three proxies with their
//! own cache directories fetch a cold asset from the origin once between them, honour each
//! other's version changes, keep serving while Redis is dead, and share again once it is
//! back; a dead lock holder delays the fleet only until its lock expires; a Redis Cluster
//! works as well as a single node.

mod support;

use std::path::Path;
use std::sync::Arc;

use futures_util::future::join_all;
use support::redis_server::{RedisCluster, RedisServer};
use support::{
    admin_json, admin_text, get, plain_client, random_bytes, wait_until, Origin, ProxyProcess,
    Route, TestCa, TestProxy,
};
use tokio::sync::Notify;

/// An in-process proxy on `dir` sharing the Redis at `redis`.
async fn fleet_proxy(dir: &Path, redis: &str, ca: &TestCa) -> TestProxy {
    fleet_proxy_with(dir, redis, ca, r#"{ "memory": { "prewarm": false } }"#).await
}

async fn fleet_proxy_with(dir: &Path, redis: &str, ca: &TestCa, config: &str) -> TestProxy {
    let proxy = TestProxy::start_with(dir, config, Some(&ca.path), |config| {
        config.cache.shared.set_nodes(redis).expect("redis URL");
        // On a test machine busy with other tests, Redis (a cluster most of all) may answer
        // later than the default limit for a request's command; the proxy would then count
        // it as down and fetch from the origin itself, which is right but not what these
        // tests look at. The tests about an unreachable Redis kill it instead.
        config.cache.shared.timeout = std::time::Duration::from_secs(10);
    })
    .await;
    let app = proxy.app.clone();
    wait_until("the proxy connected to Redis", move || {
        app.cache().shared().is_some_and(|s| s.is_up())
    })
    .await;
    proxy
}

async fn fleet_of(count: usize, dir: &Path, redis: &str, ca: &TestCa) -> Vec<TestProxy> {
    let mut proxies = Vec::new();
    for n in 0..count {
        proxies.push(fleet_proxy(&dir.join(format!("proxy-{n}")), redis, ca).await);
    }
    proxies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_asset_reaches_the_origin_once_for_the_whole_fleet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let redis = RedisServer::start(dir.path());
    let origin = Origin::https(&ca).await;
    let body = random_bytes(2 << 20, 9);
    origin.route("/main.dart.js?v=1", Route::ok(body.clone()));
    let fleet = fleet_of(3, dir.path(), &redis.url(), &ca).await;
    let url = origin.url("/main.dart.js?v=1");

    let answers = join_all(fleet.iter().map(|proxy| {
        let (client, url) = (proxy.client(), url.clone());
        async move { get(&client, &url).await }
    }))
    .await;
    assert_eq!(origin.hits("/main.dart.js?v=1"), 1, "one origin fetch");
    let mut statuses: Vec<&str> = answers.iter().map(|(_, s, _)| s.as_str()).collect();
    statuses.sort();
    for (status, _, got) in &answers {
        assert_eq!((*status, got.len()), (200, body.len()));
        assert!(got == &body, "byte-identical bodies");
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| s.contains("detail=shared"))
            .count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| s.contains("fwd=miss")).count(),
        1,
        "{statuses:?}"
    );

    // Each proxy now holds it locally.
    for proxy in &fleet {
        proxy.settled().await;
        let (_, cache, got) = get(&proxy.client(), &url).await;
        assert!(cache.contains("detail=memory"), "{cache}");
        assert!(got == body);
    }
    let stats = admin_json(fleet[0].admin, "/stats").await;
    let shared_hits: u64 = join_all(fleet.iter().map(|p| admin_json(p.admin, "/stats")))
        .await
        .iter()
        .map(|s| s["shared"]["hits"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(shared_hits, 2);
    assert_eq!(stats["shared"]["up"], true);
    assert_eq!(stats["shared"]["redis"], redis.url());
    let metrics = admin_text(fleet[1].admin, "/metrics").await;
    assert!(metrics.contains("\nasset_proxy_shared_up 1\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_retire_by_the_whole_fleets_uses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let redis = RedisServer::start(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/app/main.dart.js?v=1", Route::ok(random_bytes(300_000, 1)));
    origin.route("/app/main.dart.js?v=2", Route::ok(random_bytes(300_000, 2)));
    let config = r#"{"memory": {"prewarm": false}, "versioned": {"retire_after_secs": 1}}"#;
    let mut fleet = Vec::new();
    for n in 0..3 {
        let dir = dir.path().join(format!("proxy-{n}"));
        fleet.push(fleet_proxy_with(&dir, &redis.url(), &ca, config).await);
    }
    let (v1, v2) = (
        origin.url("/app/main.dart.js?v=1"),
        origin.url("/app/main.dart.js?v=2"),
    );
    for proxy in &fleet {
        assert_eq!(get(&proxy.client(), &v1).await.0, 200);
        proxy.settled().await;
    }
    assert_eq!(origin.hits("/app/main.dart.js?v=1"), 1);

    // Only the first proxy sees the new build in use; the others hear of it in its reports.
    let retired_everywhere = || {
        fleet
            .iter()
            .all(|proxy| proxy.app.stats().version_evictions.get() == 1)
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !retired_everywhere() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "v1 retired on every proxy"
        );
        let (status, _, _) = get(&fleet[0].client(), &v2).await;
        assert_eq!(status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for proxy in &fleet {
        assert_eq!(
            proxy.app.stats().version_changes.get(),
            1,
            "v1 -> v2 on every proxy"
        );
    }
    // v1 is gone from every tier, the shared one included: asked again, it is fetched.
    let (status, cache, _) = get(&fleet[1].client(), &v1).await;
    assert_eq!(status, 200);
    assert!(cache.contains("fwd=miss"), "{cache}");
    assert_eq!(origin.hits("/app/main.dart.js?v=1"), 2);
    // v2 comes from the shared tier.
    let (_, cache, _) = get(&fleet[2].client(), &v2).await;
    assert!(cache.contains("detail=shared"), "{cache}");
    assert_eq!(origin.hits("/app/main.dart.js?v=2"), 1);
    let stats = admin_json(fleet[2].admin, "/stats").await;
    assert!(
        stats["shared"]["versions_received"].as_u64() >= Some(1),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_shared_entry_is_refetched_and_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let redis = RedisServer::start(dir.path());
    let origin = Origin::https(&ca).await;
    let body = random_bytes(100_000, 3);
    origin.route("/a.js?v=1", Route::ok(body.clone()));
    let fleet = fleet_of(2, dir.path(), &redis.url(), &ca).await;
    let url = origin.url("/a.js?v=1");
    get(&fleet[0].client(), &url).await;
    let app = fleet[0].app.clone();
    wait_until("the entry is in Redis", move || {
        app.stats().shared_writes.get() == 1
    })
    .await;
    let keys = redis.cli(&["--raw", "keys", "asset-proxy:entry:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    redis.cli(&["setrange", keys.trim(), "200", "garbage"]);

    let (status, cache, got) = get(&fleet[1].client(), &url).await;
    assert_eq!(status, 200);
    assert!(cache.contains("fwd=miss"), "{cache}");
    assert!(got == body);
    assert_eq!(origin.hits("/a.js?v=1"), 2);
    assert_eq!(fleet[1].app.stats().shared_corrupt.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_delays_requests_only_by_the_shared_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let redis = RedisServer::start(dir.path());
    let origin = Origin::https(&ca).await;
    let fleet = fleet_of(2, dir.path(), &redis.url(), &ca).await;
    for n in 0..4 {
        origin.route(&format!("/f{n}.js?v=1"), Route::ok(random_bytes(10_000, n)));
    }

    // Frozen, its connections stay open and it answers nothing.
    redis.signal("STOP");
    for n in 0..3 {
        for proxy in &fleet {
            let (status, cache, _) =
                get(&proxy.client(), &origin.url(&format!("/f{n}.js?v=1"))).await;
            assert_eq!(status, 200);
            assert!(!cache.contains("detail=shared"), "{cache}");
        }
    }
    for proxy in &fleet {
        let stats = admin_json(proxy.admin, "/stats").await;
        assert_eq!(stats["shared"]["up"], false, "{stats}");
        assert!(stats["shared"]["errors"].as_u64() >= Some(1), "{stats}");
    }

    redis.signal("CONT");
    for proxy in &fleet {
        let app = proxy.app.clone();
        wait_until("the proxy reconnected", move || {
            app.cache().shared().is_some_and(|s| s.is_up())
        })
        .await;
    }
    let url = origin.url("/f3.js?v=1");
    assert!(get(&fleet[0].client(), &url).await.1.contains("fwd=miss"));
    assert!(get(&fleet[1].client(), &url)
        .await
        .1
        .contains("detail=shared"));
    assert_eq!(origin.hits("/f3.js?v=1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_is_shared_like_a_single_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let cluster = RedisCluster::start(dir.path());
    let origin = Origin::https(&ca).await;
    let fleet = fleet_of(2, dir.path(), &cluster.url(), &ca).await;
    // Keys until every node's slots hold some (their slots follow from random ports: a fixed
    // count would leave a node empty now and then).
    let per_node = || -> Vec<u64> {
        cluster
            .nodes
            .iter()
            .map(|node| node.cli(&["dbsize"]).parse().unwrap_or(0))
            .collect()
    };
    for n in 0..60 {
        if n >= 6 && per_node().iter().all(|&n| n > 0) {
            break;
        }
        let path = format!("/assets/chunk{n}.js?v=7");
        origin.route(&path, Route::ok(random_bytes(20_000, n)));
        let url = origin.url(&path);
        let (_, first, _) = get(&fleet[0].client(), &url).await;
        assert!(first.contains("fwd=miss"), "{first}");
        let (_, second, _) = get(&fleet[1].client(), &url).await;
        assert!(second.contains("detail=shared"), "{second}");
        assert_eq!(origin.hits(&path), 1);
    }
    let per_node = per_node();
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");
}

/// Three real proxy processes; Redis killed under them and started again.
#[test]
fn the_fleet_keeps_serving_without_redis_and_shares_again_when_it_is_back() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut redis = RedisServer::start(dir.path());
    let origin = runtime.block_on(Origin::http());
    let fleet: Vec<ProxyProcess> = (0..3)
        .map(|n| {
            let home = dir.path().join(format!("proxy-{n}"));
            std::fs::create_dir_all(&home).expect("proxy dir");
            ProxyProcess::start(&home, &["--shared-cache", &redis.url()])
        })
        .collect();
    for proxy in &fleet {
        proxy.wait_for_line(|l| l.contains("shared cache connected"));
    }
    // One after the other: a proxy that finds another's fill lock waits for its entry.
    let fetch_through_each = |path: &str| -> Vec<String> {
        runtime.block_on(async {
            let mut statuses = Vec::new();
            for proxy in &fleet {
                let (status, cache, _) = get(&plain_client(proxy.addr), &origin.url(path)).await;
                assert_eq!(status, 200, "{path} through {}", proxy.addr);
                statuses.push(cache);
            }
            statuses
        })
    };
    for n in 0..3 {
        origin.route(&format!("/s{n}.js?v=1"), Route::ok(random_bytes(50_000, n)));
    }

    let before = fetch_through_each("/s0.js?v=1");
    assert_eq!(origin.hits("/s0.js?v=1"), 1, "{before:?}");
    assert!(before[1].contains("detail=shared") && before[2].contains("detail=shared"));

    redis.kill();
    for _ in 0..3 {
        let during = fetch_through_each("/s1.js?v=1");
        assert!(
            during.iter().all(|s| !s.contains("detail=shared")),
            "{during:?}"
        );
        fetch_through_each("/s0.js?v=1");
    }
    assert!(origin.hits("/s1.js?v=1") <= 3);
    for proxy in &fleet {
        let unreachable = proxy
            .log()
            .iter()
            .filter(|l| l.contains("shared cache unreachable"))
            .count();
        assert_eq!(
            unreachable,
            1,
            "logged once a minute at most: {:?}",
            proxy.log()
        );
    }

    redis.restart();
    for proxy in &fleet {
        proxy.wait_for_line(|l| l.contains("shared cache reachable again"));
    }
    let after = fetch_through_each("/s2.js?v=1");
    assert_eq!(origin.hits("/s2.js?v=1"), 1, "{after:?}");
    assert!(after[1].contains("detail=shared") && after[2].contains("detail=shared"));
}

/// A real proxy process killed while it holds the fleet's fill lock.
#[test]
fn a_dead_lock_holder_delays_the_fleet_only_until_its_lock_expires() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path());
    let origin = runtime.block_on(Origin::http());
    let body = random_bytes(200_000, 5);
    let mut gated = Route::ok(body.clone());
    gated.gate = Some(Arc::new(Notify::new()));
    origin.route("/big.js?v=1", gated);
    let config = r#"{ "shared": { "lock_ttl_secs": 1 } }"#;
    let mut fleet: Vec<ProxyProcess> = (0..2)
        .map(|n| {
            let home = dir.path().join(format!("proxy-{n}"));
            std::fs::create_dir_all(&home).expect("proxy dir");
            std::fs::write(home.join("fleet.json"), config).expect("config");
            let args = ["--config", "fleet.json", "--shared-cache", &redis.url()];
            ProxyProcess::start(&home, &args)
        })
        .collect();
    for proxy in &fleet {
        proxy.wait_for_line(|l| l.contains("shared cache connected"));
    }
    let url = origin.url("/big.js?v=1");

    // The first proxy's fetch hangs at the origin while it holds the lock; then it dies.
    let hanging = runtime.spawn(get_ignoring_errors(
        plain_client(fleet[0].addr),
        url.clone(),
    ));
    runtime.block_on(wait_until("the origin got the first fetch", || {
        origin.hits("/big.js?v=1") == 1
    }));
    let locks = redis.cli(&["--raw", "keys", "asset-proxy:lock:*"]);
    assert_eq!(
        locks.lines().count(),
        1,
        "the first proxy holds a lock: {locks}"
    );
    fleet[0].child.kill().expect("kill the lock holder");
    fleet[0].child.wait().expect("reap it");
    origin.route("/big.js?v=1", Route::ok(body.clone()));

    let (status, cache, got) = runtime.block_on(get(&plain_client(fleet[1].addr), &url));
    assert_eq!(status, 200);
    assert!(cache.contains("fwd=miss; stored"), "{cache}");
    assert!(got == body);
    assert_eq!(origin.hits("/big.js?v=1"), 2);
    let stats = runtime.block_on(admin_json(fleet[1].admin, "/stats"));
    assert_eq!(stats["shared"]["fleet_waits"], 1, "{stats}");
    runtime
        .block_on(hanging)
        .expect("the dead proxy's client task ends");
}

/// A GET whose answer does not matter (its proxy is killed under it).
async fn get_ignoring_errors(client: reqwest::Client, url: String) {
    let _ = client.get(url).send().await;
}

/// Browsers accept codings, and a body the origin sends without one is kept under the key
/// of a client that accepts none: a cold asset fetched by browsers through every proxy at once
/// still reaches the origin once, the others taking it from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_through_the_fleet_share_one_fetch_of_a_body_sent_without_a_coding() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let redis = RedisServer::start(dir.path());
    let origin = Origin::https(&ca).await;
    let body = random_bytes(2 << 20, 11);
    origin.route("/canvaskit.wasm?v=3", Route::ok(body.clone()));
    let fleet = fleet_of(3, dir.path(), &redis.url(), &ca).await;
    let url = origin.url("/canvaskit.wasm?v=3");
    let answers = join_all(fleet.iter().map(|proxy| {
        let (client, url) = (proxy.client(), url.clone());
        async move {
            let response = client
                .get(&url)
                .header("accept-encoding", "gzip, deflate, br, zstd")
                .send()
                .await
                .expect("request");
            let status = support::cache_status(&response);
            (status, response.bytes().await.expect("body"))
        }
    }))
    .await;
    assert_eq!(origin.hits("/canvaskit.wasm?v=3"), 1, "one origin fetch");
    for (status, got) in &answers {
        assert!(got == &body, "{status}: byte-identical bodies");
    }
    let shared = answers
        .iter()
        .filter(|(status, _)| status.contains("detail=shared"))
        .count();
    assert_eq!(
        shared,
        2,
        "{:?}",
        answers.iter().map(|a| &a.0).collect::<Vec<_>>()
    );
}
