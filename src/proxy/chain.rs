//! Upstream proxy chaining: origin connections opened through an HTTP proxy with `CONNECT`
//! (the paid rotating proxies of scraping fleets). Every origin connection — plain HTTP,
//! HTTPS and opaque tunnels alike — is a tunnel through it, so the proxy sees no request
//! content and the fleet's traffic leaves from the proxy's addresses. Cache hits never reach
//! it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

/// The longest answer head to a `CONNECT` read.
const MAX_HEAD: usize = 16 * 1024;

/// An upstream proxy, parsed from `http://[user:pass@]host:port`.
#[derive(Clone)]
pub struct ChainProxy {
    host: String,
    port: u16,
    /// `Basic …` for `Proxy-Authorization`, when the URL carries credentials.
    authorization: Option<String>,
    /// The URL without its password, for messages and logs.
    display: String,
}

impl std::fmt::Debug for ChainProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.write_str(&self.display)
    }
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
    /// Parses the proxy URL; the message says what is wrong with it.
    pub fn parse(text: &str) -> Result<ChainProxy, String> {
        let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "only http:// upstream proxies are supported (CONNECT), not {}://",
                url.scheme()
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{text:?} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let user = percent_decode(url.username());
        let authorization = (!user.is_empty()).then(|| {
            let password = percent_decode(url.password().unwrap_or(""));
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        });
        let display = match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("http://[{ip}]:{port}"),
            _ => format!("http://{host}:{port}"),
        };
        Ok(ChainProxy {
            host,
            port,
            authorization,
            display,
        })
    }

    /// The proxy's URL without credentials.
    pub fn display(&self) -> &str {
        &self.display
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
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.error(format!("cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(authorization) = &self.authorization {
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
            407 if self.authorization.is_some() => Err(self.error(
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
            proxy: self.display.clone(),
            detail,
        }
    }
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_parsed_and_their_passwords_kept_out_of_sight() {
        let proxy = ChainProxy::parse("http://fleet:s%40cret@proxy.example:3128").expect("valid");
        assert_eq!(proxy.display(), "http://proxy.example:3128");
        assert_eq!(format!("{proxy:?}"), "http://proxy.example:3128");
        let token = base64::engine::general_purpose::STANDARD.encode("fleet:s@cret");
        assert_eq!(proxy.authorization, Some(format!("Basic {token}")));
        assert_eq!(
            ChainProxy::parse("http://127.0.0.1")
                .expect("valid")
                .display(),
            "http://127.0.0.1:80"
        );
        for bad in ["https://p:1", "socks5://p:1", "not a url", "http://:8080"] {
            assert!(ChainProxy::parse(bad).is_err(), "{bad}");
        }
    }
}
