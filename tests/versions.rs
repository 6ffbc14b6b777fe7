//! Versions in use are never thrown away: a version retires only once another version has
//! taken over and it has stopped being used. The same three scenarios — a canary deploy,
//! one-off versions mixed into real traffic, a redeploy — on one proxy, on two proxies
//! sharing one cache directory, and on three proxies sharing a real Redis.

mod support;

use std::path::Path;
use std::time::Duration;

use support::redis_server::RedisServer;
use support::{get, random_bytes, wait_until, Origin, ProxyProcess, Route, TestCa, TestProxy};

/// Proxies that requests are spread over, in turn.
struct Proxies {
    proxies: Vec<TestProxy>,
    clients: Vec<reqwest::Client>,
    _redis: Option<RedisServer>,
}

impl Proxies {
    async fn one(dir: &Path, ca: &TestCa, config: &str) -> Proxies {
        let proxy = TestProxy::start(dir, config, Some(&ca.path)).await;
        Proxies::of(vec![proxy], None)
    }

    /// Two proxies on one cache directory, as two processes of one machine.
    async fn sharing_a_directory(dir: &Path, ca: &TestCa, config: &str) -> Proxies {
        let a = TestProxy::start(dir, config, Some(&ca.path)).await;
        let b = TestProxy::start(dir, config, Some(&ca.path)).await;
        Proxies::of(vec![a, b], None)
    }

    /// Three proxies, each with its own directory, sharing a real Redis.
    async fn sharing_redis(dir: &Path, ca: &TestCa, config: &str) -> Proxies {
        let redis = RedisServer::start(dir);
        let mut proxies = Vec::new();
        for n in 0..3 {
            let url = redis.url();
            let proxy = TestProxy::start_with(
                &dir.join(format!("proxy-{n}")),
                config,
                Some(&ca.path),
                |config| config.cache.shared.set_nodes(&url).expect("redis URL"),
            )
            .await;
            let app = proxy.app.clone();
            wait_until("the proxy connected to Redis", move || {
                app.cache().shared().is_some_and(|s| s.is_up())
            })
            .await;
            proxies.push(proxy);
        }
        Proxies::of(proxies, Some(redis))
    }

    fn of(proxies: Vec<TestProxy>, redis: Option<RedisServer>) -> Proxies {
        let clients = proxies.iter().map(TestProxy::client).collect();
        Proxies {
            proxies,
            clients,
            _redis: redis,
        }
    }

    /// Request `n` goes to proxy `n % count`, and is stored before the next one.
    async fn get(&self, n: usize, url: &str) -> String {
        let i = n % self.proxies.len();
        let (status, cache, _) = get(&self.clients[i], url).await;
        assert_eq!(status, 200, "{url}");
        self.proxies[i].settled().await;
        cache
    }

    /// Whether any proxy's memory tier still holds `url` (as these clients ask for it: no
    /// `Accept-Encoding`).
    fn any_holds_in_memory(&self, url: &str) -> bool {
        let url = url::Url::parse(url).expect("url");
        let key =
            asset_proxy::cache::CacheKey::for_request(&url, &http::HeaderMap::new(), &[], true);
        self.proxies
            .iter()
            .any(|proxy| proxy.app.cache().memory_entry(&key).is_some())
    }

    fn stat(&self, read: impl Fn(&asset_proxy::stats::Stats) -> u64) -> u64 {
        self.proxies.iter().map(|p| read(p.app.stats())).sum()
    }

    /// The versions of `asset` whose entries are still on disk, on every proxy.
    async fn versions_on_disk(&self, asset_suffix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for proxy in &self.proxies {
            for asset in proxy.app.cache().assets().await {
                if asset.asset.as_str().ends_with(asset_suffix) {
                    out.extend(
                        asset
                            .versions
                            .iter()
                            .filter(|held| held.bytes > 0)
                            .map(|held| held.version.as_str().to_owned()),
                    );
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn route(origin: &Origin, path: &str, seed: u64) {
    origin.route(
        path,
        Route::ok(random_bytes(20_000, seed)).header("content-type", "text/javascript"),
    );
}

/// 90 % of clients on `?v=a`, 10 % on the canary `?v=b`, interleaved.
async fn canary(proxies: &Proxies, origin: &Origin) {
    route(origin, "/main.dart.js?v=a", 1);
    route(origin, "/main.dart.js?v=b", 2);
    let (a, b) = (
        origin.url("/main.dart.js?v=a"),
        origin.url("/main.dart.js?v=b"),
    );
    for n in 0..40 {
        let url = if n % 10 == 9 { &b } else { &a };
        proxies.get(n, url).await;
    }
    assert!(origin.hits("/main.dart.js?v=a") <= 1, "36 requests for v=a");
    assert!(
        origin.hits("/main.dart.js?v=b") <= 1,
        "4 requests for the canary"
    );
    assert_eq!(proxies.stat(|s| s.version_evictions.get()), 0);
}

/// `v=good` for everyone, with one-off versions (an old tab, a buggy page) in between;
/// then `v=good` alone until the one-offs have retired.
async fn one_off_churn(proxies: &Proxies, origin: &Origin) {
    route(origin, "/app.js?v=good", 3);
    let good = origin.url("/app.js?v=good");
    for n in 0..20u64 {
        proxies.get(2 * n as usize, &good).await;
        let one_off = format!("/app.js?v=tab{n:04x}{}", n * 7919);
        route(origin, &one_off, 100 + n);
        proxies.get(2 * n as usize + 1, &origin.url(&one_off)).await;
    }
    assert_eq!(origin.hits("/app.js?v=good"), 1, "v=good fetched once");
    // Retired, counted, and gone from disk (a one-off still waiting for the disk writer is
    // not on disk yet, nor retired).
    keep_using_until(proxies, &good, "the one-offs retired", || async {
        proxies.stat(|s| s.one_off_versions.get()) >= 20
            && proxies.versions_on_disk("/app.js").await == ["good"]
    })
    .await;
    assert_eq!(origin.hits("/app.js?v=good"), 1, "and never since");
}

/// `v1` in use, then a redeploy: only `v2` is used, for longer than the retirement delay.
async fn redeploy(proxies: &Proxies, origin: &Origin) {
    route(origin, "/flutter.js?v=1", 5);
    route(origin, "/flutter.js?v=2", 6);
    let (v1, v2) = (origin.url("/flutter.js?v=1"), origin.url("/flutter.js?v=2"));
    for n in 0..proxies.proxies.len() {
        proxies.get(n, &v1).await;
    }
    // Retired by one proxy, v1 leaves another's memory when it follows the journal.
    keep_using_until(proxies, &v2, "v1 retired everywhere", || async {
        proxies.versions_on_disk("/flutter.js").await == ["2"] && !proxies.any_holds_in_memory(&v1)
    })
    .await;
    assert!(proxies.stat(|s| s.version_changes.get()) >= 1);
    for n in 0..proxies.proxies.len() {
        let cache = proxies.get(n, &v2).await;
        assert!(cache.contains("hit"), "v2 stays: {cache}");
    }
    let before = origin.hits("/flutter.js?v=1");
    let cache = proxies.get(0, &v1).await;
    assert!(
        cache.contains("fwd=miss"),
        "v1 is gone from every tier: {cache}"
    );
    assert_eq!(origin.hits("/flutter.js?v=1"), before + 1);
}

/// Requests `url`, spread over the proxies, until `done` (bounded).
async fn keep_using_until<F, Fut>(proxies: &Proxies, url: &str, what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        proxies.get(n, url).await;
        n += 1;
        // Paced use: the point is time passing while only this version is in use.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const QUICK: &str = r#"{"memory": {"prewarm": false}, "versioned": {"retire_after_secs": 1}}"#;
const DEFAULT: &str = r#"{"memory": {"prewarm": false}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_proxy_keeps_what_is_in_use_and_retires_what_is_not() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    canary(
        &Proxies::one(&dir.path().join("a"), &ca, DEFAULT).await,
        &origin,
    )
    .await;
    let quick = Proxies::one(&dir.path().join("b"), &ca, QUICK).await;
    one_off_churn(&quick, &origin).await;
    redeploy(&quick, &origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_on_one_directory_follow_the_same_rule() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let shared = Proxies::sharing_a_directory(&dir.path().join("a"), &ca, DEFAULT).await;
    canary(&shared, &origin).await;
    let quick = Proxies::sharing_a_directory(&dir.path().join("b"), &ca, QUICK).await;
    one_off_churn(&quick, &origin).await;
    redeploy(&quick, &origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_proxies_on_one_redis_follow_the_same_rule() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let fleet = Proxies::sharing_redis(&dir.path().join("a"), &ca, DEFAULT).await;
    canary(&fleet, &origin).await;
    let quick = Proxies::sharing_redis(&dir.path().join("b"), &ca, QUICK).await;
    one_off_churn(&quick, &origin).await;
    redeploy(&quick, &origin).await;
}

/// Resident memory of a process, from /proc.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_one_off_versions_keep_the_index_bounded() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    let config = dir.path().join("proxy.json");
    std::fs::write(&config, DEFAULT).expect("config");
    let proxy = ProxyProcess::start(
        dir.path(),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--log",
            "warn,asset_proxy::app=info",
        ],
    );
    let client = support::plain_client(proxy.addr);
    origin.route("/main.dart.js?v=good", Route::ok(random_bytes(2_000, 1)));
    let good = origin.url("/main.dart.js?v=good");
    let body = random_bytes(2_000, 2);
    let mut rss = Vec::new();
    for n in 0..10_000u32 {
        if n % 2_500 == 0 {
            rss.push(resident_kib(proxy.child.id()));
        }
        let path = format!("/main.dart.js?v=x{n}");
        origin.route(&path, Route::ok(body.clone()));
        let (status, _, _) = get(&client, &origin.url(&path)).await;
        assert_eq!(status, 200);
        // Real traffic: the version everyone uses, between every ten one-offs.
        if n % 10 == 0 {
            get(&client, &good).await;
        }
    }
    rss.push(resident_kib(proxy.child.id()));
    let (_, cache, _) = get(&client, &good).await;
    assert!(
        cache.contains("hit"),
        "the version in use is still held: {cache}"
    );
    assert_eq!(origin.hits("/main.dart.js?v=good"), 1);
    // The asset's record holds at most the bound, whatever went through it.
    let records = support::files_in(&dir.path().join("cache/v1/assets"));
    let record = records
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("one asset record");
    let text = std::fs::read_to_string(record).expect("record");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let held = json["versions"].as_array().expect("versions").len();
    assert!(
        held <= asset_proxy::cache::version_index::MAX_HELD,
        "{held} held"
    );
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());
    eprintln!(
        "resident KiB every 2,500 one-off versions: {rss:?}; record {} bytes, {held} versions held",
        text.len()
    );
    // Bodies of retired versions leave memory too (resident memory is printed above; it is
    // no measure under a loaded machine, the memory tier's own count is). The last answers
    // went out before their entries were stored and their versions admitted, which retires
    // the ones they replace: wait for those, bounded.
    let bound = 2 * asset_proxy::cache::version_index::MAX_HELD as u64;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let stats = support::admin_json(proxy.admin, "/stats").await;
        let in_memory = stats["tiers"]["memory_entries"]
            .as_u64()
            .expect("memory entries");
        if in_memory <= bound {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{in_memory} entries in memory: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
