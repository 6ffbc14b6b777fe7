//! Upstream proxy chaining: origin connections opened through an HTTP proxy with `CONNECT`
//! (the paid rotating proxies of scraping fleets). Every origin connection — plain HTTP,
//! HTTPS and opaque tunnels alike — is a tunnel through it, so the proxy sees no request
//! content and the fleet's traffic leaves from the proxy's addresses. Cache hits never reach
//! it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ProxyUrl;

/// The longest answer head to a `CONNECT` read.
const MAX_HEAD: usize = 16 * 1024;

/// An upstream proxy every origin connection goes through, as the configuration names it.
#[derive(Clone, Debug)]
pub struct ChainProxy {
    url: ProxyUrl,
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
    /// The proxy `url` names.
    pub fn new(url: ProxyUrl) -> ChainProxy {
        ChainProxy { url }
    }

    /// The proxy's URL without credentials.
    pub fn display(&self) -> &str {
        self.url.display()
    }

    /// A TCP stream to `host:port` through the proxy, within `limit` for connecting and the
    /// proxy's answer.
    pub async fn dial(
        &self,
        host: &str,
        port: u16,
        limit: Duration,
    ) -> Result<TcpStream, ChainError> {
        match tokio::time::timeout(limit, self.tunnel(host, port)).await {
            Ok(result) => result,
            Err(_) => Err(self.error(format!(
                "no tunnel to {host}:{port} within {}s",
                limit.as_secs_f32()
            ))),
        }
    }

    async fn tunnel(&self, host: &str, port: u16) -> Result<TcpStream, ChainError> {
        let mut stream = TcpStream::connect((self.url.host(), self.url.port()))
            .await
            .map_err(|e| self.error(format!("cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
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

    /// Reads the proxy's answer head, byte by byte so that nothing of the tunnel is consumed;
    /// returns its status.
    async fn read_answer(&self, stream: &mut TcpStream) -> Result<u16, ChainError> {
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

/// The connector the origin client uses when connections go through the upstream proxy.
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
    type Response = TokioIo<TcpStream>;
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
