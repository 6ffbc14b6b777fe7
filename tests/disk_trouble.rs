//! Disk trouble on a real file system: the cache directory on a small tmpfs that fills up, is
//! remounted read-only, and is emptied under the running proxy. The proxy keeps serving the
//! right bytes, counts every failure, logs the trouble at most once a minute, and caches to
//! disk again as soon as it can. Mounting needs root (the test command runs as root).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    admin_json, files_in, get, plain_client, random_bytes, run_proxy, Origin, ProxyProcess, Route,
};

const TROUBLE: &str = "disk tier unusable";
const RESUMED: &str = "disk tier writable again";

/// A tmpfs mounted for the test; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test command runs as root)"
        );
        Tmpfs(path.to_owned())
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {mode}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn log_count(proxy: &ProxyProcess, text: &str) -> usize {
    proxy.log().iter().filter(|l| l.contains(text)).count()
}

/// Polls the admin API (bounded) until `condition` holds for its `/stats`.
async fn stats_until(
    proxy: &ProxyProcess,
    what: &str,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = admin_json(proxy.admin, "/stats").await;
        if condition(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_read_only_and_deleted_disks_are_survived_and_caching_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let disk = Tmpfs::mount(&cache, "3m");
    let origin = Origin::http().await;
    let cache_arg = cache.display().to_string();
    let certs = dir.path().join("certs").display().to_string();
    let proxy = ProxyProcess::start(dir.path(), &["--cache-dir", &cache_arg, "--ca-dir", &certs]);
    let client = plain_client(proxy.addr);
    let mut next = 0u64;
    let fetch = |n: &mut u64| {
        *n += 1;
        let path = format!("/trouble{n}.js?v=1");
        origin.route(&path, Route::ok(random_bytes(700_000, *n)));
        (origin.url(&path), *n)
    };

    // Full: eight 700 KB entries do not fit in 3 MB.
    for _ in 0..8 {
        let (url, seed) = fetch(&mut next);
        let (status, _, body) = get(&client, &url).await;
        assert_eq!((status, body), (200, random_bytes(700_000, seed)), "{url}");
    }
    let stats = stats_until(&proxy, "the writes to be tried", |s| {
        s["disk_writes"].as_u64().unwrap_or(0) + s["disk_errors"].as_u64().unwrap_or(0) >= 8
            && s["tiers"]["write_queue_entries"] == 0
    })
    .await;
    assert!(stats["disk_errors"].as_u64() >= Some(3), "{stats}");
    assert_eq!(stats["tiers"]["disk_failing"], true, "{stats}");
    assert_eq!(
        log_count(&proxy, TROUBLE),
        1,
        "logged once, not per failure"
    );
    let line = proxy
        .log()
        .into_iter()
        .find(|l| l.contains(TROUBLE))
        .unwrap_or_default();
    assert!(line.contains("No space left"), "the cause is named: {line}");

    // Room again (a purge): the next entry is written, and the recovery logged.
    let purged = reqwest::Client::new()
        .post(format!("http://{}/purge", proxy.admin))
        .header("content-type", "application/json")
        .body(r#"{"all": true}"#)
        .send()
        .await
        .expect("purge");
    assert!(purged.status().is_success());
    let (url, _) = fetch(&mut next);
    get(&client, &url).await;
    proxy.wait_for_line(|l| l.contains(RESUMED));
    let written = stats_until(&proxy, "the write", |s| s["tiers"]["disk_failing"] == false).await;

    // Read-only: served, counted, logged; writable again: caching resumes.
    disk.remount("ro");
    let (url, seed) = fetch(&mut next);
    let (status, _, body) = get(&client, &url).await;
    assert_eq!((status, body), (200, random_bytes(700_000, seed)));
    stats_until(&proxy, "the read-only failure", |s| {
        s["disk_errors"].as_u64() > written["disk_errors"].as_u64()
    })
    .await;
    proxy.wait_for_line(|l| l.contains(TROUBLE) && l.contains("Read-only"));
    disk.remount("rw");
    let (url, _) = fetch(&mut next);
    get(&client, &url).await;
    // The recovery is logged once per failure: wait for the second line itself.
    proxy.wait_for_lines(|l| l.contains(RESUMED), 2);
    stats_until(&proxy, "a write after the remount", |s| {
        s["tiers"]["disk_failing"] == false
    })
    .await;
    assert_eq!(log_count(&proxy, RESUMED), 2);

    // Deleted under the running proxy: directories come back, and so does caching.
    delete_contents(&cache);
    let (url, seed) = fetch(&mut next);
    let (status, _, body) = get(&client, &url).await;
    assert_eq!((status, body), (200, random_bytes(700_000, seed)));
    stats_until(&proxy, "the index to follow the deletion", |s| {
        s["tiers"]["disk_entries"] == 1
    })
    .await;
    let files = files_in(&cache.join("v1/entries"));
    assert_eq!(files.len(), 1, "{files:?}");

    assert!(proxy.terminate().success());
    let (code, out, err) = run_proxy(dir.path(), &["--cache-dir", &cache_arg, "cache", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    drop(disk);
}

/// Deletes everything in `dir` while the proxy runs. The proxy may create a file in a
/// directory being deleted (its journal, a use record) just as it is emptied, so a directory
/// found not empty is deleted again, a bounded number of times.
fn delete_contents(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).expect("cache dir").flatten() {
        let path = entry.path();
        if !path.is_dir() {
            std::fs::remove_file(&path).expect("delete");
            continue;
        }
        let mut tries = 0;
        while let Err(error) = std::fs::remove_dir_all(&path) {
            if error.kind() == std::io::ErrorKind::NotFound {
                break;
            }
            tries += 1;
            let written_meanwhile = error.kind() == std::io::ErrorKind::DirectoryNotEmpty;
            assert!(written_meanwhile && tries < 100, "delete {path:?}: {error}");
        }
    }
}
