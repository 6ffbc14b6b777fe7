//! Bad input and abuse, byte for byte over raw TCP: each case gets a clear answer (or a
//! closed connection, for clients that never finish), and the proxy keeps serving. Also
//! proxy authentication, loops to the proxy itself, and that no client is ever served
//! another client's private answer.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use support::{cache_status, get, random_bytes, Origin, Route, TestCa, TestProxy};

const SHORT_TIMEOUTS: &str =
    r#"{"clients": {"header_timeout_secs": 1, "tls_handshake_timeout_secs": 1}}"#;

/// Sends `bytes`, then reads until the proxy closes the connection (bounded).
async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

async fn still_serving(proxy: &TestProxy, origin: &Origin) {
    let (status, _, body) = get(&proxy.client(), &origin.url("/alive.js?v=1")).await;
    assert_eq!(
        (status, &body[..]),
        (200, &b"alive"[..]),
        "the proxy keeps serving"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_answers_and_break_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/alive.js?v=1", Route::ok("alive"));
    let plain = Origin::http().await;
    plain.route("/submit", Route::ok("accepted"));
    let proxy = TestProxy::start(dir.path(), SHORT_TIMEOUTS, Some(&ca.path)).await;
    let (own, admin, target) = (proxy.addr, proxy.admin, plain.addr);
    let huge = "a".repeat(100_000);
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed request line", "GARBAGE\r\n\r\n".into(), "HTTP/1.1 400"),
        ("oversized headers", format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nX-Big: {huge}\r\n\r\n"), "HTTP/1.1 431"),
        ("unsupported scheme", "GET ftp://example.com/file HTTP/1.1\r\nHost: example.com\r\n\r\n".into(), "unsupported scheme"),
        ("origin-form without CONNECT", "GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n".into(), "send an absolute URL"),
        ("CONNECT without a host", "CONNECT :443 HTTP/1.1\r\nHost: :443\r\n\r\n".into(), "HTTP/1.1 400"),
        ("CONNECT to port 0", "CONNECT example.com:0 HTTP/1.1\r\nHost: example.com:0\r\n\r\n".into(), "bad CONNECT target"),
        ("CONNECT to a port out of range", "CONNECT example.com:99999 HTTP/1.1\r\nHost: example.com\r\n\r\n".into(), "HTTP/1.1 400"),
        ("absolute-form to the proxy itself", format!("GET http://{own}/ HTTP/1.1\r\nHost: {own}\r\n\r\n"), "HTTP/1.1 508"),
        ("absolute-form to the admin API", format!("GET http://{admin}/stats HTTP/1.1\r\nHost: {admin}\r\n\r\n"), "would loop"),
        ("CONNECT to the proxy itself", format!("CONNECT localhost:{} HTTP/1.1\r\nHost: localhost\r\n\r\n", own.port()), "HTTP/1.1 508"),
        // RFC 9112 §6.3: framed by Transfer-Encoding alone, and the connection closed after
        // the answer, so nothing after the body is read as another request.
        (
            "Content-Length with Transfer-Encoding",
            format!("POST http://{target}/submit HTTP/1.1\r\nHost: {target}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://{target}/smuggled HTTP/1.1\r\nHost: {target}\r\n\r\n"),
            "connection: close\r\n\r\naccepted",
        ),
        ("control characters in the URL", format!("GET http://{target}/a\x01b HTTP/1.1\r\nHost: {target}\r\n\r\n"), "HTTP/1.1 400"),
        // The client's body is at fault, not the origin: a 400 that says so.
        (
            "a malformed chunked request body",
            format!("POST http://{target}/submit HTTP/1.1\r\nHost: {target}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            "HTTP/1.1 400",
        ),
    ];
    for (name, request, want) in &cases {
        let reply = exchange(own, request.as_bytes()).await;
        assert!(
            reply.contains(want),
            "{name}: expected {want:?}, got {:?}",
            reply.chars().take(300).collect::<String>()
        );
    }
    let invalid_utf8 =
        [b"GET http://a.test/\xff\xfe HTTP/1.1\r\nHost: a.test\r\n\r\n".as_slice()].concat();
    assert!(
        exchange(own, &invalid_utf8)
            .await
            .starts_with("HTTP/1.1 400"),
        "invalid UTF-8 in the URL"
    );
    assert_eq!(
        plain.hits("/smuggled"),
        0,
        "nothing smuggled past the proxy"
    );
    assert_eq!(
        proxy.app.stats().upstream_errors.get(),
        0,
        "a client's fault is not counted as the origin's"
    );
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn clients_that_never_finish_are_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/alive.js?v=1", Route::ok("alive"));
    let proxy = TestProxy::start(dir.path(), SHORT_TIMEOUTS, Some(&ca.path)).await;

    // Slowloris: headers that never end.
    let mut slow = TcpStream::connect(proxy.addr).await.expect("connect");
    slow.write_all(b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nX-Slow: 1\r\n")
        .await
        .expect("write");
    // A TLS client that never finishes its handshake.
    let mut stalled = TcpStream::connect(proxy.addr).await.expect("connect");
    let connect = format!(
        "CONNECT localhost:{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        origin.addr.port()
    );
    stalled.write_all(connect.as_bytes()).await.expect("write");
    let mut answer = [0u8; 19];
    stalled
        .read_exact(&mut answer)
        .await
        .expect("CONNECT answered");
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    stalled
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .await
        .expect("partial hello");

    still_serving(&proxy, &origin).await;
    let started = Instant::now();
    for stream in [&mut slow, &mut stalled] {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection is closed by the proxy");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn a_client_leaving_mid_body_leaves_the_fill_to_complete_for_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::http().await;
    let body = random_bytes(8 * 1024 * 1024, 31);
    let gate = Arc::new(Notify::new());
    let mut route = Route::ok(body.clone());
    route.gate = Some(gate.clone());
    origin.route("/big.js?v=1", route);
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let url = origin.url("/big.js?v=1");

    // The leader reads a little, then hangs up.
    let mut leaving = TcpStream::connect(proxy.addr).await.expect("connect");
    let request = format!("GET {url} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr);
    leaving.write_all(request.as_bytes()).await.expect("write");
    let arrived = origin.arrived.notified();
    arrived.await;
    let follower = {
        let client = proxy.client();
        let url = url.clone();
        tokio::spawn(async move { get(&client, &url).await })
    };
    let stats = proxy.app.stats().clone();
    support::wait_until("the second request to wait on the first", || {
        stats.coalesced_waits.get() >= 1
    })
    .await;
    gate.notify_one();
    let mut first_bytes = vec![0u8; 4096];
    leaving
        .read_exact(&mut first_bytes)
        .await
        .expect("some of the body");
    drop(leaving);

    let (status, _, got) = follower.await.expect("follower task");
    assert_eq!((status, got.len()), (200, body.len()));
    assert_eq!(got, body);
    proxy.settled().await;
    assert_eq!(
        get(&proxy.client(), &url).await.1,
        "asset-proxy; hit; detail=memory"
    );
    assert_eq!(origin.hits("/big.js?v=1"), 1);
}

#[tokio::test]
async fn proxy_credentials_are_required_when_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/app.js?v=1", Route::ok("authorised"));
    let config = r#"{"clients": {"proxy_auth": {"username": "fleet", "password": "s3cret"}}}"#;
    let proxy = TestProxy::start(dir.path(), config, Some(&ca.path)).await;
    let client_with = |credentials: Option<(&str, &str)>| {
        let mut proxy_url = reqwest::Proxy::all(format!("http://{}", proxy.addr)).expect("proxy");
        if let Some((user, password)) = credentials {
            proxy_url = proxy_url.basic_auth(user, password);
        }
        reqwest::Client::builder()
            .use_rustls_tls()
            .proxy(proxy_url)
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(proxy.ca_pem().as_bytes()).expect("CA"),
            )
            .build()
            .expect("client")
    };
    let reply = exchange(
        proxy.addr,
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
            origin.url("/app.js?v=1").replace("https", "http")
        )
        .as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 407"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic realm=\"asset-proxy\""),
        "{reply}"
    );
    assert!(
        client_with(None)
            .get(origin.url("/app.js?v=1"))
            .send()
            .await
            .is_err(),
        "CONNECT refused without credentials"
    );
    assert!(client_with(Some(("fleet", "wrong")))
        .get(origin.url("/app.js?v=1"))
        .send()
        .await
        .is_err());
    let response = client_with(Some(("fleet", "s3cret")))
        .get(origin.url("/app.js?v=1"))
        .send()
        .await
        .expect("authorised");
    assert_eq!(response.text().await.expect("body"), "authorised");
    let seen = origin
        .last_request_headers("/app.js?v=1")
        .expect("origin reached");
    assert!(
        seen.get("proxy-authorization").is_none(),
        "credentials never reach the origin"
    );
}

#[tokio::test]
async fn no_client_is_served_another_clients_private_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let client = proxy.client();
    let fetch = |path: &'static str, header: Option<(&'static str, &'static str)>| {
        let (client, url) = (client.clone(), origin.url(path));
        async move {
            let mut request = client.get(url);
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            let response = request.send().await.expect("request");
            let cache = cache_status(&response);
            (cache, response.text().await.expect("body"))
        }
    };
    type Credential = Option<(&'static str, &'static str)>;
    let cases: [(&str, Route, Route, Credential, Credential); 5] = [
        (
            "/cookie.js?v=1",
            Route::ok("alice's").header("vary", "Cookie"),
            Route::ok("bob's").header("vary", "Cookie"),
            Some(("cookie", "session=alice")),
            Some(("cookie", "session=bob")),
        ),
        (
            "/account.html",
            Route::ok("alice's")
                .header("content-type", "text/html")
                .header("cache-control", "public, max-age=600"),
            Route::ok("bob's")
                .header("content-type", "text/html")
                .header("cache-control", "public, max-age=600"),
            Some(("cookie", "session=alice")),
            Some(("cookie", "session=bob")),
        ),
        (
            "/auth.js?v=1",
            Route::ok("alice's"),
            Route::ok("bob's"),
            Some(("authorization", "Bearer alice")),
            Some(("authorization", "Bearer bob")),
        ),
        (
            "/private.css",
            Route::ok("alice's").header("cache-control", "private, max-age=600"),
            Route::ok("bob's"),
            None,
            None,
        ),
        (
            "/session.css?v=1",
            Route::ok("alice's").header("set-cookie", "session=alice"),
            Route::ok("bob's"),
            None,
            None,
        ),
    ];
    for (path, for_alice, for_bob, alice, bob) in cases {
        origin.route(path, for_alice);
        assert_eq!(fetch(path, alice).await.1, "alice's");
        proxy.settled().await;
        origin.route(path, for_bob);
        assert_eq!(
            fetch(path, bob).await.1,
            "bob's",
            "{path}: bob never gets alice's answer"
        );
        assert_eq!(
            fetch(path, None).await.1,
            "bob's",
            "{path}: nor does a client without credentials"
        );
    }
    // Alice's own cookie-keyed copy still serves her.
    let (cache, body) = fetch("/cookie.js?v=1", Some(("cookie", "session=alice"))).await;
    assert_eq!(
        (cache.as_str(), body.as_str()),
        ("asset-proxy; hit; detail=memory", "alice's")
    );
}

#[tokio::test]
async fn a_rule_can_share_answers_to_requests_with_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let config = r#"{"rules": [{"glob": "localhost:*/public/**", "share_credentials": true}]}"#;
    let proxy = TestProxy::start(dir.path(), config, Some(&ca.path)).await;
    let client = proxy.client();
    origin.route("/public/app.js?v=1", Route::ok("same for all"));
    let url = origin.url("/public/app.js?v=1");
    client
        .get(&url)
        .header("cookie", "session=alice")
        .send()
        .await
        .expect("alice");
    proxy.settled().await;
    let response = client
        .get(&url)
        .header("cookie", "session=bob")
        .send()
        .await
        .expect("bob");
    assert_eq!(cache_status(&response), "asset-proxy; hit; detail=memory");
    assert_eq!(origin.hits("/public/app.js?v=1"), 1);
}
