//! SOCKS5 clients on the proxy port, with clients nobody here wrote: curl (`--socks5-hostname`,
//! plain and HTTPS with the proxy's CA, and `--socks5` with an address), Python's requests
//! (PySocks) and httpx (socksio). Their tunnels are intercepted and cached like an HTTP
//! CONNECT's; credentials are required when the proxy has them; malformed handshakes, other
//! commands and refused targets get SOCKS replies, and the proxy keeps serving; `socks: false`
//! turns it off.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{random_bytes, Origin, Route, TestCa, TestProxy};

/// Runs curl with `args`; returns (success, the last Cache-Status, stderr).
async fn curl(args: Vec<String>) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--fail", "-D", "-", "-o", "/dev/null"])
            .args(&args)
            .output()
            .expect("run curl")
    })
    .await
    .expect("curl task");
    let headers = String::from_utf8_lossy(&output.stdout).to_lowercase();
    let status = headers
        .lines()
        .filter_map(|line| line.strip_prefix("cache-status: "))
        .next_back()
        .unwrap_or("")
        .trim()
        .to_owned();
    (
        output.status.success(),
        status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn ca_file(dir: &Path) -> PathBuf {
    dir.join("certs/ca.pem")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_socks5_is_intercepted_and_cached() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let https = Origin::https(&ca).await;
    let http = Origin::http().await;
    let body = random_bytes(120_000, 5);
    https.route("/main.dart.js?v=1", Route::ok(body.clone()));
    http.route("/app.css?v=1", Route::ok("body{}"));
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let socks = proxy.addr.to_string();
    let cacert = ca_file(dir.path()).display().to_string();

    for (url, flag) in [
        (https.url("/main.dart.js?v=1"), "--socks5-hostname"),
        (http.url("/app.css?v=1"), "--socks5"),
    ] {
        let args = |url: &str| {
            vec![
                flag.to_owned(),
                socks.clone(),
                "--cacert".to_owned(),
                cacert.clone(),
                url.to_owned(),
            ]
        };
        let (ok, first, err) = curl(args(&url)).await;
        assert!(ok, "{url}: {err}");
        assert!(first.contains("fwd=miss"), "{url}: {first}");
        proxy.settled().await;
        let (ok, second, err) = curl(args(&url)).await;
        assert!(ok, "{url}: {err}");
        assert!(second.contains("hit"), "{url}: {second}");
    }
    assert_eq!(https.hits("/main.dart.js?v=1"), 1);
    assert_eq!(http.hits("/app.css?v=1"), 1);
    let stats = support::admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["socks"]["tunnels"], 4, "{stats}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_and_httpx_use_it_as_a_socks5_proxy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/logo.svg?v=3", Route::ok("<svg/>"));
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let script = r#"
import sys, requests, httpx
proxy_port, url, cafile = sys.argv[1], sys.argv[2], sys.argv[3]
proxies = {"https": f"socks5h://127.0.0.1:{proxy_port}"}
first = requests.get(url, proxies=proxies, verify=cafile)
second = httpx.Client(proxy=f"socks5://127.0.0.1:{proxy_port}", verify=cafile).get(url)
print(first.status_code, first.text, first.headers["cache-status"])
print(second.status_code, second.text, second.headers["cache-status"])
"#;
    let (port, url, cafile) = (
        proxy.addr.port().to_string(),
        origin.url("/logo.svg?v=3"),
        ca_file(dir.path()),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", script, &port, &url])
            .arg(&cafile)
            .output()
            .expect("run python3")
    })
    .await
    .expect("python task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("200 <svg/>") && lines[0].contains("fwd=miss"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("200 <svg/>") && lines[1].contains("hit"),
        "{stdout}"
    );
    assert_eq!(origin.hits("/logo.svg?v=3"), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_clients_give_the_proxy_credentials_when_it_has_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/a.js?v=1", Route::ok("ok"));
    let proxy = TestProxy::start_with(dir.path(), "{}", Some(&ca.path), |config| {
        config.clients.credentials = asset_proxy::config::Credentials::parse("fleet:s3cret");
    })
    .await;
    let cacert = ca_file(dir.path()).display().to_string();
    let with = |user: Option<&str>| {
        let mut args = vec!["--socks5-hostname".to_owned(), proxy.addr.to_string()];
        if let Some(user) = user {
            args.extend(["--proxy-user".to_owned(), user.to_owned()]);
        }
        args.extend([
            "--cacert".to_owned(),
            cacert.clone(),
            origin.url("/a.js?v=1"),
        ]);
        args
    };
    assert!(curl(with(Some("fleet:s3cret"))).await.0);
    assert!(!curl(with(Some("fleet:wrong"))).await.0);
    assert!(!curl(with(None)).await.0, "no credentials, no tunnel");
    assert_eq!(origin.hits("/a.js?v=1"), 1);
    proxy.stop().await;
}

/// Sends `bytes` as a client's opening and returns what the proxy answered before closing.
async fn exchange(proxy: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_socks5_clients_get_replies_and_the_proxy_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/ok.js?v=1", Route::ok("ok"));
    let config = r#"{"upstream": {"allow_hosts": ["localhost"]}}"#;
    let proxy = TestProxy::start(dir.path(), config, Some(&ca.path)).await;

    // A greeting cut short, one offering no method the proxy takes, a BIND, a host outside
    // the allow-list, and the proxy itself.
    let admin_port = proxy.admin.port().to_be_bytes();
    let mut to_admin = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1];
    to_admin.extend_from_slice(&admin_port);
    let cases: [(&[u8], &[u8]); 5] = [
        (&[5, 3, 0], &[]),
        (&[5, 1, 0x80], &[5, 0xff]),
        (&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80], &[5, 0, 5, 7]),
        (
            &[
                5, 1, 0, 5, 1, 0, 3, 9, b'e', b'v', b'i', b'l', b'.', b't', b'e', b's', b't', 1,
                187,
            ],
            &[5, 0, 5, 2],
        ),
        (&to_admin, &[5, 0, 5, 2]),
    ];
    for (opening, want) in cases {
        let answer = exchange(proxy.addr, opening).await;
        assert!(answer.starts_with(want), "{opening:?}: {answer:?}");
    }
    // A refusal is counted once its handshake has ended, which the client may see (the
    // connection closing) a moment before.
    let mut stats = serde_json::Value::Null;
    for _ in 0..1_000 {
        stats = support::admin_json(proxy.admin, "/stats").await;
        if stats["socks"]["refused"] == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(stats["socks"]["refused"], 5, "{stats}");
    let (ok, _, err) = curl(vec![
        "--socks5-hostname".to_owned(),
        proxy.addr.to_string(),
        "--cacert".to_owned(),
        ca_file(dir.path()).display().to_string(),
        origin.url("/ok.js?v=1"),
    ])
    .await;
    assert!(ok, "still serving: {err}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_requires_a_namespace_refuses_socks_clients() {
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = TestProxy::start(
        dir.path(),
        r#"{"clients": {"require_namespace": true}}"#,
        None,
    )
    .await;
    let connect = [5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80];
    let answer = exchange(proxy.addr, &connect).await;
    assert!(answer.starts_with(&[5, 0, 5, 2]), "not allowed: {answer:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = TestProxy::start(dir.path(), r#"{"clients": {"socks": false}}"#, None).await;
    let answer = exchange(proxy.addr, &[5, 1, 0]).await;
    assert!(!answer.starts_with(&[5]), "not a SOCKS reply: {answer:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_credentials_never_reach_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = Origin::http().await;
    origin.route("/a.css?v=1", Route::ok("a{}"));
    let config = dir.path().join("auth.json");
    std::fs::write(
        &config,
        r#"{"clients": {"proxy_auth": {"username": "fleet", "password": "s3cret-pw"}}}"#,
    )
    .expect("config");
    let config = config.display().to_string();
    let proxy = support::ProxyProcess::start(dir.path(), &["--log", "trace", "--config", &config]);
    for password in ["s3cret-pw", "s3cret-wrong"] {
        let _ = curl(vec![
            "--socks5-hostname".to_owned(),
            proxy.addr.to_string(),
            "--proxy-user".to_owned(),
            format!("fleet:{password}"),
            origin.url("/a.css?v=1"),
        ])
        .await;
    }
    proxy.wait_for_line(|line| line.contains("SOCKS5 client not served"));
    let log = proxy.log();
    assert!(proxy.terminate().success());
    // The password, as text or as the list of its bytes.
    let as_bytes = format!("{:?}", b"s3cret".to_vec());
    let as_bytes = as_bytes.trim_end_matches(']');
    for line in &log {
        assert!(
            !line.contains("s3cret") && !line.contains(as_bytes),
            "{line}"
        );
    }
    assert!(
        log.iter().any(|line| line.contains("a.css")),
        "the request was logged"
    );
}
