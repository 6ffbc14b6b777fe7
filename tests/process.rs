//! The `proxy` binary as users run it: real processes, real signals, curl and Python from the
//! shell, the CA files on disk, and a bad config.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use std::process::Command;

use support::{client_via, get, random_bytes, Origin, ProxyProcess, Route, TestCa};

fn proxy_args(dir: &Path, ca: &TestCa) -> Vec<String> {
    vec![
        "--cache-dir".into(),
        dir.join("cache").display().to_string(),
        "--ca-dir".into(),
        dir.join("certs").display().to_string(),
        "--upstream-ca".into(),
        ca.path.display().to_string(),
    ]
}

fn start(dir: &Path, args: &[String]) -> ProxyProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ProxyProcess::start(dir, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy_with_its_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let body = random_bytes(500_000, 11);
    origin.route("/main.dart.js?v=curl", Route::ok(body.clone()));
    let proxy = start(dir.path(), &proxy_args(dir.path(), &ca));
    let url = origin.url("/main.dart.js?v=curl");
    let ca_file = dir.path().join("certs/ca.pem");
    let out = dir.path().join("out.js");

    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (proxy_url, url, ca_file, target) = (
            format!("http://{}", proxy.addr),
            url.clone(),
            ca_file.clone(),
            out.clone(),
        );
        let output = tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["-sS", "--fail", "-D", "-", "-o"])
                .arg(&target)
                .args(["-x", &proxy_url, "--cacert"])
                .arg(&ca_file)
                .arg(&url)
                .output()
                .expect("run curl")
        })
        .await
        .expect("curl task");
        let headers = String::from_utf8_lossy(&output.stdout).to_lowercase();
        assert!(
            output.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(std::fs::read(&out).expect("body"), body);
        statuses.push(
            headers
                .lines()
                .filter_map(|line| line.strip_prefix("cache-status: "))
                .next_back()
                .unwrap_or("")
                .trim()
                .to_owned(),
        );
    }
    assert_eq!(
        statuses,
        [
            "asset-proxy; fwd=miss; stored",
            "asset-proxy; hit; detail=memory"
        ]
    );
    assert_eq!(origin.hits("/main.dart.js?v=curl"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_a_restart_serves_from_memory_filled_from_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    let body = random_bytes(1_000_000, 12);
    origin.route(
        "/canvaskit/0123456789abcdef/canvaskit.wasm",
        Route::ok(body.clone()),
    );
    let url = origin.url("/canvaskit/0123456789abcdef/canvaskit.wasm");
    let args = proxy_args(dir.path(), &ca);

    let proxy = start(dir.path(), &args);
    let ca_pem = std::fs::read_to_string(dir.path().join("certs/ca.pem")).expect("CA written");
    let (status, cache, got) = get(&client_via(proxy.addr, &ca_pem), &url).await;
    assert_eq!(
        (status, cache.as_str(), got == body),
        (200, "asset-proxy; fwd=miss; stored", true)
    );
    let exit = tokio::task::spawn_blocking(move || proxy.terminate())
        .await
        .expect("terminate");
    assert!(exit.success(), "exit status {exit:?}");

    // Pre-warming fills memory from disk before the first request asks.
    let proxy = start(dir.path(), &args);
    let line = proxy.wait_for_line(|l| l.contains("memory tier pre-warmed"));
    assert!(line.contains("entries=1"), "{line}");
    let (status, cache, got) = get(&client_via(proxy.addr, &ca_pem), &url).await;
    assert_eq!(
        (status, cache.as_str(), got == body),
        (200, "asset-proxy; hit; detail=memory", true)
    );
    let stats = support::admin_json(proxy.admin, "/stats").await;
    assert_eq!(stats["prewarmed"]["entries"], 1, "{stats}");
    assert_eq!(stats["prewarmed"]["bytes"], 1_000_000, "{stats}");
    assert_eq!(origin.hits("/canvaskit/0123456789abcdef/canvaskit.wasm"), 1);
}

#[test]
fn bad_config_names_the_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            r#"{"memory": {"max_mb": "lots"}}"#,
            "memory.max_mb: invalid type",
        ),
        (
            r#"{"keep_versions": 0}"#,
            "keep_versions: must be greater than 0",
        ),
        (
            r#"{"rules": [{"glob": "a/**", "action": "cache", "ttl": 5}]}"#,
            "rules[0].ttl: unknown field",
        ),
        (
            r#"{"rules": [{"regex": "(", "action": "cache"}]}"#,
            "rules[0].regex",
        ),
        ("{not json", "(top level)"),
    ];
    for (text, want) in cases {
        let file = dir.path().join("bad.json");
        std::fs::write(&file, text).expect("write config");
        let output = Command::new(env!("CARGO_BIN_EXE_proxy"))
            .current_dir(dir.path())
            .args(["--port", "0", "--config"])
            .arg(&file)
            .output()
            .expect("run proxy");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text} was accepted");
        assert!(
            stderr.contains(want),
            "{text}: expected {want:?} in {stderr}"
        );
        assert!(
            stderr.contains("bad.json"),
            "the error names the file: {stderr}"
        );
    }
    let missing = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["--config", "/nonexistent/proxy.json"])
        .output()
        .expect("run proxy");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("cannot read config file /nonexistent/proxy.json"));
}

#[test]
fn the_ca_is_created_once_with_a_private_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    let args = ["--ca-dir", "certs", "--cache-dir", "cache"];
    let first = ProxyProcess::start(dir.path(), &args);
    let key_mode = std::fs::metadata(certs.join("ca-key.pem"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(certs.join("ca.pem")).expect("cert");
    assert!(first.terminate().success());

    let second = ProxyProcess::start(dir.path(), &args);
    assert_eq!(
        std::fs::read_to_string(certs.join("ca.pem")).expect("cert"),
        pem,
        "reused, not recreated"
    );
    assert!(second.terminate().success());

    let (_, ca) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    let ca = ca.parse_x509().expect("certificate");
    let constraints = ca
        .basic_constraints()
        .expect("extension")
        .expect("basicConstraints");
    assert!(constraints.value.ca);
    assert!(ca
        .key_usage()
        .expect("extension")
        .expect("keyUsage")
        .value
        .key_cert_sign());
    assert_eq!(ca.version(), x509_parser::x509::X509Version::V3);

    std::fs::set_permissions(
        certs.join("ca-key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let refused = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .current_dir(dir.path())
        .args(["--port", "0"])
        .args(args)
        .output()
        .expect("run proxy");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("chmod 600"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_certificates_satisfy_strict_clients() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/app.js?v=strict", Route::ok("strict ok"));
    let proxy = start(dir.path(), &proxy_args(dir.path(), &ca));

    // Python's ssl with VERIFY_X509_STRICT, through a CONNECT tunnel, by host name.
    let script = r#"
import http.client, ssl, sys
proxy_port, origin_port, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
context = ssl.create_default_context(cafile=cafile)
context.verify_flags |= ssl.VERIFY_X509_STRICT
connection = http.client.HTTPSConnection("127.0.0.1", proxy_port, context=context, timeout=30)
connection.set_tunnel("localhost", origin_port)
connection.request("GET", "/app.js?v=strict")
response = connection.getresponse()
print(response.status, response.read().decode())
"#;
    let (proxy_port, origin_port) = (
        proxy.addr.port().to_string(),
        origin.addr.port().to_string(),
    );
    let cafile = dir.path().join("certs/ca.pem");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", script, &proxy_port, &origin_port])
            .arg(&cafile)
            .output()
            .expect("run python3")
    })
    .await
    .expect("python task");
    assert!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "200 strict ok"
    );

    // The leaf for an IP literal, inspected field by field.
    let ca_pem = std::fs::read_to_string(dir.path().join("certs/ca.pem")).expect("CA");
    let der = leaf_for(
        proxy.addr,
        &format!("127.0.0.1:{}", origin.addr.port()),
        &ca_pem,
    )
    .await;
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).expect("leaf parses");
    let san = leaf
        .subject_alternative_name()
        .expect("extension")
        .expect("SAN");
    assert!(san.value.general_names.iter().any(|name| matches!(name, x509_parser::extensions::GeneralName::IPAddress(ip) if *ip == [127, 0, 0, 1])));
    let validity = leaf.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
    assert!(days <= 180, "validity {days} days");
    assert!(
        leaf.extended_key_usage()
            .expect("extension")
            .expect("EKU")
            .value
            .server_auth
    );
    assert!(leaf
        .key_usage()
        .expect("extension")
        .expect("keyUsage")
        .value
        .digital_signature());
    assert!(leaf
        .get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .expect("unique")
        .is_some());
    assert!(leaf.raw_serial().len() >= 8, "random serial");
}

/// Opens a CONNECT tunnel to `target` through the proxy and returns the certificate presented.
async fn leaf_for(proxy: std::net::SocketAddr, target: &str, ca_pem: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    support::crypto();
    let mut stream = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect proxy");
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("send CONNECT");
    let mut reply = Vec::new();
    while !reply.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .expect("read CONNECT reply");
        reply.push(byte[0]);
    }
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA");
    roots.add(ca).expect("add CA");
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let host = target
        .rsplit_once(':')
        .map_or(target, |(host, _)| host)
        .to_owned();
    let name = rustls::pki_types::ServerName::try_from(host).expect("server name");
    let tls = connector
        .connect(name, stream)
        .await
        .expect("TLS through the proxy");
    let certs = tls.get_ref().1.peer_certificates().expect("certificates");
    certs[0].to_vec()
}

#[test]
fn help_explains_every_option() {
    let output = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .arg("--help")
        .output()
        .expect("run proxy");
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--port",
        "--bind",
        "--cache-dir",
        "--ca-dir",
        "--config",
        "--upstream-ca",
        "--offline",
        "--log",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn listening_beyond_loopback_needs_allow_remote_and_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str], auth: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_proxy"));
        command
            .current_dir(dir.path())
            .args(["--port", "0", "--bind", "0.0.0.0"])
            .args(args)
            .env_remove("ASSET_PROXY_AUTH");
        if let Some(auth) = auth {
            command.env("ASSET_PROXY_AUTH", auth);
        }
        command.output().expect("run proxy")
    };
    let refused = run(&[], None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-remote"));
    let no_credentials = run(&["--allow-remote"], None);
    assert!(!no_credentials.status.success());
    assert!(String::from_utf8_lossy(&no_credentials.stderr).contains("ASSET_PROXY_AUTH"));
    let bad_credentials = run(&["--allow-remote"], Some("nopassword"));
    assert!(String::from_utf8_lossy(&bad_credentials.stderr).contains("user:password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_show_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path());
    let origin = Origin::https(&ca).await;
    origin.route("/app.js?v=1", Route::ok("app"));
    let upstream_ca = ca.path.display().to_string();
    let args = [
        "--cache-dir",
        "cache",
        "--ca-dir",
        "certs",
        "--upstream-ca",
        &upstream_ca,
        "--bind",
        "0.0.0.0",
        "--allow-remote",
        "--log",
        "debug",
    ];
    // The child inherits this test process's environment (each test runs in its own process).
    std::env::set_var("ASSET_PROXY_AUTH", "fleet:proxy-secret-3");
    let proxy = start(
        dir.path(),
        &args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
    );
    let ca_pem = std::fs::read_to_string(dir.path().join("certs/ca.pem")).expect("CA");
    let proxy_url = reqwest::Proxy::all(format!("http://127.0.0.1:{}", proxy.addr.port()))
        .expect("proxy")
        .basic_auth("fleet", "proxy-secret-3");
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .proxy(proxy_url)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"))
        .build()
        .expect("client");
    for _ in 0..2 {
        let response = client
            .get(origin.url("/app.js?v=1"))
            .header("authorization", "Bearer auth-secret-1")
            .header("cookie", "session=cookie-secret-2")
            .send()
            .await
            .expect("request");
        assert_eq!(response.text().await.expect("body"), "app");
    }
    let log = proxy.log();
    assert!(tokio::task::spawn_blocking(move || proxy.terminate())
        .await
        .expect("stop")
        .success());
    assert!(
        log.iter()
            .any(|line| line.contains("request") && line.contains("/app.js?v=1")),
        "the requests were logged"
    );
    let encoded = "ZmxlZXQ6cHJveHktc2VjcmV0LTM="; // base64 of fleet:proxy-secret-3
    for secret in [
        "auth-secret-1",
        "cookie-secret-2",
        "proxy-secret-3",
        encoded,
    ] {
        assert!(
            !log.iter().any(|line| line.contains(secret)),
            "{secret} appears in the log"
        );
    }
}
