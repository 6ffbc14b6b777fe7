//! Upstream proxy chaining: origin connections opened through an upstream proxy — an HTTP
//! proxy with `CONNECT`, or a SOCKS5 proxy (RFC 1928, username/password per RFC 1929): the
//! paid residential and rotating pools of scraping fleets. Every origin connection — plain
//! HTTP, HTTPS, opaque tunnels and WebSockets alike — is a tunnel through it, so the proxy
//! sees no request content and the fleet's traffic leaves from the proxy's addresses. Cache
//! hits never reach it. Each upstream counts the bytes its connections carry, both ways, from
//! the first byte of the handshake: what the pipe bills.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use super::origin_tcp::{OriginTcp, UpstreamCounters, UpstreamFigures};
use crate::config::{NamedProxy, ProxyKind, ProxyUrl};

/// The longest answer head to a `CONNECT` read.
const MAX_HEAD: usize = 16 * 1024;

/// An upstream proxy origin connections go through, as the configuration names it.
#[derive(Clone, Debug)]
pub struct ChainProxy {
    name: String,
    url: ProxyUrl,
    counters: Arc<UpstreamCounters>,
}

/// Why a connection through the upstream proxy failed; names the proxy.
#[derive(Debug, thiserror::Error)]
#[error("upstream proxy {proxy}: {detail}")]
pub struct ChainError {
    /// The proxy, without its password.
    pub proxy: String,
    /// What went wrong.
    pub detail: String,
}

impl ChainProxy {
    /// The proxy `named` names.
    pub fn new(named: &NamedProxy) -> ChainProxy {
        ChainProxy {
            name: named.name.clone(),
            url: named.url.clone(),
            counters: Arc::default(),
        }
    }

    /// The proxy's URL without credentials.
    pub fn display(&self) -> &str {
        self.url.display()
    }

    /// What went through it.
    pub fn counters(&self) -> &UpstreamCounters {
        &self.counters
    }

    /// Its figures now.
    pub fn figures(&self) -> UpstreamFigures {
        let c = &self.counters;
        UpstreamFigures {
            name: self.name.clone(),
            url: self.url.display().to_owned(),
            requests: c.requests.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            bytes_kept_off: c.bytes_kept_off.load(Ordering::Relaxed),
        }
    }

    /// A stream to `host:port` through the proxy, within `limit` for connecting and the
    /// proxy's answer.
    pub async fn dial(
        &self,
        host: &str,
        port: u16,
        limit: Duration,
    ) -> Result<OriginTcp, ChainError> {
        match tokio::time::timeout(limit, self.tunnel(host, port)).await {
            Ok(result) => result,
            Err(_) => Err(self.error(format!(
                "no tunnel to {host}:{port} within {}s",
                limit.as_secs_f32()
            ))),
        }
    }

    async fn tunnel(&self, host: &str, port: u16) -> Result<OriginTcp, ChainError> {
        let tcp = TcpStream::connect((self.url.host(), self.url.port()))
            .await
            .map_err(|e| self.error(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream = OriginTcp::counted(tcp, self.counters.clone());
        match self.url.kind() {
            ProxyKind::HttpConnect => self.http_connect(stream, host, port).await,
            ProxyKind::Socks5 { remote_dns } => {
                self.socks5_connect(stream, host, port, remote_dns).await
            }
        }
    }

    async fn http_connect(
        &self,
        mut stream: OriginTcp,
        host: &str,
        port: u16,
    ) -> Result<OriginTcp, ChainError> {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(authorization) = self.url.basic_authorization() {
            head.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| self.error(format!("sending CONNECT: {e}")))?;
        let status = self.read_answer(&mut stream).await?;
        match status {
            200..=299 => Ok(stream),
            407 if self.url.has_credentials() => Err(self.error(
                "407 Proxy Authentication Required: it refused the credentials".to_owned(),
            )),
            407 => Err(self.error(
                "407 Proxy Authentication Required: give credentials in the URL (http://user:password@host:port)"
                    .to_owned(),
            )),
            other => Err(self.error(format!("answered {other} to CONNECT {authority}"))),
        }
    }

    /// A SOCKS5 CONNECT to `host:port`: the name as it is for `socks5h` (the proxy resolves
    /// it), resolved here first for `socks5`.
    async fn socks5_connect(
        &self,
        stream: OriginTcp,
        host: &str,
        port: u16,
        remote_dns: bool,
    ) -> Result<OriginTcp, ChainError> {
        let target: tokio_socks::TargetAddr<'_> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => tokio_socks::TargetAddr::Ip((ip, port).into()),
            Err(_) if remote_dns => tokio_socks::TargetAddr::Domain(host.into(), port),
            Err(_) => {
                let resolved = tokio::net::lookup_host((host, port))
                    .await
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .ok_or_else(|| {
                        self.error(format!(
                            "cannot resolve {host} (socks5h:// lets the proxy resolve names)"
                        ))
                    })?;
                tokio_socks::TargetAddr::Ip(resolved)
            }
        };
        let connected = match self.url.credentials() {
            Some((user, password)) => {
                tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(
                    stream, target, user, password,
                )
                .await
            }
            None => tokio_socks::tcp::Socks5Stream::connect_with_socket(stream, target).await,
        };
        connected
            .map(tokio_socks::tcp::Socks5Stream::into_inner)
            .map_err(|e| self.error(socks_detail(&e, host, port, self.url.has_credentials())))
    }

    /// Reads the proxy's answer head, byte by byte so that nothing of the tunnel is consumed;
    /// returns its status.
    async fn read_answer(&self, stream: &mut OriginTcp) -> Result<u16, ChainError> {
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err(self.error("answer head too large".to_owned()));
            }
            match stream.read(&mut byte).await {
                Ok(0) => {
                    return Err(self.error("closed the connection before answering".to_owned()))
                }
                Ok(_) => head.push(byte[0]),
                Err(e) => return Err(self.error(format!("reading its answer: {e}"))),
            }
        }
        let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let status = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok());
        status.ok_or_else(|| self.error("answered something that is not HTTP".to_owned()))
    }

    fn error(&self, detail: String) -> ChainError {
        ChainError {
            proxy: self.url.display().to_owned(),
            detail,
        }
    }
}

/// What a failed SOCKS5 exchange says to the client: the reply code and its meaning for a
/// refused CONNECT, what was wrong with the credentials, or that the server does not speak
/// SOCKS5.
fn socks_detail(error: &tokio_socks::Error, host: &str, port: u16, credentials: bool) -> String {
    use tokio_socks::Error as E;
    let reply = match error {
        E::GeneralSocksServerFailure => Some(1),
        E::ConnectionNotAllowedByRuleset => Some(2),
        E::NetworkUnreachable => Some(3),
        E::HostUnreachable => Some(4),
        E::ConnectionRefused => Some(5),
        E::TtlExpired => Some(6),
        E::CommandNotSupported => Some(7),
        E::AddressTypeNotSupported => Some(8),
        _ => None,
    };
    if let Some(code) = reply {
        return format!("SOCKS reply {code} ({error}) to CONNECT {host}:{port}");
    }
    match error {
        E::PasswordAuthFailure(status) => {
            format!("refused the user name and password (RFC 1929 status {status})")
        }
        E::NoAcceptableAuthMethods if !credentials => {
            "wants credentials: give them in the URL (socks5h://user:password@host:port)".to_owned()
        }
        E::NoAcceptableAuthMethods => {
            "accepted none of the offered authentication methods".to_owned()
        }
        E::UnknownError => format!("SOCKS reply with an unassigned code to CONNECT {host}:{port}"),
        E::Io(e) => format!("SOCKS5 exchange failed: {e}"),
        other => format!("does not answer as a SOCKS5 server should ({other})"),
    }
}

/// The connector the origin client uses when connections go through an upstream proxy.
#[derive(Clone)]
pub struct ChainConnector {
    proxy: ChainProxy,
    limit: Duration,
}

impl ChainConnector {
    /// Connections through `proxy`, each within `limit`.
    pub fn new(proxy: ChainProxy, limit: Duration) -> ChainConnector {
        ChainConnector { proxy, limit }
    }
}

impl tower_service::Service<http::Uri> for ChainConnector {
    type Response = TokioIo<OriginTcp>;
    type Error = ChainError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ChainError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ChainError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (proxy, limit) = (self.proxy.clone(), self.limit);
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or("")
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            proxy.dial(&host, port, limit).await.map(TokioIo::new)
        })
    }
}
