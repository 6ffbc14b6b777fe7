//! The operator commands of the binary, run as an operator runs them: against a running proxy
//! (through its admin API), on a cache directory with no proxy, and the config reload and log
//! format of a running proxy.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{client_via, get, random_bytes, Origin, ProxyProcess, Route, TestCa};

fn proxy(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxy"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run proxy")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `proxy` with `args` on a blocking thread, so the test's origin keeps serving.
async fn proxy_async(dir: &Path, args: Vec<String>) -> Output {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        proxy(&dir, &args)
    })
    .await
    .expect("command task")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_commands_work_through_a_running_proxy_and_on_the_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    for (path, seed) in [("/main.dart.js?v=1", 1), ("/app.3f2a9c1b.css", 2)] {
        origin.route(path, Route::ok(random_bytes(10_000, seed)));
    }
    let upstream_ca = ca.path.display().to_string();
    let running = ProxyProcess::start(dir.path(), &["--upstream-ca", &upstream_ca]);
    let ca_pem = std::fs::read_to_string(dir.path().join("certs/ca.pem")).expect("CA");
    let client = client_via(running.addr, &ca_pem);
    for path in ["/main.dart.js?v=1", "/app.3f2a9c1b.css"] {
        get(&client, &origin.url(path)).await;
    }
    let admin_port = running.admin.port().to_string();
    let through_admin = |command: &[&str]| {
        let mut args = strings(command);
        args.extend(strings(&["--admin-port", &admin_port]));
        proxy_async(dir.path(), args)
    };

    let stats = through_admin(&["cache", "stats"]).await;
    assert!(stats.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats JSON");
    assert_eq!(stats["requests"], 2, "the running proxy's own figures");

    let listing = stdout(&through_admin(&["cache", "ls"]).await);
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(
        listing.contains(&origin.url("/main.dart.js?v=1")) && listing.contains("v=1"),
        "{listing}"
    );
    let purged = through_admin(&["cache", "purge", &origin.url("/app.3f2a9c1b.css")]).await;
    assert_eq!(stdout(&purged).trim(), "removed 1 from memory, 1 from disk");
    let (_, cache, _) = get(&client, &origin.url("/app.3f2a9c1b.css")).await;
    assert_eq!(
        cache, "asset-proxy; fwd=miss; stored",
        "the running proxy forgot it too"
    );

    assert!(tokio::task::spawn_blocking(move || running.terminate())
        .await
        .expect("stop")
        .success());

    // No proxy runs now: the commands work on the directory.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
        .to_string();
    let on_directory = |command: &[&str]| {
        let mut args = strings(command);
        args.extend(strings(&["--admin-port", &closed]));
        proxy_async(dir.path(), args)
    };
    let stats = on_directory(&["cache", "stats"]).await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats JSON");
    assert_eq!(stats["tiers"]["disk_entries"], 2);
    assert_eq!(stats["running"], false);
    let listing = stdout(&on_directory(&["cache", "ls", &origin.url("/app")]).await);
    assert_eq!(listing.lines().count(), 1, "{listing}");
    let purged = on_directory(&["cache", "purge", "--all"]).await;
    assert_eq!(stdout(&purged).trim(), "removed 0 from memory, 2 from disk");
    let nothing = on_directory(&["cache", "purge"]).await;
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("say what to purge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_fetches_a_list_into_the_cache_and_reports_failures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/main.dart.js?v=7", Route::ok(random_bytes(300_000, 7)));
    origin.route(
        "/canvaskit/v7/canvaskit.wasm",
        Route::ok(random_bytes(200_000, 8)),
    );
    let list = format!(
        "# assets of build 7\n{}\n\n{}\n{}\n",
        origin.url("/main.dart.js?v=7"),
        origin.url("/canvaskit/v7/canvaskit.wasm"),
        origin.url("/missing.js?v=7")
    );
    std::fs::write(dir.path().join("urls.txt"), list).expect("write list");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
        .to_string();
    let upstream_ca = ca.path.display().to_string();

    // No proxy runs on --port: one is started for the warm-up.
    let warmed = proxy_async(
        dir.path(),
        strings(&[
            "warm",
            "urls.txt",
            "--port",
            &closed,
            "--upstream-ca",
            &upstream_ca,
        ]),
    )
    .await;
    let report = stdout(&warmed);
    assert!(
        !warmed.status.success(),
        "a failed URL makes the exit code non-zero"
    );
    assert!(
        report.contains("warmed 2 of 3 URLs, 500000 bytes"),
        "{report}"
    );
    assert!(
        report.contains(&format!("failed: {}", origin.url("/missing.js?v=7"))),
        "{report}"
    );
    let progress = String::from_utf8_lossy(&warmed.stderr);
    assert!(
        progress.contains("ok 200 300000 bytes"),
        "plain progress lines off a terminal: {progress}"
    );

    // A proxy started afterwards serves them from the cache.
    let running = ProxyProcess::start(dir.path(), &["--upstream-ca", &upstream_ca]);
    let ca_pem = std::fs::read_to_string(dir.path().join("certs/ca.pem")).expect("CA");
    let (_, cache, _) = get(
        &client_via(running.addr, &ca_pem),
        &origin.url("/main.dart.js?v=7"),
    )
    .await;
    assert!(cache.starts_with("asset-proxy; hit;"), "{cache}");
    assert_eq!(origin.hits("/main.dart.js?v=7"), 1);

    // Through the running proxy, from standard input.
    origin.route("/extra.js?v=1", Route::ok("extra"));
    let port = running.addr.port().to_string();
    let url = origin.url("/extra.js?v=1");
    let dir_path = dir.path().to_owned();
    let warmed = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
            .current_dir(&dir_path)
            .args(["warm", "-", "--port", &port])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn warm");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(url.as_bytes())
            .expect("write URL");
        child.wait_with_output().expect("warm output")
    })
    .await
    .expect("warm task");
    assert!(
        warmed.status.success(),
        "{}",
        String::from_utf8_lossy(&warmed.stderr)
    );
    assert!(stdout(&warmed).contains("warmed 1 of 1 URLs"));
    assert_eq!(origin.hits("/extra.js?v=1"), 1);
}

#[test]
fn ca_commands_print_the_path_and_the_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exported = proxy(dir.path(), &["ca", "export", "--ca-dir", "certs"]);
    assert!(exported.status.success());
    let pem = std::fs::read_to_string(dir.path().join("certs/ca.pem")).expect("created");
    assert_eq!(stdout(&exported), pem);
    let path = proxy(dir.path(), &["ca", "path", "--ca-dir", "certs"]);
    assert_eq!(stdout(&path).trim(), "certs/ca.pem");
}

#[test]
fn config_check_validates_without_starting() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("good.json"),
        r#"{"rules": [{"glob": "a/**", "action": "bypass"}]}"#,
    )
    .expect("write");
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"rules": [{"glob": "a/**", "action": "keep"}]}"#,
    )
    .expect("write");
    let good = proxy(dir.path(), &["config", "check", "good.json"]);
    assert!(good.status.success());
    assert_eq!(stdout(&good).trim(), "good.json: valid");
    let bad = proxy(dir.path(), &["config", "check", "bad.json"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("rules[0].action"));
    assert!(
        !dir.path().join("cache").exists(),
        "checking starts nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_and_keeps_them_when_the_new_file_is_bad() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/app.js?v=1", Route::ok("app"));
    let config = dir.path().join("proxy.json");
    std::fs::write(
        &config,
        r#"{"rules": [{"glob": "localhost:*/**", "action": "bypass"}]}"#,
    )
    .expect("write");
    let upstream_ca = ca.path.display().to_string();
    let running = ProxyProcess::start(
        dir.path(),
        &["--config", "proxy.json", "--upstream-ca", &upstream_ca],
    );
    let ca_pem = std::fs::read_to_string(dir.path().join("certs/ca.pem")).expect("CA");
    let client = client_via(running.addr, &ca_pem);
    let url = origin.url("/app.js?v=1");
    assert_eq!(
        get(&client, &url).await.1,
        "asset-proxy; fwd=bypass; detail=rule"
    );

    std::fs::write(&config, "{}").expect("rewrite");
    running.signal("HUP");
    let line =
        tokio::task::block_in_place(|| running.wait_for_line(|l| l.contains("config reloaded")));
    assert!(line.contains("rules"), "the log says what changed: {line}");
    assert_eq!(get(&client, &url).await.1, "asset-proxy; fwd=miss; stored");

    std::fs::write(
        &config,
        r#"{"rules": [{"glob": "localhost:*/**", "action": "keep"}]}"#,
    )
    .expect("rewrite");
    running.signal("HUP");
    let line = tokio::task::block_in_place(|| {
        running.wait_for_line(|l| l.contains("config reload failed"))
    });
    assert!(line.contains("rules[0].action"), "{line}");
    assert_eq!(
        get(&client, &url).await.1,
        "asset-proxy; hit; detail=memory",
        "the previous config stays"
    );
}

/// The proxy on a free port, logging JSON lines to a pipe.
fn spawn_logging_json(dir: &std::path::Path, level: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_proxy"))
        .current_dir(dir)
        .args(["--port", "0", "--log-format", "json", "--log", level])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn proxy")
}

#[test]
fn json_logs_give_one_object_per_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = spawn_logging_json(dir.path(), "info");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut listening = None;
    for line in lines.by_ref().take(10) {
        let line = line.expect("line");
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["message"] == "listening" {
            listening = Some(event);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let listening = listening.expect("a listening event");
    assert_eq!(listening["level"], "INFO");
    assert!(listening["addr"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
}

/// Reads a running proxy's JSON log lines on a thread, so a test can wait for one with a
/// deadline.
fn json_events(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let (send, events) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            let event =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if send.send(event).is_err() {
                break;
            }
        }
    });
    events
}

/// A running proxy logging JSON at a level, its log read as it comes (a proxy whose log nobody
/// reads waits for room to write it), and an origin address that refuses connections: each
/// request to it is answered 502 at once, and logged.
struct LoggingProxy {
    child: std::process::Child,
    events: std::sync::mpsc::Receiver<serde_json::Value>,
    addr: String,
    origin: std::net::SocketAddr,
}

impl LoggingProxy {
    fn start(dir: &std::path::Path, level: &str) -> LoggingProxy {
        let mut child = spawn_logging_json(dir, level);
        let events = json_events(child.stderr.take().expect("stderr"));
        let mut proxy = LoggingProxy {
            child,
            events,
            addr: String::new(),
            origin: {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                listener.local_addr().expect("addr")
            },
        };
        proxy.addr = loop {
            let event = proxy.next();
            if event["message"] == "listening" {
                break event["addr"].as_str().expect("addr").to_owned();
            }
        };
        proxy
    }

    /// The next log line, within 30 s.
    fn next(&self) -> serde_json::Value {
        self.events
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a log line")
    }
}

impl Drop for LoggingProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` on `stream` and reads until the peer closes.
fn exchange(stream: &mut std::net::TcpStream, request: &str) -> String {
    use std::io::{Read, Write};
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// At debug level a request's events sit in its own span (method, URL) within its
/// connection's (and its tunnel's); at info, where those spans would cost a fifth of a small
/// hit, there are none: the request's warnings name the URL and its line names the client.
#[test]
fn each_request_logs_inside_its_own_span_within_its_connection_at_debug() {
    let (seen, _) = failed_requests_logged("debug");
    assert_eq!(
        seen,
        [
            "client>request http://ORIGIN/plain".to_owned(),
            "client>tunnel>request http://ORIGIN/tunnelled".to_owned(),
        ]
    );
}

#[test]
fn at_info_a_request_warning_names_its_url_without_a_span_of_its_own() {
    let (seen, request_lines) = failed_requests_logged("info");
    assert_eq!(
        seen,
        [
            " http://ORIGIN/plain".to_owned(),
            " http://ORIGIN/tunnelled".to_owned(),
        ]
    );
    // With no client span to name it, the request line names the client itself.
    assert_eq!(
        request_lines,
        [
            "PLAIN http://ORIGIN/plain".to_owned(),
            "TUNNEL http://ORIGIN/tunnelled".to_owned(),
        ]
    );
}

/// Two requests to an origin that refuses connections, one plain and one in a tunnel, with
/// the proxy logging at `level`: for each "upstream request failed" event, the spans it sits
/// in and the URL it names (from its request span if it has one, else from its own field);
/// and for each request line, the client it names and its URL. The origin's address shows as
/// ORIGIN, the clients' as PLAIN and TUNNEL.
fn failed_requests_logged(level: &str) -> (Vec<String>, Vec<String>) {
    use std::io::{BufRead, Write};
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("temp dir");
    let logging = LoggingProxy::start(dir.path(), level);
    let (proxy, origin) = (&logging.addr, logging.origin);
    let timeout = Some(Duration::from_secs(30));
    let mut plain = std::net::TcpStream::connect(proxy).expect("connect");
    plain.set_read_timeout(timeout).expect("timeout");
    let answer = exchange(
        &mut plain,
        &format!(
            "GET http://{origin}/plain HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");

    let mut tunnel = std::net::TcpStream::connect(proxy).expect("connect");
    tunnel.set_read_timeout(timeout).expect("timeout");
    tunnel
        .write_all(format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .expect("write");
    let mut reader = std::io::BufReader::new(tunnel.try_clone().expect("clone"));
    let mut head = String::new();
    while head.is_empty() || !head.ends_with("\r\n\r\n") {
        assert!(reader.read_line(&mut head).expect("read") > 0, "{head}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answer = exchange(
        &mut tunnel,
        &format!("GET /tunnelled HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");

    let names_of_clients = [
        (plain.local_addr().expect("address").to_string(), "PLAIN"),
        (tunnel.local_addr().expect("address").to_string(), "TUNNEL"),
        (origin.to_string(), "ORIGIN"),
    ];
    let named = |line: String| {
        names_of_clients
            .iter()
            .fold(line, |line, (address, name)| line.replace(address, name))
    };
    let (mut seen, mut request_lines) = (Vec::new(), Vec::new());
    while seen.len() < 2 || request_lines.len() < 2 {
        let event = logging.next();
        if event["message"] == "request" {
            let (peer, url) = (event["peer"].as_str(), event["url"].as_str());
            request_lines.push(named(format!(
                "{} {}",
                peer.unwrap_or(""),
                url.unwrap_or("")
            )));
        }
        if event["message"] != "upstream request failed" {
            continue;
        }
        // No "spans" at all when the event is in none.
        let names: Vec<&str> = event["spans"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|span| span["name"].as_str())
            .collect();
        let url = if names.last() == Some(&"request") {
            let request = &event["span"];
            assert_eq!(request["method"], "GET", "{event}");
            request["url"].as_str().unwrap_or("").to_owned()
        } else {
            event["url"].as_str().unwrap_or("").to_owned()
        };
        seen.push(named(format!("{} {}", names.join(">"), url)));
    }
    seen.sort();
    request_lines.sort();
    (seen, request_lines)
}

/// Serving threads write their log lines in batches: under a load of many requests every
/// request still has exactly one line, each line whole (it parses as JSON), and the lines still
/// held when the proxy stops are written before it exits.
#[test]
fn every_request_line_reaches_the_log_whole_when_lines_are_written_in_batches() {
    use std::io::{BufRead, Read, Write};
    use std::time::Duration;
    const CONNECTIONS: usize = 4;
    const REQUESTS_EACH: usize = 150;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut logging = LoggingProxy::start(dir.path(), "info");
    let (proxy, origin) = (logging.addr.clone(), logging.origin);
    std::thread::scope(|scope| {
        for c in 0..CONNECTIONS {
            let proxy = &proxy;
            scope.spawn(move || {
                let mut stream = std::net::TcpStream::connect(proxy).expect("connect");
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                for n in 0..REQUESTS_EACH {
                    let request =
                        format!("GET http://{origin}/c{c}/r{n} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
                    stream.write_all(request.as_bytes()).expect("write");
                    let mut head = String::new();
                    while !head.ends_with("\r\n\r\n") {
                        assert!(reader.read_line(&mut head).expect("read") > 0, "{head}");
                    }
                    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).expect("body");
                }
            });
        }
    });
    let pid = logging.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut logged = std::collections::HashMap::<String, usize>::new();
    // Until the proxy has exited and its log ends (a line that is not whole ends it early).
    while let Ok(event) = logging.events.recv_timeout(Duration::from_secs(30)) {
        if event["message"] == "request" {
            *logged
                .entry(event["url"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
    }
    assert!(logging.child.wait().expect("wait").success());
    let expected: std::collections::HashMap<String, usize> = (0..CONNECTIONS)
        .flat_map(|c| (0..REQUESTS_EACH).map(move |n| (format!("http://{origin}/c{c}/r{n}"), 1)))
        .collect();
    assert_eq!(logged.len(), expected.len());
    assert_eq!(logged, expected);
}

/// Credentials in a URL (a query token, a signed link's signature) never reach the log: the
/// request's line and its warning show them as REDACTED, and keep the rest of the URL.
#[test]
fn credentials_in_a_url_are_redacted_in_every_log_line() {
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("temp dir");
    let logging = LoggingProxy::start(dir.path(), "debug");
    let origin = logging.origin;
    let mut stream = std::net::TcpStream::connect(&logging.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let answer = exchange(
        &mut stream,
        &format!(
            "GET http://{origin}/app.js?v=1&access_token=tok-8f2d91&X-Amz-Signature=sig-77ab HTTP/1.1\r\n\
             Host: {origin}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let mut lines = Vec::new();
    let line = loop {
        let event = logging.next();
        lines.push(event.to_string());
        if event["message"] == "request" {
            break event;
        }
    };
    assert_eq!(
        line["url"],
        format!("http://{origin}/app.js?v=1&access_token=REDACTED&X-Amz-Signature=REDACTED"),
        "{line}"
    );
    assert!(
        lines.iter().any(|l| l.contains("upstream request failed")),
        "{lines:#?}"
    );
    let leaked: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("tok-8f2d91") || l.contains("sig-77ab"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
}
