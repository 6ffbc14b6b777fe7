//! The disk tier as a fleet relies on it for weeks: a size cap kept by least-recently-used
//! eviction, write-behind with a bounded loss window, an index rebuilt when lost, corruption
//! found and repaired (also after a file was checked once), a layout that is migrated or
//! refused, and two real processes sharing one directory. Crashes and disk trouble have their
//! own files.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use asset_proxy::cache::disk::DiskTier;
use support::{
    admin_json, admin_text, files_in, get, plain_client, random_bytes, run_proxy, Origin,
    ProxyProcess, Route, TestProxy,
};

const DISK_HIT: &str = "asset-proxy; hit; detail=disk";

/// Arguments for a proxy on `dir`, without pre-warming: these tests are about what the disk
/// tier itself serves.
fn args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let config = dir.join("disk-only.json");
    // Versions retire at once, so that what one process retires the other sees at once.
    std::fs::write(
        &config,
        r#"{"memory": {"prewarm": false}, "versioned": {"retire_after_secs": 0}}"#,
    )
    .expect("config");
    let mut out = vec![
        "--config".to_owned(),
        config.display().to_string(),
        "--cache-dir".to_owned(),
        dir.join("cache").display().to_string(),
        "--ca-dir".to_owned(),
        dir.join("certs").display().to_string(),
    ];
    out.extend(extra.iter().map(|s| (*s).to_owned()));
    out
}

fn start(dir: &Path, extra: &[&str]) -> ProxyProcess {
    let args = args(dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ProxyProcess::start(dir, &args)
}

fn entry_files(cache: &Path) -> Vec<PathBuf> {
    files_in(&cache.join("v1/entries"))
}

/// The URL each entry file holds, read from its metadata.
fn url_of(path: &Path, cache: &Path) -> String {
    let (tier, _) = DiskTier::inspect(cache).expect("open tier");
    tier.read_meta(path)
        .expect("metadata")
        .0
        .key
        .url()
        .to_owned()
}

/// The URLs of the entries on disk now; files removed while they are read are left out.
fn urls_on_disk(cache: &Path) -> Vec<String> {
    let (tier, _) = DiskTier::inspect(cache).expect("open tier");
    entry_files(cache)
        .iter()
        .filter_map(|path| tier.read_meta(path).ok())
        .map(|(meta, _)| meta.key.url().to_owned())
        .collect()
}

/// Polls `condition` (bounded) until it holds.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_usage_is_kept_under_the_cap_by_evicting_least_recently_used() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    let proxy = TestProxy::start(dir.path(), r#"{"disk": {"max_mb": 1}}"#, None).await;
    let client = plain_client(proxy.addr);
    let hot = origin.url("/hot.js?v=1");
    origin.route("/hot.js?v=1", Route::ok(random_bytes(100_000, 1)));
    get(&client, &hot).await;
    for n in 0..30 {
        let path = format!("/cold{n}.js?v=1");
        origin.route(&path, Route::ok(random_bytes(100_000, 100 + n)));
        get(&client, &origin.url(&path)).await;
        // The hot asset is used all along (from memory): recency without a disk read.
        get(&client, &hot).await;
        proxy.settled().await;
    }
    let cache = proxy.app.cache().clone();
    eventually("disk usage under the cap", || {
        let cache = cache.clone();
        async move { cache.usage().await.disk_bytes <= 1024 * 1024 }
    })
    .await;

    let on_disk: u64 = entry_files(&dir.path().join("cache"))
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    assert!(on_disk <= 1024 * 1024, "{on_disk} bytes of entry files");
    let listed: Vec<String> = cache
        .entries("", None, 1000)
        .await
        .into_iter()
        .map(|e| e.url)
        .collect();
    assert!(listed.contains(&hot), "the hot asset stays: {listed:?}");
    assert!(!listed.contains(&origin.url("/cold0.js?v=1")), "{listed:?}");
    assert!(listed.contains(&origin.url("/cold29.js?v=1")), "{listed:?}");
    let stats = admin_json(proxy.admin, "/stats").await;
    assert!(stats["disk_evictions"].as_u64() > Some(15), "{stats}");
    assert_eq!(stats["tiers"]["disk_max_bytes"], 1024 * 1024);
    let metrics = admin_text(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains("asset_proxy_disk_evictions_total "),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_download_is_on_disk_within_a_second_of_its_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    let mut proxy = start(dir.path(), &[]);
    let client = plain_client(proxy.addr);
    let urls: Vec<String> = (0..20)
        .map(|n| {
            let path = format!("/window{n}.js?v=1");
            origin.route(&path, Route::ok(random_bytes(200_000, n)));
            origin.url(&path)
        })
        .collect();
    let fetches = urls.iter().map(|url| get(&client, url));
    for (status, _, _) in futures_util::future::join_all(fetches).await {
        assert_eq!(status, 200);
    }
    // The stated loss window: what completed a second before a crash is on disk.
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.child.kill().expect("SIGKILL");
    proxy.child.wait().expect("reaped");

    let proxy = start(dir.path(), &[]);
    let client = plain_client(proxy.addr);
    for (n, url) in urls.iter().enumerate() {
        let (status, cache, body) = get(&client, url).await;
        assert_eq!((status, cache.as_str()), (200, DISK_HIT), "{url}");
        assert_eq!(body, random_bytes(200_000, n as u64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_entries_are_caught_on_read_and_by_verify_which_repairs_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache_dir = dir.path().join("cache");
    let origin = Origin::http().await;
    let urls: Vec<String> = (0..5)
        .map(|n| {
            let path = format!("/damage{n}.js?v=1");
            origin.route(&path, Route::ok(random_bytes(50_000, n)));
            origin.url(&path)
        })
        .collect();
    let fill = |dir: &Path| {
        let proxy = start(dir, &[]);
        let client = plain_client(proxy.addr);
        let urls = urls.clone();
        async move {
            for url in &urls {
                assert_eq!(get(&client, url).await.0, 200);
            }
            proxy.terminate();
        }
    };
    fill(dir.path()).await;
    let damage = |cache_dir: &Path| -> Vec<String> {
        let mut files = entry_files(cache_dir);
        files.sort();
        let mut damaged = Vec::new();
        for (n, path) in files.iter().take(4).enumerate() {
            damaged.push(url_of(path, cache_dir));
            let mut bytes = std::fs::read(path).expect("read entry");
            match n {
                0 => bytes.truncate(bytes.len() / 2),
                1 => *bytes.last_mut().expect("body") ^= 0x01,
                2 => bytes.clear(),
                _ => bytes[30] ^= 0x01,
            }
            std::fs::write(path, bytes).expect("damage entry");
        }
        damaged
    };

    // On read: each damaged entry is counted, removed and fetched again.
    let damaged = damage(&cache_dir);
    let proxy = start(dir.path(), &[]);
    let client = plain_client(proxy.addr);
    for (n, url) in urls.iter().enumerate() {
        let (status, cache, body) = get(&client, url).await;
        assert_eq!(status, 200);
        assert_eq!(body, random_bytes(50_000, n as u64), "{url}");
        let want_hit = !damaged.contains(url);
        assert_eq!(cache == DISK_HIT, want_hit, "{url}: {cache}");
    }
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["corrupt_entries"], 4, "{stats}");
    proxy.terminate();

    // By verify: each reported, the exit code says so; --repair fixes; then all is clean.
    let damaged = damage(&cache_dir);
    let temp = cache_dir.join("v1/entries/00/.tmp-left-by-a-crash");
    std::fs::create_dir_all(temp.parent().expect("dir")).expect("fan-out dir");
    std::fs::write(&temp, b"half").expect("temp file");
    let cache_arg = cache_dir.display().to_string();
    let (code, out, err) = run_proxy(dir.path(), &["--cache-dir", &cache_arg, "cache", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.matches("corrupt").count(), 4, "{out}");
    assert!(out.contains(".tmp-left-by-a-crash"), "{out}");
    assert!(out.contains("5 problems, 0 repaired"), "{out}");
    let (code, out, _) = run_proxy(
        dir.path(),
        &["--cache-dir", &cache_arg, "cache", "verify", "--repair"],
    );
    assert_eq!(code, 1, "problems were found: {out}");
    assert!(out.contains("5 problems, 5 repaired"), "{out}");
    let (code, out, _) = run_proxy(dir.path(), &["--cache-dir", &cache_arg, "cache", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checked 1 entries"), "{out}");
    assert_eq!(damaged.len(), 4);
}

/// A body is hashed on its file's first read only; a file damaged in place afterwards is a
/// changed file, hashed again, caught and fetched again — never served as another body — and
/// `cache verify` catches what the proxy had checked before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_damaged_after_it_was_checked_is_caught_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache_dir = dir.path().join("cache");
    let origin = Origin::http().await;
    let body = random_bytes(2_000_000, 77);
    origin.route("/checked.wasm?v=1", Route::ok(body.clone()));
    let url = origin.url("/checked.wasm?v=1");
    // A memory tier too small for the body: every hit reads the file.
    let config = dir.path().join("small-memory.json");
    std::fs::write(&config, r#"{"memory": {"max_mb": 1, "prewarm": false}}"#).expect("config");
    let (config, cache_arg) = (
        config.display().to_string(),
        cache_dir.display().to_string(),
    );
    let certs = dir.path().join("certs").display().to_string();
    let proxy = ProxyProcess::start(
        dir.path(),
        &[
            "--config",
            &config,
            "--cache-dir",
            &cache_arg,
            "--ca-dir",
            &certs,
        ],
    );
    let client = plain_client(proxy.addr);
    assert_eq!(get(&client, &url).await.2, body);
    eventually("the entry on disk", || async {
        entry_files(&cache_dir).len() == 1
    })
    .await;
    let disk_hit = |cache: &str| cache.contains("hit") && cache.ends_with("detail=disk");
    for _ in 0..3 {
        let (status, cache, got) = get(&client, &url).await;
        assert_eq!(status, 200);
        assert!(disk_hit(&cache), "{cache}");
        assert_eq!(got, body);
    }
    let flip_a_body_byte = || {
        let file = &entry_files(&cache_dir)[0];
        let mut bytes = std::fs::read(file).expect("read entry");
        let at = bytes.len() - 1000;
        bytes[at] ^= 0x40;
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .expect("damage in place");
    };
    flip_a_body_byte();
    let (status, cache, got) = get(&client, &url).await;
    assert_eq!(status, 200);
    assert_eq!(got, body, "the damaged body is never served");
    assert!(!disk_hit(&cache), "{cache}");
    assert_eq!(origin.hits("/checked.wasm?v=1"), 2);
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["corrupt_entries"], 1, "{stats}");

    eventually("the entry on disk again", || async {
        entry_files(&cache_dir).len() == 1
    })
    .await;
    let (_, cache, _) = get(&client, &url).await;
    assert!(disk_hit(&cache), "{cache}");
    flip_a_body_byte();
    assert!(proxy.terminate().success());
    let (code, out, err) = run_proxy(dir.path(), &["--cache-dir", &cache_arg, "cache", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.matches("corrupt").count(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_index_is_rebuilt_from_the_entries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    let proxy = start(dir.path(), &[]);
    let client = plain_client(proxy.addr);
    for n in 0..10 {
        let path = format!("/rebuild{n}.js?v=1");
        origin.route(&path, Route::ok(random_bytes(10_000, n)));
        get(&client, &origin.url(&path)).await;
    }
    proxy.terminate();
    let journal = dir.path().join("cache/v1/index.journal");
    std::fs::write(&journal, b"garbage, not a journal").expect("damage index");

    let proxy = start(dir.path(), &[]);
    proxy.wait_for_line(|l| l.contains("cache index missing or unreadable"));
    let line = proxy.wait_for_line(|l| l.contains("corrected"));
    assert!(line.contains("added=10"), "{line}");
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["tiers"]["disk_entries"], 10, "{stats}");
    proxy.terminate();
    let cache_arg = dir.path().join("cache").display().to_string();
    let (code, out, _) = run_proxy(dir.path(), &["--cache-dir", &cache_arg, "cache", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_layout_is_migrated_and_an_unknown_one_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    origin.route("/layout.js?v=1", Route::ok(random_bytes(10_000, 1)));
    let proxy = start(dir.path(), &[]);
    get(&plain_client(proxy.addr), &origin.url("/layout.js?v=1")).await;
    proxy.terminate();
    let cache = dir.path().join("cache");

    // Layout 1: entries, no marker, no index.
    std::fs::remove_file(cache.join("layout.json")).expect("remove marker");
    std::fs::remove_file(cache.join("v1/index.journal")).expect("remove index");
    let proxy = start(dir.path(), &[]);
    proxy.wait_for_line(|l| l.contains("cache layout migrated") && l.contains("from=1"));
    let (_, status, body) = get(&plain_client(proxy.addr), &origin.url("/layout.js?v=1")).await;
    assert_eq!((status.as_str(), body), (DISK_HIT, random_bytes(10_000, 1)));
    proxy.terminate();
    let marker = std::fs::read_to_string(cache.join("layout.json")).expect("marker");
    assert!(marker.contains("\"layout\":3"), "{marker}");

    std::fs::write(cache.join("layout.json"), r#"{"layout": 99}"#).expect("future marker");
    let args = args(dir.path(), &["--port", "0"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = run_proxy(dir.path(), &args);
    assert_ne!(code, 0);
    assert!(
        err.contains("layout 99") && err.contains("--cache-dir"),
        "{err}"
    );
    assert_eq!(
        origin.hits("/layout.js?v=1"),
        1,
        "nothing was misread or refetched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_cache_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    let a = start(dir.path(), &[]);
    let b = start(dir.path(), &[]);
    let (client_a, client_b) = (plain_client(a.addr), plain_client(b.addr));

    // What one stores, the other serves.
    origin.route("/shared.js?v=1", Route::ok(random_bytes(300_000, 1)));
    let url = origin.url("/shared.js?v=1");
    get(&client_a, &url).await;
    eventually("the entry is on disk", || async {
        admin_json(a.admin, "/stats").await["disk_writes"] == 1
    })
    .await;
    let (status, cache, body) = get(&client_b, &url).await;
    assert_eq!((status, cache.as_str()), (200, DISK_HIT));
    assert_eq!(body, random_bytes(300_000, 1));
    assert_eq!(origin.hits("/shared.js?v=1"), 1);

    // Concurrent writes of one key, and of different versions of one asset.
    let mut last_raced = String::new();
    for round in 0..10u64 {
        let same = format!("/same{round}.js?v=1");
        origin.route(&same, Route::ok(random_bytes(200_000, 1000 + round)));
        let (v_a, v_b) = (
            format!("/race.js?v={}", 2 * round),
            format!("/race.js?v={}", 2 * round + 1),
        );
        origin.route(&v_a, Route::ok(random_bytes(150_000, 2000 + 2 * round)));
        origin.route(&v_b, Route::ok(random_bytes(150_000, 2001 + 2 * round)));
        let (same_url, url_a, url_b) = (origin.url(&same), origin.url(&v_a), origin.url(&v_b));
        let (one, two, three, four) = tokio::join!(
            get(&client_a, &same_url),
            get(&client_b, &same_url),
            get(&client_a, &url_a),
            get(&client_b, &url_b),
        );
        assert_eq!(one.2, random_bytes(200_000, 1000 + round));
        assert_eq!(two.2, random_bytes(200_000, 1000 + round));
        assert_eq!(three.2, random_bytes(150_000, 2000 + 2 * round));
        assert_eq!(four.2, random_bytes(150_000, 2001 + 2 * round));
        last_raced = url_b;
    }
    // The last two versions may have been used in the same millisecond, which retires
    // neither (neither was used since the other); a later use of one settles it.
    get(&client_b, &last_raced).await;
    let raced_on_disk = || {
        urls_on_disk(&dir.path().join("cache"))
            .into_iter()
            .filter(|u| u.contains("/race.js"))
            .count()
    };
    eventually("one version of the raced asset on disk", || async {
        raced_on_disk() == 1
    })
    .await;

    // A version retired by one is dropped by the other, memory included (both retire at
    // once: see `start`).
    origin.route("/evict.js?v=1", Route::ok(random_bytes(20_000, 1)));
    origin.route("/evict.js?v=2", Route::ok(random_bytes(20_000, 2)));
    let (v1, v2) = (origin.url("/evict.js?v=1"), origin.url("/evict.js?v=2"));
    get(&client_b, &v1).await;
    let (_, cache, _) = get(&client_b, &v1).await;
    assert!(cache.contains("hit") && cache.contains("memory"), "{cache}");
    get(&client_a, &v2).await;
    eventually("A writes v2 and retires v1 from disk", || async {
        let urls = urls_on_disk(&dir.path().join("cache"));
        urls.contains(&v2) && !urls.contains(&v1)
    })
    .await;
    let (_, cache, _) = get(&client_b, &v2).await;
    assert!(cache.contains("hit"), "B serves what A stored: {cache}");
    // A HEAD is answered from memory when the entry is there, and forwarded (storing
    // nothing) when it is not: it shows what B holds without changing it.
    eventually("B drops the retired version from memory", || async {
        let response = client_b.head(&v1).send().await.expect("HEAD");
        !support::cache_status(&response).contains("hit")
    })
    .await;
    let (_, cache, body) = get(&client_b, &v1).await;
    assert!(cache.contains("fwd=miss"), "{cache}");
    assert_eq!(body, random_bytes(20_000, 1));

    a.terminate();
    b.terminate();
    let cache_arg = dir.path().join("cache").display().to_string();
    let (code, out, _) = run_proxy(dir.path(), &["--cache-dir", &cache_arg, "cache", "verify"]);
    assert_eq!(code, 0, "no corrupt or mixed entry: {out}");
    let race_files: Vec<String> = entry_files(&dir.path().join("cache"))
        .iter()
        .map(|p| url_of(p, &dir.path().join("cache")))
        .filter(|u| u.contains("/race.js"))
        .collect();
    assert_eq!(
        race_files.len(),
        1,
        "one version of the raced asset: {race_files:?}"
    );
}
