//! WebSockets through the proxy, against a real WebSocket origin (tokio-tungstenite): `wss://`
//! inside an intercepted tunnel, `ws://` inside a CONNECT tunnel to a plain port, `ws://` as an
//! absolute-form upgrade, through an upstream proxy; an origin that refuses the upgrade, either
//! side closing first, the idle limit, and what allow-lists and offline mode say.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::websocket::{
    round_trip, ws_absolute_form, ws_via_connect, wss_via_proxy, OriginEvent, WsOrigin,
};
use support::{admin_json, crypto, ChainMode, ConnectProxy, TestCa, TestProxy};
use tokio_tungstenite::tungstenite::Message;

const UPGRADE_STATUS: &str = "asset-proxy; fwd=bypass; detail=upgrade";

fn cache_status<T>(response: &http::Response<T>) -> String {
    response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn wss_inside_an_intercepted_tunnel_exchanges_messages() {
    crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = WsOrigin::tls(&ca).await;
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;

    let (mut socket, response) = wss_via_proxy(proxy.addr, &proxy.ca_pem(), &origin, "/echo")
        .await
        .expect("handshake through the proxy");
    assert_eq!(response.status(), 101);
    assert_eq!(cache_status(&response), UPGRADE_STATUS);
    assert_eq!(
        origin.next_event().await,
        OriginEvent::Handshake("/echo".into())
    );
    let seen = origin.handshakes.lock().expect("handshakes")[0].clone();
    for name in ["sec-websocket-key", "sec-websocket-version", "upgrade"] {
        assert!(seen.contains_key(name), "the origin got {name}: {seen:?}");
    }
    assert!(
        !seen.contains_key("proxy-connection"),
        "hop-by-hop headers are dropped"
    );
    for text in ["hello", "second", &"x".repeat(100_000)] {
        assert_eq!(round_trip(&mut socket, text).await, text);
    }
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["websockets"]["opened"], 1, "{stats}");
    assert_eq!(stats["websockets"]["open"], 1, "{stats}");

    // The client closes first: the origin sees the Close frame, the proxy lets the socket go.
    socket.close(None).await.expect("close");
    assert_eq!(origin.next_event().await, OriginEvent::ClientClosed);
    let admin = proxy.admin;
    let mut open = 1;
    while open != 0 {
        open = admin_json(admin, "/stats").await["websockets"]["open"]
            .as_u64()
            .unwrap_or(0);
        tokio::task::yield_now().await;
    }
    let stats = admin_json(admin, "/stats").await;
    assert!(
        stats["websockets"]["bytes_up"].as_u64() > Some(100_000),
        "{stats}"
    );
    assert!(
        stats["websockets"]["bytes_down"].as_u64() > Some(100_000),
        "{stats}"
    );
    assert_eq!(stats["tunnels"]["opaque"], 0, "{stats}");
}

#[tokio::test]
async fn ws_inside_a_connect_tunnel_to_a_plain_port_is_served_not_relayed_blind() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = WsOrigin::plain().await;
    let proxy = TestProxy::start(dir.path(), "{}", None).await;

    let (mut socket, response) = ws_via_connect(proxy.addr, &origin, "/echo")
        .await
        .expect("handshake through the proxy");
    assert_eq!(cache_status(&response), UPGRADE_STATUS);
    assert_eq!(round_trip(&mut socket, "plain").await, "plain");
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["tunnels"]["intercepted"], 1, "{stats}");
    assert_eq!(stats["tunnels"]["opaque"], 0, "{stats}");

    // The origin closes first: the client gets its Close frame.
    socket
        .send(Message::text("bye"))
        .await
        .expect("ask the origin to close");
    let next = tokio::time::timeout(Duration::from_secs(20), socket.next())
        .await
        .expect("in time");
    assert!(
        matches!(next, Some(Ok(Message::Close(_)))),
        "the origin's close reaches the client: {next:?}"
    );
}

#[tokio::test]
async fn ws_as_an_absolute_form_upgrade_request() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = WsOrigin::plain().await;
    let proxy = TestProxy::start(dir.path(), "{}", None).await;

    for url in [
        origin.url("/echo"),
        origin.url("/echo").replacen("ws", "http", 1),
    ] {
        let answer =
            ws_absolute_form(proxy.addr, &url, &[("proxy-connection", "keep-alive")]).await;
        assert_eq!(answer.status, 101, "{url}");
        assert_eq!(
            answer
                .headers
                .get("cache-status")
                .and_then(|v| v.to_str().ok()),
            Some(UPGRADE_STATUS)
        );
        let mut socket = answer.socket.expect("socket");
        assert_eq!(round_trip(&mut socket, &url).await, url);
    }
    assert_eq!(origin.handshake_count(), 2);
}

#[tokio::test]
async fn an_origin_refusing_the_upgrade_is_answered_as_it_said() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = WsOrigin::plain().await;
    let proxy = TestProxy::start(dir.path(), "{}", None).await;

    let answer = ws_absolute_form(proxy.addr, &origin.url("/refuse"), &[]).await;
    assert_eq!(answer.status, 403);
    assert_eq!(&answer.body[..], b"no sockets here");
    assert_eq!(
        answer
            .headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok()),
        Some(UPGRADE_STATUS)
    );
    // And the same inside an intercepted tunnel.
    let ca = TestCa::new(dir.path());
    let tls_origin = WsOrigin::tls(&ca).await;
    let tls_proxy = TestProxy::start(&dir.path().join("tls"), "{}", Some(&ca.path)).await;
    let refused = wss_via_proxy(tls_proxy.addr, &tls_proxy.ca_pem(), &tls_origin, "/refuse").await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        Err(other) => panic!("expected the origin's 403, got {other}"),
        Ok(_) => panic!("expected the origin's 403, got a socket"),
    }
}

#[tokio::test]
async fn an_idle_socket_is_closed_after_the_limit() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = WsOrigin::plain().await;
    let config = r#"{"clients": {"websocket_idle_secs": 1}}"#;
    let proxy = TestProxy::start(dir.path(), config, None).await;

    let (mut socket, _) = ws_via_connect(proxy.addr, &origin, "/echo")
        .await
        .expect("handshake");
    assert_eq!(round_trip(&mut socket, "once").await, "once");
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(20), socket.next())
        .await
        .expect("the proxy closes the idle socket");
    assert!(
        !matches!(ended, Some(Ok(Message::Text(_)))),
        "nothing but the end: {ended:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        origin.next_event().await,
        OriginEvent::Handshake("/echo".into())
    );
    assert_eq!(origin.next_event().await, OriginEvent::Ended);
}

#[tokio::test]
async fn a_shutdown_ends_open_sockets_at_once() {
    crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = WsOrigin::tls(&ca).await;
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    let (mut socket, _) = wss_via_proxy(proxy.addr, &proxy.ca_pem(), &origin, "/echo")
        .await
        .expect("handshake");
    assert_eq!(round_trip(&mut socket, "before").await, "before");
    // The shutdown grace is 10 s: a socket still open would hold the proxy that long.
    tokio::time::timeout(Duration::from_secs(5), proxy.stop())
        .await
        .expect("the proxy stops without waiting for the socket");
    let ended = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("the client sees its socket end");
    assert!(
        !matches!(ended, Some(Ok(Message::Text(_)))),
        "nothing but the end: {ended:?}"
    );
    assert_eq!(
        origin.next_event().await,
        OriginEvent::Handshake("/echo".into())
    );
    assert_eq!(origin.next_event().await, OriginEvent::Ended);
}

#[tokio::test]
async fn sockets_go_through_the_upstream_proxy() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = WsOrigin::plain().await;
    let chain = ConnectProxy::start(ChainMode::Open).await;
    let config = format!(r#"{{"upstream": {{"proxy": "http://{}"}}}}"#, chain.addr);
    let proxy = TestProxy::start(dir.path(), &config, None).await;

    let answer = ws_absolute_form(proxy.addr, &origin.url("/echo"), &[]).await;
    assert_eq!(answer.status, 101);
    let mut socket = answer.socket.expect("socket");
    assert_eq!(round_trip(&mut socket, "chained").await, "chained");
    assert_eq!(chain.tunnel_count(), 1);
    assert_eq!(
        chain.tunnels.lock().expect("tunnels")[0],
        origin.authority()
    );
}

#[tokio::test]
async fn allow_lists_and_offline_mode_refuse_before_any_dial() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = WsOrigin::plain().await;
    let config = r#"{"upstream": {"allow_hosts": ["example.com"]}}"#;
    let proxy = TestProxy::start(dir.path(), config, None).await;
    let refused = ws_absolute_form(proxy.addr, &origin.url("/echo"), &[]).await;
    assert_eq!(refused.status, 403);

    let offline = TestProxy::start_with(&dir.path().join("offline"), "{}", None, |config| {
        config.policy.mode = asset_proxy::config::Mode::Replay;
    })
    .await;
    let answer = ws_absolute_form(offline.addr, &origin.url("/echo"), &[]).await;
    assert_eq!(answer.status, 504);
    assert!(String::from_utf8_lossy(&answer.body).contains("offline"));
    assert_eq!(origin.handshake_count(), 0, "no dial");
}

#[tokio::test]
async fn many_sockets_at_once_each_get_their_own_echo() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = WsOrigin::plain().await;
    let proxy = TestProxy::start(dir.path(), "{}", None).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (addr, url) = (proxy.addr, origin.url("/echo"));
        tasks.push(tokio::spawn(async move {
            let answer = ws_absolute_form(addr, &url, &[]).await;
            let mut socket = answer.socket.expect("socket");
            let text = format!("socket {i}");
            assert_eq!(round_trip(&mut socket, &text).await, text);
            socket.close(None).await.expect("close");
        }));
    }
    for task in tasks {
        task.await.expect("socket task");
    }
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["websockets"]["opened"], 20, "{stats}");
}
