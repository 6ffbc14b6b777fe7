//! A WebSocket origin on loopback (tokio-tungstenite), plain or TLS with the test CA, and
//! WebSocket clients that reach it through the proxy in each way a client can: inside an
//! intercepted TLS tunnel, inside a CONNECT tunnel to a plain port, and as an absolute-form
//! upgrade request.
//!
//! Paths: `/echo` echoes every message; a text message `bye` makes the origin close first;
//! `/refuse` answers the handshake with a 403.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::TestCa;

/// What happened at the origin, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginEvent {
    /// A handshake arrived for this path.
    Handshake(String),
    /// The client sent a Close frame.
    ClientClosed,
    /// The connection ended without a Close frame.
    Ended,
}

/// A loopback WebSocket server.
pub struct WsOrigin {
    pub addr: SocketAddr,
    tls: bool,
    /// Request headers of every handshake, in order.
    pub handshakes: Arc<Mutex<Vec<HeaderMap>>>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<OriginEvent>>,
    task: JoinHandle<()>,
}

impl Drop for WsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsOrigin {
    /// A `ws://` origin.
    pub async fn plain() -> WsOrigin {
        WsOrigin::start(None).await
    }

    /// A `wss://` origin with a certificate from `ca` (HTTP/1.1 only, as WebSocket servers are).
    pub async fn tls(ca: &TestCa) -> WsOrigin {
        WsOrigin::start(Some(ca.server_config(false))).await
    }

    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> WsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let (events_tx, events) = mpsc::unbounded_channel();
        let is_tls = tls.is_some();
        let seen = handshakes.clone();
        let task = tokio::spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, events, acceptor) = (seen.clone(), events_tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                serve_socket(tls, seen, events).await;
                            }
                        }
                        None => serve_socket(stream, seen, events).await,
                    }
                });
            }
        });
        WsOrigin {
            addr,
            tls: is_tls,
            handshakes,
            events: tokio::sync::Mutex::new(events),
            task,
        }
    }

    /// `ws://127.0.0.1:port/path` or `wss://localhost:port/path`.
    pub fn url(&self, path: &str) -> String {
        if self.tls {
            format!("wss://localhost:{}{path}", self.addr.port())
        } else {
            format!("ws://127.0.0.1:{}{path}", self.addr.port())
        }
    }

    /// `host:port` as a CONNECT names it.
    pub fn authority(&self) -> String {
        if self.tls {
            format!("localhost:{}", self.addr.port())
        } else {
            format!("127.0.0.1:{}", self.addr.port())
        }
    }

    /// The next thing that happens at the origin (bounded wait).
    pub async fn next_event(&self) -> OriginEvent {
        let mut events = self.events.lock().await;
        tokio::time::timeout(std::time::Duration::from_secs(20), events.recv())
            .await
            .expect("an origin event in time")
            .expect("origin running")
    }

    pub fn handshake_count(&self) -> usize {
        self.handshakes.lock().expect("handshakes").len()
    }
}

// The handshake callback's error type is tungstenite's, large or not.
#[allow(clippy::result_large_err)]
async fn serve_socket<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    events: mpsc::UnboundedSender<OriginEvent>,
) {
    let callback = |request: &WsRequest, response| {
        seen.lock()
            .expect("handshakes")
            .push(request.headers().clone());
        let _ = events.send(OriginEvent::Handshake(request.uri().path().to_owned()));
        if request.uri().path() == "/refuse" {
            let mut refusal = ErrorResponse::new(Some("no sockets here".to_owned()));
            *refusal.status_mut() = http::StatusCode::FORBIDDEN;
            return Err(refusal);
        }
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(text)) if text.as_str() == "bye" => {
                let _ = socket.close(None).await;
                return;
            }
            Ok(Message::Close(_)) => {
                let _ = events.send(OriginEvent::ClientClosed);
                let _ = socket.close(None).await;
                return;
            }
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                if socket.send(message).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = events.send(OriginEvent::Ended);
}

/// A client WebSocket over any stream.
pub type ClientSocket = WebSocketStream<Box<dyn Io>>;

/// A stream a WebSocket can run on.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Sends `CONNECT authority` to the proxy and reads its answer's head; the stream is then
/// the tunnel.
pub async fn connect_tunnel(proxy: SocketAddr, authority: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to proxy");
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send CONNECT");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read CONNECT answer");
        assert!(n > 0, "proxy closed during CONNECT: {head:?}");
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// TLS to `name` over `stream`, trusting only `ca_pem` (the proxy's CA) and offering only
/// HTTP/1.1, as browsers do for WebSockets.
pub async fn tls_through(
    stream: TcpStream,
    name: &str,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_with(stream, name, Arc::new(client_config(ca_pem, None))).await
}

/// A TLS client configuration trusting only `ca_pem`, offering only HTTP/1.1, and limited to
/// `version` when one is given. Its session cache lets a second connection resume.
pub fn client_config(
    ca_pem: &str,
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem) {
        roots.add(cert).expect("root");
    }
    let builder = match version {
        Some(version) => rustls::ClientConfig::builder_with_protocol_versions(&[version]),
        None => rustls::ClientConfig::builder(),
    };
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// TLS to `name` over `stream` with `config`.
pub async fn tls_with(
    stream: TcpStream,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name");
    connector
        .connect(server_name, stream)
        .await
        .expect("TLS through the proxy")
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM")
}

/// A WebSocket handshake for `url` over a tunnel; the answer's headers come back with it.
pub async fn handshake_over(
    stream: Box<dyn Io>,
    url: &str,
) -> Result<(ClientSocket, http::Response<Option<Vec<u8>>>), tokio_tungstenite::tungstenite::Error>
{
    tokio_tungstenite::client_async(url, stream).await
}

/// `wss://` inside an intercepted tunnel: CONNECT, TLS with the proxy's CA, handshake.
pub async fn wss_via_proxy(
    proxy: SocketAddr,
    ca_pem: &str,
    origin: &WsOrigin,
    path: &str,
) -> Result<(ClientSocket, http::Response<Option<Vec<u8>>>), tokio_tungstenite::tungstenite::Error>
{
    let (tunnel, head) = connect_tunnel(proxy, &origin.authority()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let tls = tls_through(tunnel, "localhost", ca_pem).await;
    handshake_over(Box::new(tls), &origin.url(path)).await
}

/// `ws://` inside a CONNECT tunnel to the plain port.
pub async fn ws_via_connect(
    proxy: SocketAddr,
    origin: &WsOrigin,
    path: &str,
) -> Result<(ClientSocket, http::Response<Option<Vec<u8>>>), tokio_tungstenite::tungstenite::Error>
{
    let (tunnel, head) = connect_tunnel(proxy, &origin.authority()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    handshake_over(Box::new(tunnel), &origin.url(path)).await
}

/// What an absolute-form upgrade request came back with.
pub struct AbsoluteUpgrade {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// The socket, when the answer was 101.
    pub socket: Option<ClientSocket>,
}

/// `GET ws://host/path` (absolute form, as an HTTP proxy client sends it) with the WebSocket
/// handshake headers, over hyper's HTTP/1.1 client; on a 101 the upgraded connection becomes
/// a tungstenite client socket.
pub async fn ws_absolute_form(
    proxy: SocketAddr,
    url: &str,
    extra: &[(&str, &str)],
) -> AbsoluteUpgrade {
    use http_body_util::BodyExt;
    let stream = TcpStream::connect(proxy).await.expect("connect to proxy");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let mut builder = Request::get(url)
        .header("host", url.split('/').nth(2).unwrap_or(""))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", generate_key());
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let mut response = sender.send_request(request).await.expect("answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    if status != 101 {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return AbsoluteUpgrade {
            status,
            headers,
            body,
            socket: None,
        };
    }
    let upgraded = hyper::upgrade::on(&mut response)
        .await
        .expect("upgraded connection");
    let io: Box<dyn Io> = Box::new(TokioIo::new(upgraded));
    let socket = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    AbsoluteUpgrade {
        status,
        headers,
        body: bytes::Bytes::new(),
        socket: Some(socket),
    }
}

/// Sends a text message and returns the next text message that comes back.
pub async fn round_trip(socket: &mut ClientSocket, text: &str) -> String {
    socket
        .send(Message::text(text.to_owned()))
        .await
        .expect("send message");
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(20), socket.next())
            .await
            .expect("an answer in time")
            .expect("socket open")
            .expect("message");
        if let Message::Text(text) = message {
            return text.as_str().to_owned();
        }
    }
}
