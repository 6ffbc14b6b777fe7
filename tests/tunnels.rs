//! CONNECT tunnels: what the proxy does with a tunnel decides whether the cache sees its
//! requests at all. A slow ClientHello is still intercepted; plain HTTP inside is served;
//! only what is neither (or a server that speaks first) is relayed as it is, counted and
//! logged; a tunnel that stays silent is closed, never relayed blind.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::websocket::{client_config, connect_tunnel, tls_through, tls_with};
use support::{admin_json, crypto, random_bytes, Origin, Route, TestCa, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// GETs `path` with HTTP/1.1 over an established stream.
async fn get_over<S>(stream: S, host: &str, path: &str) -> (u16, String, Bytes)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", host)
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, cache, body)
}

#[tokio::test]
async fn slow_client_hellos_are_still_intercepted_and_coalesced() {
    crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https_http1_only(&ca).await;
    let body = random_bytes(200_000, 15);
    origin.route(
        "/main.dart.js?v=slow",
        Route::ok(body.clone()).header("content-type", "text/javascript"),
    );
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let authority = format!("localhost:{}", origin.addr.port());
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (addr, ca_pem, authority) = (proxy.addr, proxy.ca_pem(), authority.clone());
        tasks.push(tokio::spawn(async move {
            let (tunnel, head) = connect_tunnel(addr, &authority).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            // A busy client: its ClientHello leaves well after the CONNECT was answered.
            tokio::time::sleep(Duration::from_millis(3500)).await;
            // Only the proxy's CA is trusted: an opaque relay to the origin fails here.
            let tls = tls_through(tunnel, "localhost", &ca_pem).await;
            get_over(tls, &authority, "/main.dart.js?v=slow").await
        }));
    }
    for task in tasks {
        let (status, _, got) = task.await.expect("client");
        assert_eq!(status, 200);
        assert_eq!(got, body);
    }
    assert_eq!(origin.hits("/main.dart.js?v=slow"), 1);
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["tunnels"]["intercepted"], 50, "{stats}");
    assert_eq!(stats["tunnels"]["opaque"], 0, "{stats}");
}

#[tokio::test]
async fn a_client_coming_back_resumes_its_tls_session_with_a_sha256_suite() {
    use rustls::CipherSuite;
    crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https_http1_only(&ca).await;
    origin.route(
        "/app.js?v=1",
        Route::ok("x").header("content-type", "text/javascript"),
    );
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let authority = format!("localhost:{}", origin.addr.port());
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = std::sync::Arc::new(client_config(&proxy.ca_pem(), Some(version)));
        // rustls asks for AES-256-GCM (SHA-384) first; the proxy answers with its own order.
        let asked_first = config.crypto_provider().cipher_suites[0].suite();
        assert_eq!(asked_first, CipherSuite::TLS13_AES_256_GCM_SHA384);
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let (tunnel, _) = connect_tunnel(proxy.addr, &authority).await;
            let tls = tls_with(tunnel, "localhost", config.clone()).await;
            let suite = tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());
            assert!(
                [
                    Some(CipherSuite::TLS13_AES_128_GCM_SHA256),
                    Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
                ]
                .contains(&suite),
                "{suite:?}"
            );
            kinds.push(tls.get_ref().1.handshake_kind());
            let (status, _, _) = get_over(tls, &authority, "/app.js?v=1").await;
            assert_eq!(status, 200);
        }
        use rustls::HandshakeKind::{Full, Resumed};
        assert_eq!(
            kinds,
            [Some(Full), Some(Resumed), Some(Resumed)],
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn plain_http_inside_a_tunnel_is_cached_like_any_request() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    origin.route(
        "/app.js?v=3",
        Route::ok("console.log(3)").header("content-type", "text/javascript"),
    );
    let proxy = TestProxy::start(dir.path(), "{}", None).await;
    let authority = format!("127.0.0.1:{}", origin.addr.port());
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (tunnel, _) = connect_tunnel(proxy.addr, &authority).await;
        let (status, cache, body) = get_over(tunnel, &authority, "/app.js?v=3").await;
        assert_eq!((status, &body[..]), (200, &b"console.log(3)"[..]));
        statuses.push(cache);
    }
    assert_eq!(statuses[0], "asset-proxy; fwd=miss; stored");
    // A hit; `collapsed` when it came while the first answer's entry was still being kept.
    assert!(
        [
            "asset-proxy; hit; detail=memory",
            "asset-proxy; hit; collapsed; detail=memory"
        ]
        .contains(&statuses[1].as_str()),
        "{statuses:?}"
    );
    assert_eq!(origin.hits("/app.js?v=3"), 1);
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_not_relayed() {
    let dir = tempfile::tempdir().expect("dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = listener.local_addr().expect("addr");
    let config = r#"{"clients": {"tls_handshake_timeout_secs": 1}}"#;
    let proxy = TestProxy::start(dir.path(), config, None).await;
    let (mut tunnel, _) = connect_tunnel(proxy.addr, &target.to_string()).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tunnel.read_to_end(&mut rest))
        .await
        .expect("the proxy closes the silent tunnel");
    assert!(read.is_ok_and(|n| n == 0) || rest.is_empty());
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["tunnels"]["silent"], 1, "{stats}");
    assert_eq!(stats["tunnels"]["opaque"], 0, "{stats}");
    // Nothing ever dialled the target.
    let dialled = tokio::time::timeout(Duration::from_millis(1), listener.accept()).await;
    assert!(dialled.is_err(), "the target was never contacted");
}

#[tokio::test]
async fn servers_that_speak_first_and_other_protocols_are_relayed_and_counted() {
    let dir = tempfile::tempdir().expect("dir");
    // A server that greets first, then echoes.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(b"220 ready\r\n").await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let config = format!(
        r#"{{"server_speaks_first": ["127.0.0.1:{}"]}}"#,
        target.port()
    );
    let proxy = TestProxy::start(dir.path(), &config, None).await;

    let (mut tunnel, _) = connect_tunnel(proxy.addr, &target.to_string()).await;
    let mut greeting = [0u8; 11];
    tunnel
        .read_exact(&mut greeting)
        .await
        .expect("the server's greeting comes through before the client says anything");
    assert_eq!(&greeting, b"220 ready\r\n");

    // Not TLS, not HTTP: relayed as it is (here to the same echoing server, on a proxy
    // that does not know it speaks first).
    let other = TestProxy::start(&dir.path().join("other"), "{}", None).await;
    let (mut tunnel, _) = connect_tunnel(other.addr, &target.to_string()).await;
    tunnel.write_all(b"SSH-2.0-test\r\n").await.expect("write");
    let mut echoed = vec![0u8; 11 + 14];
    tunnel.read_exact(&mut echoed).await.expect("relayed");
    assert_eq!(&echoed[..], b"220 ready\r\nSSH-2.0-test\r\n");
    for admin in [proxy.admin, other.admin] {
        let stats = admin_json(admin, "/stats").await;
        assert_eq!(stats["tunnels"]["opaque"], 1, "{stats}");
    }
}
