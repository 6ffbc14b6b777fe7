//! Modes for test runs, on the real binary: record once (whatever `no-store`, `no-cache` or
//! `private` say, never an answer that sets a cookie), replay with the origin gone, refresh
//! to pick up what changed; a rule's `record_cookies` records answers that set cookies, without
//! the cookies; an unknown mode names the valid ones.

mod support;

use std::path::Path;

use support::{get, plain_client, run_proxy, Origin, ProxyProcess, Route};

fn start(dir: &Path, mode: &str) -> ProxyProcess {
    start_with(dir, mode, r#"{"memory": {"prewarm": false}}"#)
}

fn start_with(dir: &Path, mode: &str, config: &str) -> ProxyProcess {
    let cache = dir.join("cache").display().to_string();
    let certs = dir.join("certs").display().to_string();
    let text = config;
    let config = dir.join("modes.json");
    std::fs::write(&config, text).expect("config");
    let config = config.display().to_string();
    ProxyProcess::start(
        dir,
        &[
            "--mode",
            mode,
            "--config",
            &config,
            "--cache-dir",
            &cache,
            "--ca-dir",
            &certs,
        ],
    )
}

/// What a test app's origin answers: an entry point nobody may store, a personalised JSON,
/// a script with no lifetime at all, and a login answer that sets a cookie.
fn serve(origin: &Origin, version: &str) {
    origin.route(
        "/index.html",
        Route::ok(format!("<html>{version}</html>"))
            .header("content-type", "text/html")
            .header("cache-control", "no-cache")
            .header("etag", &format!("\"{version}\"")),
    );
    origin.route(
        "/api/me",
        Route::ok(format!("{{\"v\": \"{version}\"}}"))
            .header("content-type", "application/json")
            .header("cache-control", "private, no-store"),
    );
    origin.route(
        "/app.js",
        Route::ok(format!("run('{version}')")).header("content-type", "text/javascript"),
    );
    origin.route(
        "/login",
        Route::ok("welcome")
            .header("content-type", "text/html")
            .header("set-cookie", "sid=1"),
    );
}

const PATHS: [&str; 4] = ["/index.html", "/api/me", "/app.js", "/login"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_run_replays_without_the_origin_and_refresh_picks_up_changes() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    serve(&origin, "one");
    let urls: Vec<String> = PATHS.iter().map(|path| origin.url(path)).collect();

    // Recording: each answer is fetched once and kept, except the one setting a cookie.
    let proxy = start(dir.path(), "record");
    let client = plain_client(proxy.addr);
    for _ in 0..2 {
        for url in &urls {
            assert_eq!(get(&client, url).await.0, 200, "{url}");
        }
    }
    for path in ["/index.html", "/api/me", "/app.js"] {
        assert_eq!(origin.hits(path), 1, "{path} recorded on its first request");
    }
    assert_eq!(
        origin.hits("/login"),
        2,
        "a cookie-setting answer is never recorded"
    );
    assert!(proxy.terminate().success());

    // Replaying, the origin changed: the recording answers; what it lacks is a clear 504.
    serve(&origin, "two");
    let proxy = start(dir.path(), "replay");
    let client = plain_client(proxy.addr);
    let before = origin.answers();
    let (status, _, body) = get(&client, &urls[0]).await;
    assert_eq!((status, &body[..]), (200, &b"<html>one</html>"[..]));
    assert_eq!(get(&client, &urls[1]).await.2, "{\"v\": \"one\"}");
    assert_eq!(get(&client, &urls[2]).await.2, "run('one')");
    let (status, _, body) = get(&client, &urls[3]).await;
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    assert_eq!(origin.answers(), before, "replay never contacts the origin");
    assert!(proxy.terminate().success());

    // Refreshing: what was stored before the run is fetched again once, then kept.
    let proxy = start(dir.path(), "refresh");
    let client = plain_client(proxy.addr);
    let (_, cache, body) = get(&client, &urls[2]).await;
    assert_eq!(body, "run('two')", "{cache}");
    assert_eq!(get(&client, &urls[2]).await.2, "run('two')");
    assert_eq!(
        origin.hits("/app.js"),
        2,
        "once in the recording, once in the refresh"
    );
    assert_eq!(get(&client, &urls[0]).await.2, "<html>two</html>");
    assert!(proxy.terminate().success());

    // And the origin gone, a replay serves the refreshed answers.
    drop(origin);
    let proxy = start(dir.path(), "replay");
    let client = plain_client(proxy.addr);
    assert_eq!(get(&client, &urls[2]).await.2, "run('two')");
    assert_eq!(get(&client, &urls[0]).await.2, "<html>two</html>");
    assert!(proxy.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_records_answers_that_set_cookies_without_the_cookies() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    origin.route(
        "/login",
        Route::ok("welcome")
            .header("content-type", "text/html")
            .header("set-cookie", "sid=s3cr3t-session; HttpOnly"),
    );
    let url = origin.url("/login");
    let config = r#"{"memory": {"prewarm": false},
                     "rules": [{"glob": "**/login", "record_cookies": true}]}"#;

    let proxy = start_with(dir.path(), "record", config);
    let client = plain_client(proxy.addr);
    let first = client.get(&url).send().await.expect("first");
    assert!(
        first.headers().contains_key("set-cookie"),
        "the client that caused the fetch gets its cookie"
    );
    let second = client.get(&url).send().await.expect("second");
    assert_eq!(second.status(), 200);
    assert!(
        !second.headers().contains_key("set-cookie"),
        "no other client gets it"
    );
    assert_eq!(second.text().await.expect("body"), "welcome");
    assert_eq!(origin.hits("/login"), 1, "recorded on its first request");
    assert!(proxy.terminate().success());
    for file in support::files_in(&dir.path().join("cache")) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("s3cr3t"),
            "the cookie is not at rest: {}",
            file.display()
        );
    }

    drop(origin);
    let proxy = start_with(dir.path(), "replay", config);
    let (status, _, body) = get(&plain_client(proxy.addr), &url).await;
    assert_eq!((status, &body[..]), (200, &b"welcome"[..]));
    assert!(proxy.terminate().success());
}

#[test]
fn an_unknown_mode_names_the_valid_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, _, err) = run_proxy(dir.path(), &["--mode", "playback"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("auto")
            && err.contains("record")
            && err.contains("replay")
            && err.contains("refresh"),
        "{err}"
    );
}
