//! CONNECT: answer 200, take over the connection, and classify its first bytes: a TLS
//! ClientHello is intercepted (terminated with a leaf certificate from `ca`, its requests
//! served by the same `ProxyService`), plain HTTP is served by it too, anything else is
//! relayed as it is. Hosts listed in `passthrough`, and targets whose server speaks first, are
//! always relayed. Waiting for the first bytes is bounded by the TLS handshake timeout: a busy
//! client that is slow to send its ClientHello is still intercepted, never silently relayed.

pub mod ca;
pub mod rewind;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, info, warn};

use crate::error::ProxyError;
use crate::proxy::body::{empty, ProxyBody};
use crate::proxy::headers::{CACHE_STATUS, PROXY_NAME};
use crate::proxy::splice::splice;
use crate::proxy::upstream::Route;
use crate::proxy::{Context, ProxyService};
use rewind::Rewind;
use url::Url;

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;
/// The longest HTTP method recognised at the start of a plain-HTTP tunnel, with its space.
const LONGEST_METHOD: usize = 16;

/// What a tunnel's first bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstBytes {
    /// A TLS handshake record: intercept.
    Tls,
    /// An HTTP/1.x request line: serve it.
    Http,
    /// Something else: relay it.
    Other,
    /// Too few bytes to tell.
    Unsure,
}

/// Classifies the first bytes a client sent into a tunnel.
fn classify(first: &[u8]) -> FirstBytes {
    match first.first() {
        None => FirstBytes::Unsure,
        Some(&TLS_HANDSHAKE) => FirstBytes::Tls,
        Some(_) => {
            // An HTTP request line starts with a method token and a space.
            let token = first
                .iter()
                .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
                .count();
            match first.get(token) {
                Some(b' ') if token > 0 => FirstBytes::Http,
                None if token == first.len() && token < LONGEST_METHOD => FirstBytes::Unsure,
                _ => FirstBytes::Other,
            }
        }
    }
}

/// Answers a CONNECT and serves the tunnel in the background.
pub async fn connect(ctx: Arc<Context>, request: Request<Incoming>) -> Response<ProxyBody> {
    let target = match Target::of(&request) {
        Ok(target) => target,
        Err(error) => return error.into_response(),
    };
    if let Err(error) = ctx.check_not_self(&target.host, target.port) {
        return error.into_response();
    }
    // The proxy's own page is answered inside the tunnel, whatever the allow-list says.
    if target.host != crate::admin::CA_HOST {
        if let Err(error) = ctx.check_allowed(&target.host) {
            return error.into_response();
        }
    }
    let connections = ctx.connections.clone();
    if ctx.config.mitm.is_passthrough(&target.host) {
        // Connect first, so that the client learns of a dead origin from the status.
        let origin = match target.dial(&ctx).await {
            Ok(origin) => origin,
            Err(error) => return error.into_response(),
        };
        connections.spawn(async move {
            if let Some(client) = upgraded(request).await {
                target.relay(&ctx, client, origin, "passthrough").await;
            }
        });
        return established("tunnel");
    }
    connections.spawn(async move {
        if let Some(client) = upgraded(request).await {
            target.serve(ctx, client).await;
        }
    });
    established("intercept")
}

fn established(detail: &str) -> Response<ProxyBody> {
    let mut response = Response::new(empty());
    if let Ok(value) = HeaderValue::from_str(&format!("{PROXY_NAME}; fwd=bypass; detail={detail}"))
    {
        response.headers_mut().insert(CACHE_STATUS, value);
    }
    response
}

async fn upgraded(request: Request<Incoming>) -> Option<TokioIo<hyper::upgrade::Upgraded>> {
    match hyper::upgrade::on(request).await {
        Ok(upgraded) => Some(TokioIo::new(upgraded)),
        Err(error) => {
            debug!(error = %error, "CONNECT upgrade failed");
            None
        }
    }
}

/// Where a CONNECT goes.
struct Target {
    /// Host without IPv6 brackets.
    host: String,
    port: u16,
    /// `host:port` as the client wrote it (with brackets).
    authority: String,
}

impl Target {
    fn of(request: &Request<Incoming>) -> Result<Target, ProxyError> {
        let authority = request
            .uri()
            .authority()
            .ok_or_else(|| ProxyError::BadRequest("CONNECT needs host:port".to_owned()))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        // A port that is there but not a port (99999, "http") is an error, not 443.
        let written_port = authority
            .as_str()
            .rsplit_once(']')
            .map_or(authority.as_str(), |(_, rest)| rest)
            .rsplit_once(':');
        let port = match written_port {
            None => 443,
            Some((_, port)) => port.parse::<u16>().unwrap_or(0),
        };
        if host.is_empty() || port == 0 {
            return Err(ProxyError::BadRequest(format!(
                "bad CONNECT target {authority}"
            )));
        }
        Ok(Target {
            host: host.to_owned(),
            port,
            authority: authority.to_string(),
        })
    }

    async fn dial(&self, ctx: &Context) -> Result<TcpStream, ProxyError> {
        if ctx.policy().offline {
            // A tunnel needs the origin; offline, nothing is contacted.
            return Err(ProxyError::Offline {
                url: format!("tunnel to {}", self.authority),
            });
        }
        let route = Url::parse(&format!("https://{}/", self.authority))
            .map_or(Route::Direct, |url| ctx.route(&url));
        ctx.upstream.dial(&self.host, self.port, route).await
    }

    /// Intercepts TLS, serves plain HTTP, relays anything else.
    async fn serve<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        self,
        ctx: Arc<Context>,
        mut client: T,
    ) {
        if ctx.config.mitm.server_speaks_first(&self.host, self.port) {
            return self
                .relay_to_origin(&ctx, client, "server-speaks-first")
                .await;
        }
        let limit = ctx.config.clients.tls_handshake_timeout;
        let mut first = Vec::with_capacity(4096);
        let kind = loop {
            let kind = classify(&first);
            if kind != FirstBytes::Unsure {
                break kind;
            }
            match timeout(limit, client.read_buf(&mut first)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    ctx.stats.tunnels_silent.inc();
                    return debug!(host = %self.host, port = self.port, "tunnel closed: the client sent nothing in time");
                }
            }
        };
        let client = Rewind::new(Bytes::from(first), client);
        match kind {
            FirstBytes::Tls => self.intercept(ctx, client).await,
            FirstBytes::Http => {
                ctx.stats.tunnels_intercepted.inc();
                let service = ProxyService::in_tunnel(ctx.clone(), "http", &self.authority);
                ctx.connections.serve(client, service.handler()).await;
            }
            FirstBytes::Other | FirstBytes::Unsure => {
                self.relay_to_origin(&ctx, client, "not-http").await;
            }
        }
    }

    /// Dials the origin and relays the tunnel to it opaquely.
    async fn relay_to_origin<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        ctx: &Context,
        client: T,
        why: &'static str,
    ) {
        match self.dial(ctx).await {
            Ok(origin) => self.relay(ctx, client, origin, why).await,
            Err(error) => debug!(error = %error, host = %self.host, "opaque tunnel failed"),
        }
    }

    /// Relays a tunnel byte for byte, counted and logged: the cache never sees it.
    async fn relay<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        ctx: &Context,
        client: T,
        origin: TcpStream,
        why: &'static str,
    ) {
        ctx.stats.tunnels_opaque.inc();
        let idle = ctx.config.clients.websocket_idle;
        let spliced = splice(client, origin, idle).await;
        info!(
            host = %self.host,
            port = self.port,
            why,
            secs = spliced.open.as_secs_f64(),
            bytes_up = spliced.up,
            bytes_down = spliced.down,
            end = spliced.end.as_str(),
            "opaque tunnel closed"
        );
    }

    async fn intercept<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        self,
        ctx: Arc<Context>,
        client: T,
    ) {
        let limit = ctx.config.clients.tls_handshake_timeout;
        let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client);
        let start = match timeout(limit, acceptor).await {
            Ok(Ok(start)) => start,
            Ok(Err(error)) => {
                return debug!(error = %error, host = %self.host, "client hello unreadable")
            }
            Err(_) => return debug!(host = %self.host, "client sent no TLS hello in time"),
        };
        let name = start
            .client_hello()
            .server_name()
            .map_or_else(|| self.host.clone(), str::to_owned);
        let config = match ctx.ca.server_config(&name).await {
            Ok(config) => config,
            Err(error) => return warn!(error = %error, host = %name, "cannot mint a certificate"),
        };
        let tls = match timeout(limit, start.into_stream(config)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                return debug!(error = %error, host = %name, "client TLS handshake failed")
            }
            Err(_) => return debug!(host = %name, "client TLS handshake timed out"),
        };
        ctx.stats.tunnels_intercepted.inc();
        let service = ProxyService::in_tunnel(ctx.clone(), "https", &self.authority);
        ctx.connections.serve(tls, service.handler()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_are_classified() {
        let cases: [(&[u8], FirstBytes); 9] = [
            (b"", FirstBytes::Unsure),
            (b"\x16\x03\x01\x02\x00", FirstBytes::Tls),
            (b"GET / HTTP/1.1\r\n", FirstBytes::Http),
            (b"OPTIONS * HTTP/1.1\r\n", FirstBytes::Http),
            (b"GE", FirstBytes::Unsure),
            (b"SSH-2.0-OpenSSH_9.2\r\n", FirstBytes::Other),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", FirstBytes::Other),
            (b"get / HTTP/1.1", FirstBytes::Other),
            (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", FirstBytes::Other),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                classify(bytes),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
