//! Test support: real loopback origins (HTTP and HTTPS with their own test CA) that count the
//! requests they get, a proxy running in-process on a temp dir, the proxy binary as a real
//! process, and clients that trust only the proxy's CA.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use asset_proxy::{App, Config};

pub mod redis_server;
pub mod socks_server;
pub mod websocket;

type OriginBody = BoxBody<Bytes, std::io::Error>;

/// Installs ring as the process crypto provider once (reqwest and test servers use it).
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A CA for test origins, written to `<dir>/origin-ca.pem`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
    pub path: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "origin test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        let path = dir.join("origin-ca.pem");
        std::fs::write(&path, cert.pem()).expect("write origin CA");
        TestCa {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
            path,
        }
    }

    /// A server config for `localhost` and 127.0.0.1, offering h2 and HTTP/1.1 (or 1.1 only).
    pub fn server_config(&self, http2: bool) -> Arc<rustls::ServerConfig> {
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .expect("server config");
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Arc::new(config)
    }
}

/// What an origin answers on one path.
#[derive(Clone)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Send only this many body bytes after announcing them all, then break the connection.
    pub truncate_at: Option<usize>,
    /// Hold the response until this is notified.
    pub gate: Option<Arc<Notify>>,
    /// Send the body as the test hands over its parts (ignoring `body`), ending when the
    /// sender is dropped. Taken by the first request.
    pub stream: Option<Arc<Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Bytes>>>>>,
    /// Answer with the value of this request header (as origins that build URLs from
    /// `X-Forwarded-Host` do), or `none`.
    pub reflect: Option<String>,
}

impl Route {
    pub fn ok(body: impl Into<Bytes>) -> Route {
        Route {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            truncate_at: None,
            gate: None,
            stream: None,
            reflect: None,
        }
    }

    /// A script whose body is the value of the request header `name`.
    pub fn reflecting(name: &str) -> Route {
        let mut route = Route::ok(Bytes::new()).header("content-type", "text/javascript");
        route.reflect = Some(name.to_owned());
        route
    }

    /// A body sent part by part as the test sends them on the returned channel.
    pub fn streamed() -> (Route, tokio::sync::mpsc::UnboundedSender<Bytes>) {
        let (parts, receiver) = tokio::sync::mpsc::unbounded_channel();
        let mut route = Route::ok(Bytes::new());
        route.stream = Some(Arc::new(Mutex::new(Some(receiver))));
        (route, parts)
    }

    pub fn header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn status(mut self, status: u16) -> Route {
        self.status = status;
        self
    }
}

#[derive(Default)]
struct OriginState {
    routes: HashMap<String, Route>,
    hits: HashMap<String, usize>,
    /// The request headers of the last request per path.
    seen: HashMap<String, http::HeaderMap>,
    /// The request body length of the last request per path.
    body_lens: HashMap<String, usize>,
    /// 304s answered, and full bodies sent, over all paths.
    not_modified: usize,
    bodies_sent: usize,
}

/// A loopback origin server counting requests per path and query.
pub struct Origin {
    pub addr: SocketAddr,
    scheme: &'static str,
    state: Arc<Mutex<OriginState>>,
    /// Notified on every request that reaches the origin.
    pub arrived: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    pub async fn http() -> Origin {
        Origin::start(None).await
    }

    pub async fn https(ca: &TestCa) -> Origin {
        Origin::start(Some(ca.server_config(true))).await
    }

    pub async fn https_http1_only(ca: &TestCa) -> Origin {
        Origin::start(Some(ca.server_config(false))).await
    }

    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(Mutex::new(OriginState::default()));
        let arrived = Arc::new(Notify::new());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (task_state, task_arrived) = (state.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, arrived, acceptor) =
                    (task_state.clone(), task_arrived.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let (state, arrived) = (state.clone(), arrived.clone());
                        async move { Ok::<_, Infallible>(answer(&state, &arrived, request).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Origin {
            addr,
            scheme,
            state,
            arrived,
            task,
        }
    }

    /// The URL of `path_and_query` on this origin (`localhost` for HTTPS, the IP for HTTP).
    pub fn url(&self, path_and_query: &str) -> String {
        let host = if self.scheme == "https" {
            "localhost"
        } else {
            "127.0.0.1"
        };
        format!(
            "{}://{host}:{}{path_and_query}",
            self.scheme,
            self.addr.port()
        )
    }

    pub fn route(&self, path_and_query: &str, route: Route) {
        self.state
            .lock()
            .expect("origin state")
            .routes
            .insert(path_and_query.to_owned(), route);
    }

    pub fn hits(&self, path_and_query: &str) -> usize {
        *self
            .state
            .lock()
            .expect("origin state")
            .hits
            .get(path_and_query)
            .unwrap_or(&0)
    }

    /// (304s answered, full bodies sent) over all paths.
    pub fn answers(&self) -> (usize, usize) {
        let state = self.state.lock().expect("origin state");
        (state.not_modified, state.bodies_sent)
    }

    pub fn last_body_len(&self, path_and_query: &str) -> Option<usize> {
        self.state
            .lock()
            .expect("origin state")
            .body_lens
            .get(path_and_query)
            .copied()
    }

    pub fn last_request_headers(&self, path_and_query: &str) -> Option<http::HeaderMap> {
        self.state
            .lock()
            .expect("origin state")
            .seen
            .get(path_and_query)
            .cloned()
    }
}

async fn answer(
    state: &Mutex<OriginState>,
    arrived: &Notify,
    request: Request<Incoming>,
) -> Response<OriginBody> {
    let key = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    // Read the whole request body first, as real servers do.
    let (parts, body) = request.into_parts();
    let body_len = body.collect().await.map_or(0, |b| b.to_bytes().len());
    let request = Request::from_parts(parts, ());
    let route = {
        let mut state = state.lock().expect("origin state");
        *state.hits.entry(key.clone()).or_default() += 1;
        state.seen.insert(key.clone(), request.headers().clone());
        state.body_lens.insert(key.clone(), body_len);
        state.routes.get(&key).cloned()
    };
    arrived.notify_waiters();
    let Some(route) = route else {
        let mut response = Response::new(
            Full::new(Bytes::from_static(b"no route"))
                .map_err(|e| match e {})
                .boxed(),
        );
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    if let Some(gate) = &route.gate {
        gate.notified().await;
    }
    if is_not_modified(&request, &route) {
        state.lock().expect("origin state").not_modified += 1;
        let mut response = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        for (name, value) in route
            .headers
            .iter()
            .filter(|(name, _)| name != "content-length")
        {
            response.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_str(value).expect("value"),
            );
        }
        return response;
    }
    state.lock().expect("origin state").bodies_sent += 1;
    let reflected = route.reflect.as_ref().map(|name| {
        let value = request
            .headers()
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        Bytes::from(format!("var host = {value:?};"))
    });
    let streamed = route
        .stream
        .as_ref()
        .and_then(|stream| stream.lock().expect("stream").take());
    let body: OriginBody = match (streamed, route.truncate_at) {
        (None, None) if reflected.is_some() => Full::new(reflected.unwrap_or_default())
            .map_err(|e| match e {})
            .boxed(),
        (Some(parts), _) => {
            let frames = futures_util::stream::unfold(parts, |mut parts| async move {
                let part = parts.recv().await?;
                Some((Ok::<_, std::io::Error>(Frame::data(part)), parts))
            });
            StreamBody::new(frames).boxed()
        }
        (None, truncate_at) => match truncate_at {
            None => Full::new(route.body.clone())
                .map_err(|e| match e {})
                .boxed(),
            Some(at) => {
                let part = route.body.slice(..at);
                let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                    Ok(Frame::data(part)),
                    Err(std::io::Error::other("origin breaks the connection")),
                ];
                StreamBody::new(futures_util::stream::iter(frames)).boxed()
            }
        },
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(route.status).expect("status");
    for (name, value) in &route.headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    if route.truncate_at.is_some() {
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, route.body.len().into());
    }
    response
}

/// Whether a conditional request matches the route's ETag or Last-Modified.
fn is_not_modified(request: &Request<()>, route: &Route) -> bool {
    let route_header = |name: &str| {
        route
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let request_header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    if let (Some(asked), Some(etag)) = (request_header("if-none-match"), route_header("etag")) {
        return asked
            .split(',')
            .any(|tag| tag.trim().trim_start_matches("W/") == etag.trim_start_matches("W/"));
    }
    matches!((request_header("if-modified-since"), route_header("last-modified")), (Some(a), Some(b)) if a == b)
}

/// A proxy running in this process, on a directory that outlives it.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// Starts a proxy with `config` (JSON) using `dir`/cache and `dir`/certs.
    pub async fn start(dir: &Path, config: &str, upstream_ca: Option<&Path>) -> TestProxy {
        TestProxy::start_with(dir, config, upstream_ca, |_| {}).await
    }

    /// Like `start`, with a last change to the configuration (what the command line sets).
    pub async fn start_with(
        dir: &Path,
        config: &str,
        upstream_ca: Option<&Path>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestProxy {
        crypto();
        let mut config = Config::parse(config).expect("test config is valid");
        config.cache.dir = dir.join("cache");
        config.mitm.ca_dir = dir.join("certs");
        config.upstream.extra_roots = upstream_ca.map(Path::to_owned);
        adjust(&mut config);
        let app = Arc::new(App::new(config).expect("proxy starts"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin = admin_listener.local_addr().expect("admin addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let runner = app.clone();
        let task = tokio::spawn(async move {
            runner
                .run(listener, Some(admin_listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("proxy serves");
        });
        TestProxy {
            addr,
            admin,
            app,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts the proxy down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("proxy task");
        }
    }

    pub fn ca_pem(&self) -> String {
        self.app.ca().cert_pem().to_owned()
    }

    /// An HTTP/1.1 and HTTP/2 client going through the proxy, trusting only the proxy's CA.
    pub fn client(&self) -> reqwest::Client {
        client_via(self.addr, &self.ca_pem())
    }

    /// Waits until every cache write has finished.
    pub async fn settled(&self) {
        self.app.cache().settled().await;
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A reqwest client through the proxy at `addr` that trusts only `ca_pem`.
pub fn client_via(addr: SocketAddr, ca_pem: &str) -> reqwest::Client {
    crypto();
    reqwest::Client::builder()
        .use_rustls_tls()
        .proxy(reqwest::Proxy::all(format!("http://{addr}")).expect("proxy URL"))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The `Cache-Status` of a response.
pub fn cache_status(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// GETs `url` and returns status, Cache-Status and body.
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String, Bytes) {
    let response = client.get(url).send().await.expect("request through proxy");
    let status = response.status().as_u16();
    let cache = cache_status(&response);
    let body = response.bytes().await.expect("body");
    (status, cache, body)
}

/// Deterministic pseudo-random bytes (a body no compression or coincidence can fake).
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Waits, bounded, until `condition` holds; panics with `what` otherwise.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The proxy binary as a real process.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<(Mutex<Vec<String>>, std::sync::Condvar)>,
}

impl ProxyProcess {
    /// Starts `proxy --port 0` on `dir` with extra `args`; waits for its "listening" line.
    pub fn start(dir: &Path, args: &[&str]) -> ProxyProcess {
        ProxyProcess::start_from(Command::new(env!("CARGO_BIN_EXE_proxy")), dir, args)
    }

    /// Like `start`, with at most `files` open file descriptors (`ulimit -n`).
    pub fn start_with_fd_limit(dir: &Path, args: &[&str], files: u32) -> ProxyProcess {
        let mut shell = Command::new("sh");
        shell.args([
            "-c",
            &format!("ulimit -n {files} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_proxy"),
        ]);
        ProxyProcess::start_from(shell, dir, args)
    }

    fn start_from(mut command: Command, dir: &Path, args: &[&str]) -> ProxyProcess {
        let mut child = command
            .current_dir(dir)
            .args(["--port", "0"])
            .args(if args.contains(&"--log") {
                &[][..]
            } else {
                &["--log", "info"][..]
            })
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn proxy");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new((Mutex::new(Vec::new()), std::sync::Condvar::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.0.lock().expect("lines").push(line);
                sink.1.notify_all();
            }
            sink.0.lock().expect("lines").push("<exited>".to_owned());
            sink.1.notify_all();
        });
        let mut process = ProxyProcess {
            child,
            addr: ([0, 0, 0, 0], 0).into(),
            admin: ([0, 0, 0, 0], 0).into(),
            log,
        };
        let address = |line: &str| {
            line.split("addr=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<SocketAddr>()
                .ok()
        };
        let admin = process.wait_for_line(|l| l.contains("admin API listening addr="));
        let proxy = process.wait_for_line(|l| l.contains(": listening addr="));
        process.admin = address(&admin).expect("admin address");
        process.addr = address(&proxy).expect("proxy address");
        process
    }

    /// Waits (bounded) for a log line that `matches`, and returns it.
    pub fn wait_for_line(&self, matches: impl Fn(&str) -> bool) -> String {
        self.wait_for_lines(matches, 1).swap_remove(0)
    }

    /// Waits (bounded) until `count` log lines match, and returns them.
    pub fn wait_for_lines(&self, matches: impl Fn(&str) -> bool, count: usize) -> Vec<String> {
        let (lines, arrived) = &*self.log;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut guard = lines.lock().expect("lines");
        loop {
            let found: Vec<String> = guard.iter().filter(|l| matches(l)).cloned().collect();
            if found.len() >= count {
                return found;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero() && !guard.iter().any(|l| l == "<exited>"),
                "no such log line in {:?}",
                *guard
            );
            guard = arrived.wait_timeout(guard, left).expect("lines").0;
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn log(&self) -> Vec<String> {
        self.log.0.lock().expect("lines").clone()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        self.child.wait().expect("wait")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client through the proxy at `addr` for plain-HTTP origins.
pub fn plain_client(addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{addr}")).expect("proxy URL"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// GETs a JSON document from an admin API.
pub async fn admin_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .expect("admin request")
        .json()
        .await
        .expect("admin JSON")
}

/// GETs a text document (`/metrics`) from an admin API.
pub async fn admin_text(admin: SocketAddr, path: &str) -> String {
    reqwest::get(format!("http://{admin}{path}"))
        .await
        .expect("admin request")
        .text()
        .await
        .expect("admin text")
}

/// Every file below `dir`, recursively.
pub fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(read) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in read.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_in(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Runs `proxy` with `args` to completion: exit code and standard output.
pub fn run_proxy(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run proxy");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// How a test upstream proxy behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ChainMode {
    /// Tunnels every CONNECT.
    Open,
    /// Answers 407 unless `Proxy-Authorization` carries `user:secret`.
    NeedsAuth,
    /// Accepts connections and never answers.
    Silent,
}

/// A small HTTP CONNECT proxy on loopback, as paid upstream proxies are: it counts the tunnels
/// it opened, to which targets, and the bytes it carried.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    pub tunnels: Arc<Mutex<Vec<String>>>,
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
    pub auth_seen: Arc<Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConnectProxy {
    pub async fn start(mode: ChainMode) -> ConnectProxy {
        use base64::Engine as _;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let auth_seen = Arc::new(Mutex::new(Vec::new()));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("user:secret")
        );
        let (t, b, a) = (tunnels.clone(), bytes.clone(), auth_seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let (tunnels, bytes, auth_seen, expected) =
                    (t.clone(), b.clone(), a.clone(), expected.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if client.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    if mode == ChainMode::Silent {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let target = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let auth = text
                        .lines()
                        .find(|l| l.to_ascii_lowercase().starts_with("proxy-authorization:"))
                        .map(|l| l.split_once(':').map_or("", |(_, v)| v).trim().to_owned());
                    auth_seen.lock().expect("auth").push(auth.clone());
                    if mode == ChainMode::NeedsAuth && auth.as_deref() != Some(expected.as_str()) {
                        let _ = client
                            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    tunnels.lock().expect("tunnels").push(target);
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if let Ok((up, down)) =
                        tokio::io::copy_bidirectional(&mut client, &mut server).await
                    {
                        bytes.fetch_add(up + down, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        ConnectProxy {
            addr,
            tunnels,
            bytes,
            auth_seen,
            task,
        }
    }

    /// Tunnels opened so far.
    pub fn tunnel_count(&self) -> usize {
        self.tunnels.lock().expect("tunnels").len()
    }
}
