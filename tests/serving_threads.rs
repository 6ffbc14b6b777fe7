//! Clients are served by threads of their own, one per core unless `clients.threads` says
//! otherwise, each running its connections start to end: the real binary, counted by the
//! kernel, stopped by a signal with what those threads started still finished.

mod support;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::Notify;

use support::{
    admin_json, admin_text, get, plain_client, random_bytes, wait_until, Origin, ProxyProcess,
    Route,
};

const STORED: &str = "asset-proxy; fwd=miss; stored";
const DISK_HIT: &str = "asset-proxy; hit; detail=disk";

/// Threads of process `pid` named as serving threads (a thread takes its name once it runs).
fn serving_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|name| name.starts_with("serve-"))
        .count()
}

fn start(dir: &Path, config: &str, extra: &[&str]) -> ProxyProcess {
    let file = dir.join("proxy.json");
    std::fs::write(&file, config).expect("config");
    let mut args = vec!["--config", file.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    ProxyProcess::start(dir, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_number_of_threads_serve_every_client() {
    let origin = Origin::http().await;
    let body = random_bytes(20_000, 1);
    origin.route("/app.js?v=1", Route::ok(body.clone()));
    let url = origin.url("/app.js?v=1");

    let dir = tempfile::tempdir().expect("dir");
    let proxy = start(dir.path(), r#"{"clients": {"threads": 3}}"#, &[]);
    let pid = proxy.child.id();
    wait_until("three serving threads", || serving_threads(pid) == 3).await;
    // Many connections at once, each its own client.
    let clients: Vec<_> = (0..24).map(|_| plain_client(proxy.addr)).collect();
    let answers = futures_util::future::join_all(clients.iter().map(|c| get(c, &url))).await;
    for (status, _, got) in answers {
        assert_eq!((status, got.len()), (200, body.len()));
    }
    assert_eq!(serving_threads(pid), 3, "no more were started");
    assert_eq!(origin.hits("/app.js?v=1"), 1);
    // Each thread serves its share of the clients, and counts them off when they leave.
    let per_thread = |stats: &serde_json::Value| -> Vec<u64> {
        let loads = stats["clients"]["per_thread"]
            .as_array()
            .expect("per_thread");
        loads.iter().filter_map(serde_json::Value::as_u64).collect()
    };
    let loads = per_thread(&admin_json(proxy.admin, "/stats").await);
    assert_eq!(
        (loads.len(), loads.iter().sum::<u64>()),
        (3, 24),
        "{loads:?}"
    );
    let (most, fewest) = (loads.iter().max(), loads.iter().min());
    assert!(
        most.zip(fewest).is_some_and(|(m, f)| m - f <= 2),
        "{loads:?}"
    );
    // The same figures for Prometheus, one series per thread.
    let metrics = admin_text(proxy.admin, "/metrics").await;
    let series: Vec<u64> = metrics
        .lines()
        .filter(|line| line.starts_with("asset_proxy_clients_open_per_thread{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(series.len(), 3, "{metrics}");
    assert_eq!(series.iter().sum::<u64>(), 24, "{metrics}");
    drop(clients);
    let mut loads = Vec::new();
    for _ in 0..2_000 {
        loads = per_thread(&admin_json(proxy.admin, "/stats").await);
        if loads.iter().all(|&n| n == 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(loads, [0, 0, 0], "every client left");
    assert!(proxy.terminate().success());

    let dir = tempfile::tempdir().expect("dir");
    let proxy = start(dir.path(), "{}", &[]);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let pid = proxy.child.id();
    wait_until("one serving thread per core", || {
        serving_threads(pid) == cores
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_in_flight_at_a_shutdown_are_answered_and_stored() {
    const ASSETS: u64 = 16;
    let origin = Origin::http().await;
    let path = |n: u64| format!("/chunk-{n}.js?v=1");
    let mut gates = Vec::new();
    for n in 0..ASSETS {
        let mut route = Route::ok(random_bytes(300_000, n));
        let gate = Arc::new(Notify::new());
        route.gate = Some(gate.clone());
        origin.route(&path(n), route);
        gates.push(gate);
    }
    let dir = tempfile::tempdir().expect("dir");
    let config = r#"{"clients": {"threads": 4}, "memory": {"prewarm": false}}"#;
    let proxy = start(dir.path(), config, &[]);
    let requests: Vec<_> = (0..ASSETS)
        .map(|n| {
            let (client, url) = (plain_client(proxy.addr), origin.url(&path(n)));
            tokio::spawn(async move { get(&client, &url).await })
        })
        .collect();
    wait_until("every fetch at the origin", || {
        (0..ASSETS).all(|n| origin.hits(&path(n)) == 1)
    })
    .await;
    // Shutdown begins with every fetch in flight; the origin answers after that, and the
    // entries are stored by tasks of the threads that served them, after their connections
    // ended.
    proxy.signal("TERM");
    proxy.wait_for_line(|line| line.contains("shutting down"));
    for gate in &gates {
        gate.notify_one();
    }
    for request in requests {
        let (status, cache, _) = request.await.expect("request");
        assert_eq!((status, cache.as_str()), (200, STORED));
    }
    let mut proxy = proxy;
    assert!(proxy.child.wait().expect("exit").success());

    let replay = start(dir.path(), config, &["--mode", "replay"]);
    let client = plain_client(replay.addr);
    for n in 0..ASSETS {
        let (status, cache, got) = get(&client, &origin.url(&path(n))).await;
        assert_eq!((status, cache.as_str()), (200, DISK_HIT), "{}", path(n));
        assert_eq!(got, random_bytes(300_000, n));
        assert_eq!(origin.hits(&path(n)), 1);
    }
}
