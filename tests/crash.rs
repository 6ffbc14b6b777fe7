//! Crash safety for real: a write-heavy concurrent load through the proxy binary, SIGKILL at a
//! random moment, a restart on the same directory, and then every entry served must be
//! byte-identical to the origin's, no temp file may remain, and `proxy cache verify` must
//! find the entries whole and the index in agreement with the files. Twenty-five rounds on
//! one directory, bounded in time.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use asset_proxy::cache::disk::DiskTier;
use support::{files_in, plain_client, random_bytes, run_proxy, Origin, ProxyProcess, Route};

const ROUNDS: usize = 25;
const ASSETS: usize = 200;
const VERSIONS: usize = 8;
const WORKERS: usize = 12;

/// A small deterministic generator, seeded per run (the seed is printed to replay a failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn size_of(asset: usize, version: usize) -> usize {
    5_000 + (asset * 7919 + version * 104_729) % 300_000
}

fn seed_of(asset: usize, version: usize) -> u64 {
    (asset * 100 + version) as u64
}

fn path_of(asset: usize, version: usize) -> String {
    format!("/crash/a{asset}.js?v={version}")
}

/// The (asset, version) of every entry file, read from its metadata.
fn stored_versions(dir: &Path, origin: &Origin) -> Vec<(usize, usize)> {
    let (tier, _) = DiskTier::inspect(&dir.join("cache")).expect("open tier");
    let prefix = origin.url("/crash/a");
    tier.entry_paths()
        .iter()
        .filter_map(|path| tier.read_meta(path).ok())
        .filter_map(|(meta, _)| {
            let rest = meta.key.url().strip_prefix(&prefix)?.to_owned();
            let (asset, version) = rest.split_once(".js?v=")?;
            Some((asset.parse().ok()?, version.parse().ok()?))
        })
        .collect()
}

fn start(dir: &Path) -> ProxyProcess {
    let cache = dir.join("cache").display().to_string();
    let certs = dir.join("certs").display().to_string();
    ProxyProcess::start(dir, &["--cache-dir", &cache, "--ca-dir", &certs])
}

/// Requests random versioned assets, newer versions appearing as it goes, checking every
/// body, until the proxy goes away.
async fn load(
    proxy: std::net::SocketAddr,
    origin: Arc<Origin>,
    newest: Arc<Vec<AtomicUsize>>,
    seed: u64,
    served: Arc<AtomicU64>,
) {
    let client = plain_client(proxy);
    let mut rng = Rng(seed | 1);
    loop {
        let asset = rng.below(ASSETS as u64) as usize;
        let mut version = newest[asset].load(Ordering::Relaxed);
        match rng.below(10) {
            0..=3 if version + 1 < VERSIONS => {
                version += 1;
                newest[asset].fetch_max(version, Ordering::Relaxed);
            }
            2 => version = rng.below(version as u64 + 1) as usize,
            _ => {}
        }
        let url = origin.url(&path_of(asset, version));
        let Ok(response) = client.get(&url).send().await else {
            return;
        };
        let Ok(body) = response.bytes().await else {
            return;
        };
        assert_eq!(
            body,
            random_bytes(size_of(asset, version), seed_of(asset, version)),
            "{url} during the load"
        );
        served.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_loses_nothing_and_corrupts_nothing() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Arc::new(Origin::http().await);
    for asset in 0..ASSETS {
        for version in 0..VERSIONS {
            origin.route(
                &path_of(asset, version),
                Route::ok(random_bytes(
                    size_of(asset, version),
                    seed_of(asset, version),
                )),
            );
        }
    }
    let newest = Arc::new((0..ASSETS).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
    let cache_arg = dir.path().join("cache").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(240);
    let served = Arc::new(AtomicU64::new(0));

    for round in 0..ROUNDS {
        assert!(
            Instant::now() < deadline,
            "round {round} past the time bound"
        );
        let mut proxy = start(dir.path());
        let workers: Vec<_> = (0..WORKERS)
            .map(|n| {
                tokio::spawn(load(
                    proxy.addr,
                    origin.clone(),
                    newest.clone(),
                    rng.next() ^ n as u64,
                    served.clone(),
                ))
            })
            .collect();
        // The random moment.
        tokio::time::sleep(Duration::from_millis(50 + rng.below(450))).await;
        proxy.child.kill().expect("SIGKILL");
        proxy.child.wait().expect("reaped");
        for worker in workers {
            worker.await.expect("no body differed from the origin's");
        }

        let proxy = start(dir.path());
        let temps: Vec<_> = files_in(&dir.path().join("cache"))
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
            })
            .collect();
        assert!(
            temps.is_empty(),
            "round {round}: temp files remain: {temps:?}"
        );
        // Every entry on disk, and the newest version of every asset, served again.
        let client = plain_client(proxy.addr);
        let mut wanted: Vec<(usize, usize)> = stored_versions(dir.path(), &origin);
        wanted.extend((0..ASSETS).map(|a| (a, newest[a].load(Ordering::Relaxed))));
        for (asset, version) in wanted {
            let url = origin.url(&path_of(asset, version));
            let response = client.get(&url).send().await.expect("request");
            assert_eq!(response.status(), 200, "{url}");
            let body = response.bytes().await.expect("body");
            assert_eq!(
                body,
                random_bytes(size_of(asset, version), seed_of(asset, version)),
                "round {round}: {url} after the restart"
            );
        }
        let stats = support::admin_json(proxy.admin, "/stats").await;
        assert_eq!(
            stats["corrupt_entries"], 0,
            "round {round}: a torn entry was read"
        );
        assert!(proxy.terminate().success());
        let (code, out, err) =
            run_proxy(dir.path(), &["--cache-dir", &cache_arg, "cache", "verify"]);
        assert_eq!(code, 0, "round {round}: {out}{err}");
    }
    assert!(
        served.load(Ordering::Relaxed) > (ROUNDS * WORKERS) as u64,
        "the load did run"
    );
}
