//! Security round 2, each finding as a test that failed before its fix: the admin API out of
//! reach of the proxy and of other sites, deadlines and a descriptor reserve against idle
//! connections, no poisoning through unkeyed headers, bounded memory for abandoned fills,
//! clear refusals of broken origin framing, and a cache and CA directory that cannot be
//! turned against files elsewhere.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::websocket::{connect_tunnel, tls_through};
use support::{
    admin_json, files_in, get, plain_client, random_bytes, run_proxy, Origin, ProxyProcess, Route,
    TestCa, TestProxy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw HTTP/1.1 exchange: what came back before the proxy closed the connection (or
/// `limit` passed).
async fn raw(addr: SocketAddr, request: &str, limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A name other than `localhost` that resolves to 127.0.0.1 here (the machine's own name in
/// /etc/hosts, as Debian writes it).
async fn loopback_name() -> String {
    let own = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    for name in [own.trim(), "localhost.", "localhost.localdomain"] {
        if name.is_empty() {
            continue;
        }
        let resolved = tokio::net::lookup_host((name, 80)).await;
        if resolved.is_ok_and(|mut addrs| addrs.any(|a| a.ip().to_string() == "127.0.0.1")) {
            return name.to_owned();
        }
    }
    panic!("no name besides localhost resolves to 127.0.0.1 on this machine");
}

#[tokio::test]
async fn the_admin_api_cannot_be_reached_through_the_proxy_by_any_spelling() {
    let dir = tempfile::tempdir().expect("dir");
    let proxy = TestProxy::start(dir.path(), "{}", None).await;
    let port = proxy.admin.port();
    let name = loopback_name().await;
    let spellings = [
        format!("http://0.0.0.0:{port}/stats"),
        format!("http://[::ffff:127.0.0.1]:{port}/stats"),
        format!("http://127.1:{port}/stats"),
        format!("http://2130706433:{port}/stats"),
        format!("http://{name}:{port}/stats"),
        format!("http://LocalHost:{port}/stats"),
    ];
    let client = plain_client(proxy.addr);
    for url in &spellings {
        let response = client.get(url).send().await.expect("answer");
        assert_eq!(response.status(), 508, "{url}");
        // Nor a write: nothing is purged.
        let response = client
            .post(url.replace("/stats", "/purge"))
            .header("content-type", "application/json")
            .body(r#"{"all": true}"#)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 508, "{url}");
    }
    // Through a CONNECT tunnel to a name of it, plain HTTP inside.
    let (mut tunnel, head) = connect_tunnel(proxy.addr, &format!("{name}:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnel
        .write_all(format!("GET /stats HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut answer = vec![0u8; 12];
    tunnel.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"HTTP/1.1 508");
    // The proxy itself by a name: no tunnel inside a tunnel inside a tunnel.
    let (mut tunnel, _) =
        connect_tunnel(proxy.addr, &format!("{name}:{}", proxy.addr.port())).await;
    tunnel
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .expect("write");
    let mut answer = vec![0u8; 12];
    tunnel.read_exact(&mut answer).await.expect("answer");
    assert_eq!(
        &answer, b"HTTP/1.1 400",
        "a CONNECT inside a tunnel is refused"
    );
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["requests"], 2 * spellings.len() + 1, "{stats}");
}

#[tokio::test]
async fn the_admin_api_refuses_other_sites_and_other_host_names() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/app.js?v=1", Route::ok("kept"));
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    get(&proxy.client(), &origin.url("/app.js?v=1")).await;
    proxy.settled().await;
    let admin = proxy.admin;
    let purge = |content_type: &'static str, origin_header: Option<&'static str>| async move {
        let mut request = reqwest::Client::new()
            .post(format!("http://{admin}/purge"))
            .header("content-type", content_type)
            .body(r#"{"all": true}"#);
        if let Some(value) = origin_header {
            request = request.header("origin", value);
        }
        request.send().await.expect("answer").status().as_u16()
    };
    // What a page on another site can send without asking the browser first.
    assert_eq!(purge("text/plain", Some("http://evil.test")).await, 415);
    assert_eq!(
        purge("application/json", Some("http://evil.test")).await,
        403
    );
    assert_eq!(purge("application/json", Some("null")).await, 403);
    assert_eq!(
        admin_json(admin, "/stats").await["tiers"]["disk_entries"],
        1,
        "nothing purged"
    );
    // DNS rebinding: a foreign name that resolves to 127.0.0.1 still says who it wants.
    let raw_answer = raw(
        admin,
        "GET /stats HTTP/1.1\r\nHost: rebind.evil.test:80\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(raw_answer.starts_with("HTTP/1.1 421"), "{raw_answer}");
    // Its own origin may.
    let own = format!("http://127.0.0.1:{}", admin.port());
    let own: &'static str = Box::leak(own.into_boxed_str());
    assert_eq!(purge("application/json", Some(own)).await, 200);
}

#[tokio::test]
async fn the_admin_token_comes_from_a_file_and_bearer_is_any_case() {
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "t0k3n-from-a-file\n").expect("token file");
    let proxy = ProxyProcess::start(
        dir.path(),
        &["--admin-token-file", token.to_str().expect("utf-8")],
    );
    let stats = |auth: Option<&'static str>| {
        let url = format!("http://{}/stats", proxy.admin);
        async move {
            let mut request = reqwest::Client::new().get(url);
            if let Some(value) = auth {
                request = request.header("authorization", value);
            }
            request.send().await.expect("answer").status().as_u16()
        }
    };
    assert_eq!(stats(None).await, 401);
    assert_eq!(stats(Some("Bearer t0k3n-from-a-file")).await, 200);
    assert_eq!(stats(Some("bearer t0k3n-from-a-file")).await, 200);
    assert_eq!(stats(Some("BEARER t0k3n-from-a-file")).await, 200);
    assert_eq!(stats(Some("Basic t0k3n-from-a-file")).await, 401);
    let ps =
        std::fs::read_to_string(format!("/proc/{}/cmdline", proxy.child.id())).expect("cmdline");
    assert!(
        !ps.contains("t0k3n"),
        "the token is not on the command line"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_in_every_phase() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/ok.js?v=1", Route::ok("ok"));
    let config = r#"{"clients": {"idle_timeout_secs": 1, "tls_handshake_timeout_secs": 1}}"#;
    let proxy = TestProxy::start(dir.path(), config, Some(&ca.path)).await;
    // A connection that sends nothing.
    let silent = TcpStream::connect(proxy.addr).await.expect("connect");
    // A CONNECT followed by silence.
    let (after_connect, _) =
        connect_tunnel(proxy.addr, &format!("localhost:{}", origin.addr.port())).await;
    // A keep-alive connection after one request.
    let plain = Origin::http().await;
    plain.route("/ok.js?v=1", Route::ok("ok"));
    let mut kept = TcpStream::connect(proxy.addr).await.expect("connect");
    kept.write_all(
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
            plain.url("/ok.js?v=1")
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.expect("an answer");
    for (what, stream) in [
        ("silent", silent),
        ("after CONNECT", after_connect),
        ("keep-alive", kept),
    ] {
        let closed = closed_within(stream, Duration::from_secs(20)).await;
        assert!(closed, "{what} connection closed");
    }
    // A TLS tunnel with no request, and an idle HTTP/2 connection inside one.
    let (tunnel, _) =
        connect_tunnel(proxy.addr, &format!("localhost:{}", origin.addr.port())).await;
    let tls = tls_through(tunnel, "localhost", &proxy.ca_pem()).await;
    let mut rest = Vec::new();
    let mut tls = tls;
    let ended = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "a TLS tunnel with no request is closed");
    let client = proxy.client();
    let response = client
        .get(origin.url("/ok.js?v=1"))
        .send()
        .await
        .expect("h2");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await.expect("body"), "ok");
    let stats = proxy.app.stats().clone();
    support::wait_until("the idle HTTP/2 connection is closed", || {
        stats.clients_closed_idle.get() >= 4
    })
    .await;
    let stats = admin_json(proxy.admin, "/stats").await;
    assert!(stats["clients"]["open"].is_u64(), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_flood_leaves_room_for_a_real_client() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    origin.route("/real.js?v=1", Route::ok("served"));
    let proxy = ProxyProcess::start_with_fd_limit(dir.path(), &[], 256);
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(proxy.addr)).await
        {
            idle.push(stream);
        }
    }
    a_real_client_is_served_at_once(proxy.addr, &origin).await;
    let stats = admin_json(proxy.admin, "/stats").await;
    assert!(
        stats["clients"]["closed_for_descriptors"].as_u64() > Some(0),
        "{stats}"
    );
    let accept_lines = proxy
        .log()
        .iter()
        .filter(|line| line.contains("accept failed"))
        .count();
    assert!(
        accept_lines <= 1,
        "a flood is one trouble, logged once a minute: {accept_lines}"
    );
    drop(idle);
}

/// Asks for an asset through the proxy at `addr`, which must answer it at once.
async fn a_real_client_is_served_at_once(addr: SocketAddr, origin: &Origin) {
    let started = std::time::Instant::now();
    let (status, _, body) = get(&plain_client(addr), &origin.url("/real.js?v=1")).await;
    assert_eq!((status, &body[..]), (200, &b"served"[..]));
    assert!(started.elapsed() < Duration::from_secs(5), "served at once");
}

/// Whether the proxy closes `stream` within `limit`.
async fn closed_within(mut stream: TcpStream, limit: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// A CONNECT to `authority` whose tunnel then carries `first` (the proxy relays bytes that are
/// neither TLS nor HTTP to the origin as they are; no bytes leave the tunnel waiting for its
/// first); `None` when the proxy did not open it in time.
async fn tunnel_sending(proxy: SocketAddr, authority: &str, first: &[u8]) -> Option<TcpStream> {
    let open = async {
        let mut stream = TcpStream::connect(proxy).await.ok()?;
        let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        head.starts_with(b"HTTP/1.1 200").then_some(())?;
        stream.write_all(first).await.ok()?;
        Some(stream)
    };
    tokio::time::timeout(Duration::from_secs(2), open)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_relayed_tunnels_are_closed_first_when_descriptors_run_short() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    origin.route("/real.js?v=1", Route::ok("served"));
    // An origin that takes connections and says nothing, as a quiet WebSocket or chat server.
    let quiet = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let quiet_addr = quiet.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = quiet.accept().await {
            held.push(stream);
        }
    });
    let proxy = ProxyProcess::start_with_fd_limit(dir.path(), &[], 256);
    // Each relayed tunnel holds two of the proxy's descriptors: 150 of them need more than it
    // has.
    let mut tunnels = Vec::new();
    for _ in 0..150 {
        let authority = quiet_addr.to_string();
        if let Some(tunnel) = tunnel_sending(proxy.addr, &authority, b"\x00\x01 not http").await {
            tunnels.push(tunnel);
        }
    }
    a_real_client_is_served_at_once(proxy.addr, &origin).await;
    assert!(
        closed_within(tunnels.remove(0), Duration::from_secs(10)).await,
        "the quietest tunnel was closed first"
    );
    let stats = admin_json(proxy.admin, "/stats").await;
    assert!(
        stats["clients"]["closed_for_descriptors"].as_u64() > Some(0),
        "{stats}"
    );
    let open = stats["clients"]["open"].as_u64().expect("open");
    assert!(open > 50, "relays are counted as open connections: {stats}");
    drop(tunnels);
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_waiting_for_their_first_bytes_are_closed_when_descriptors_run_short() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    origin.route("/real.js?v=1", Route::ok("served"));
    // The default deadline for a tunnel's first bytes (10 s) is longer than "at once".
    let proxy = ProxyProcess::start_with_fd_limit(dir.path(), &[], 256);
    let mut tunnels = Vec::new();
    // Until one is not answered: then the client below comes while the flood holds everything.
    while tunnels.len() < 300 {
        match tunnel_sending(proxy.addr, "localhost:443", b"").await {
            Some(tunnel) => tunnels.push(tunnel),
            None => break,
        }
    }
    a_real_client_is_served_at_once(proxy.addr, &origin).await;
    assert!(
        closed_within(tunnels.remove(0), Duration::from_secs(5)).await,
        "the longest waiting tunnel was closed first"
    );
    drop(tunnels);
}

#[tokio::test]
async fn a_reflecting_origin_cannot_poison_a_pinned_asset() {
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    let proxy = TestProxy::start(dir.path(), "{}", None).await;
    let client = plain_client(proxy.addr);
    for (n, header) in asset_proxy::config::DEFAULT_UNKEYED_HEADERS
        .iter()
        .enumerate()
    {
        let path = format!("/poison{n}.js?v=1");
        origin.route(&path, Route::reflecting(header));
        let url = origin.url(&path);
        let attack = client
            .get(&url)
            .header(*header, "evil.test")
            .send()
            .await
            .expect("attack");
        let body = attack.text().await.expect("body");
        assert!(
            !body.contains("evil"),
            "{header}: the origin never saw it: {body}"
        );
        proxy.settled().await;
        let (_, cache, body) = get(&client, &url).await;
        assert!(cache.contains("hit"), "{header}: {cache}");
        assert!(!String::from_utf8_lossy(&body).contains("evil"), "{header}");
    }
    // Requests the cache neither answers nor stores keep them.
    origin.route("/api/echo", Route::reflecting("x-forwarded-host"));
    let response = client
        .post(origin.url("/api/echo"))
        .header("x-forwarded-host", "kept.test")
        .send()
        .await
        .expect("post");
    assert!(response.text().await.expect("body").contains("kept.test"));
}

/// Resident memory now and at its peak, from /proc.
fn resident_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_fills_stream_to_disk_and_memory_stays_bounded() {
    const MIB: usize = 1024 * 1024;
    let dir = tempfile::tempdir().expect("dir");
    let origin = Origin::http().await;
    let body = random_bytes(48 * MIB, 48);
    for n in 0..12 {
        origin.route(&format!("/big{n}.wasm?v=1"), Route::ok(body.clone()));
    }
    let config = dir.path().join("proxy.json");
    std::fs::write(
        &config,
        r#"{"memory": {"max_mb": 16}, "disk": {"compress": false}}"#,
    )
    .expect("config");
    let proxy = ProxyProcess::start(dir.path(), &["--config", config.to_str().expect("utf-8")]);
    let (baseline, _) = resident_kib(proxy.child.id());
    // Twelve clients start a download each and hang up after the first bytes.
    let mut clients = Vec::new();
    for n in 0..12 {
        let url = origin.url(&format!("/big{n}.wasm?v=1"));
        let client = plain_client(proxy.addr);
        clients.push(tokio::spawn(async move {
            let mut response = client.get(url).send().await.expect("response");
            let first = response.chunk().await.expect("body").expect("some bytes");
            assert!(!first.is_empty());
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    // The fills go on without them, onto disk.
    let admin = proxy.admin;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while admin_json(admin, "/stats").await["stored"].as_u64() < Some(12) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fills completed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, peak) = resident_kib(proxy.child.id());
    eprintln!("resident KiB: {baseline} at start, {peak} at peak");
    assert!(
        peak < baseline + (16 + 64) * 1024,
        "peak {peak} KiB over a {baseline} KiB start: the bodies did not stay in memory"
    );
    // What the fills wrote serves the next clients: whole, ranged, HEAD.
    let client = plain_client(proxy.addr);
    let url = origin.url("/big3.wasm?v=1");
    let (status, cache, got) = get(&client, &url).await;
    assert_eq!(
        (status, cache.as_str()),
        (200, "asset-proxy; hit; detail=disk")
    );
    assert!(got == body, "byte for byte");
    let ranged = client
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .expect("range");
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.expect("bytes"), body.slice(1000..2000));
    let head = client.head(&url).send().await.expect("head");
    assert_eq!(
        head.headers()["content-length"],
        (48 * MIB).to_string().as_str()
    );
    assert_eq!(origin.hits("/big3.wasm?v=1"), 1);
    // No spill file is left behind.
    let temps: Vec<_> = files_in(&dir.path().join("cache"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

/// An origin that answers every connection with `answer`, as bytes, then closes.
async fn raw_origin(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = stream.write_all(answer).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn broken_origin_framing_is_a_clear_502_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("dir");
    let proxy = TestProxy::start(dir.path(), "{}", None).await;
    let conflicting = raw_origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nContent-Type: text/javascript\r\n\r\n10\r\nsmuggled-payload\r\n0\r\n\r\n",
    )
    .await;
    let request = |addr: SocketAddr| {
        format!(
            "GET http://{addr}/app.js?v=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
    };
    let answer = raw(proxy.addr, &request(conflicting), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(
        answer.contains("Content-Length and Transfer-Encoding"),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let keep_alive = raw(
        proxy.addr,
        &request(conflicting).replace("Connection: close\r\n", ""),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        keep_alive.starts_with("HTTP/1.1 502"),
        "the connection is closed after it: {keep_alive}"
    );
    assert!(!answer.contains("smuggled"), "{answer}");

    let overflow = raw_origin(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nx\r\n",
    )
    .await;
    let answer = raw(proxy.addr, &request(overflow), Duration::from_secs(10)).await;
    let status = answer.lines().next().unwrap_or("");
    assert!(
        status.starts_with("HTTP/1.1 502") || !answer.contains("\r\n0\r\n\r\n"),
        "refused, or cut off without a clean end: {answer}"
    );
    proxy.settled().await;
    let stats = admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["stored"], 0, "{stats}");

    // Many headers, as some origins send, are fine up to the limit.
    let mut many = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
    for n in 0..200 {
        many.push_str(&format!("X-Header-{n}: value {n}\r\n"));
    }
    many.push_str("\r\nok");
    let many: &'static [u8] = Box::leak(many.into_bytes().into_boxed_slice());
    let answer = raw(
        proxy.addr,
        &request(raw_origin(many).await),
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_ca_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("certs");
    std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, _, err) = run_proxy(dir.path(), &["ca", "export"]);
    assert_ne!(code, 0);
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(err.contains("chmod go-w"), "{err}");
}

#[tokio::test]
async fn verify_repair_never_follows_a_symlink_out_of_the_cache() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/app.js?v=1", Route::ok("real entry"));
    let proxy = TestProxy::start(dir.path(), "{}", Some(&ca.path)).await;
    get(&proxy.client(), &origin.url("/app.js?v=1")).await;
    proxy.stop().await;

    let outside = tempfile::tempdir().expect("outside");
    let precious_name = "ab".to_owned() + &"c".repeat(62);
    let precious = outside.path().join(&precious_name);
    std::fs::write(&precious, "not a cache entry").expect("precious");
    std::fs::write(outside.path().join(".tmp-precious"), "also precious").expect("temp");
    let entries = dir.path().join("cache/v1/entries");
    // A link to a file, and a fan-out directory that is a link to a directory elsewhere.
    std::os::unix::fs::symlink(&precious, entries.join("linked-file")).expect("link");
    std::os::unix::fs::symlink(outside.path(), entries.join("zz")).expect("link");
    let cache_arg = dir.path().join("cache").display().to_string();
    let (_, out, _) = run_proxy(
        dir.path(),
        &["--cache-dir", &cache_arg, "cache", "verify", "--repair"],
    );
    assert!(out.contains("symbolic link"), "reported: {out}");
    assert!(precious.exists(), "the linked file outside survives");
    assert!(
        outside.path().join(".tmp-precious").exists(),
        "so does a temp-looking file outside"
    );
    assert!(
        entries.join("zz").exists() && entries.join("linked-file").exists(),
        "links left alone"
    );
}
