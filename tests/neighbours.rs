//! Processes sharing one cache directory fetch a cold asset once between them: real proxy
//! processes, a real origin, and a lock holder killed for real.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{admin_json, get, plain_client, random_bytes, Origin, ProxyProcess, Route};

/// Two proxy processes on one cache directory; waits long enough for a neighbour that the
/// only way on is the neighbour's entry or its death.
fn start_two(dir: &Path) -> (ProxyProcess, ProxyProcess) {
    let config = dir.join("neighbours.json");
    std::fs::write(
        &config,
        r#"{"memory": {"prewarm": false}, "coalesce_wait_secs": 300}"#,
    )
    .expect("config");
    let config = config.display().to_string();
    let cache = dir.join("cache").display().to_string();
    let certs = dir.join("certs").display().to_string();
    let args = [
        "--config",
        config.as_str(),
        "--cache-dir",
        cache.as_str(),
        "--ca-dir",
        certs.as_str(),
    ];
    (
        ProxyProcess::start(dir, &args),
        ProxyProcess::start(dir, &args),
    )
}

/// Polls both proxies' `/stats` (bounded) until the requests waiting for another's fetch
/// add up to `waits`.
async fn until_waiting(a: &ProxyProcess, b: &ProxyProcess, waits: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (sa, sb) = (
            admin_json(a.admin, "/stats").await,
            admin_json(b.admin, "/stats").await,
        );
        let sum = sa["coalesced_waits"].as_u64().unwrap_or(0)
            + sb["coalesced_waits"].as_u64().unwrap_or(0);
        if sum >= waits {
            return;
        }
        assert!(Instant::now() < deadline, "{sum} of {waits} waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets the origin's held answers go, including those still on their way to the gate.
fn open_gate(gate: Arc<tokio::sync::Notify>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            gate.notify_waiters();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_cold_requests_over_two_processes_reach_the_origin_once() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let body = random_bytes(600_000, 21);
    let mut route = Route::ok(body.clone()).header("content-type", "text/javascript");
    route.gate = Some(gate.clone());
    origin.route("/main.dart.js?v=cold", route);
    let (a, b) = start_two(dir.path());
    let url = origin.url("/main.dart.js?v=cold");
    let mut requests = Vec::new();
    for n in 0..50 {
        let client = plain_client(if n % 2 == 0 { a.addr } else { b.addr });
        let url = url.clone();
        requests.push(tokio::spawn(async move { get(&client, &url).await }));
    }
    // Every request but the one fetching waits, in its own process or the other's; they may
    // all wait before the fetch that holds the lock has reached the origin.
    until_waiting(&a, &b, 49).await;
    support::wait_until("the leader's fetch at the origin", || {
        origin.hits("/main.dart.js?v=cold") >= 1
    })
    .await;
    assert_eq!(origin.hits("/main.dart.js?v=cold"), 1);
    let gate = open_gate(gate);
    for request in requests {
        let (status, _, got) = request.await.expect("request");
        assert_eq!((status, got.len()), (200, body.len()));
        assert_eq!(got, body);
    }
    gate.abort();
    assert_eq!(origin.hits("/main.dart.js?v=cold"), 1);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_lock_holder_delays_its_neighbour_only_until_it_is_gone() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let body = random_bytes(300_000, 22);
    let mut route = Route::ok(body.clone()).header("content-type", "text/javascript");
    route.gate = Some(gate.clone());
    origin.route("/app.js?v=killed", route);
    let (a, b) = start_two(dir.path());
    let url = origin.url("/app.js?v=killed");

    // A leads the fill and hangs on the origin; B waits for A.
    let (client_a, client_b) = (plain_client(a.addr), plain_client(b.addr));
    let first = {
        let url = url.clone();
        tokio::spawn(async move { client_a.get(&url).send().await })
    };
    support::wait_until("A's fetch at the origin", || {
        origin.hits("/app.js?v=killed") == 1
    })
    .await;
    let second = {
        let url = url.clone();
        tokio::spawn(async move { get(&client_b, &url).await })
    };
    until_waiting(&a, &b, 1).await;
    assert_eq!(origin.hits("/app.js?v=killed"), 1);

    // A dies holding the lock: B goes to the origin itself, long before its 300 s wait.
    a.signal("KILL");
    assert!(first.await.expect("task").is_err(), "A's client lost A");
    support::wait_until("B's own fetch", || origin.hits("/app.js?v=killed") == 2).await;
    let gate = open_gate(gate);
    let (status, _, got) = second.await.expect("request");
    gate.abort();
    assert_eq!((status, got), (200, body));
    assert!(b.terminate().success());
}
