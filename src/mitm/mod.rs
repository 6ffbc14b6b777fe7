//! CONNECT (HTTP, or SOCKS5 through `listener::socks`): accept the target, take over the
//! connection, and classify its first bytes: a TLS
//! ClientHello is intercepted (terminated with a leaf certificate from `ca`, its requests
//! served by the same `ProxyService`), plain HTTP is served by it too, anything else is
//! relayed as it is. Hosts listed in `passthrough`, and targets whose server speaks first, are
//! always relayed. Waiting for the first bytes is bounded by the TLS handshake timeout: a busy
//! client that is slow to send its ClientHello is still intercepted, never silently relayed.

mod first_bytes;
pub mod rewind;

use std::sync::Arc;

use crate::proxy::chain::OriginTcp;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::timeout;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, info, warn};

use crate::body::{empty, ProxyBody};
use crate::proxy::error::ProxyError;
use crate::proxy::headers::{CACHE_STATUS, PROXY_NAME};
use crate::proxy::splice::relay_registered;
use crate::proxy::upstream::Route;
use crate::proxy::Context;
use first_bytes::{classify, FirstBytes};
use rewind::Rewind;
use url::Url;

/// What a CONNECT came to: the answer for the client and, when it was accepted, the tunnel to
/// open once the answer is sent.
pub struct Connected {
    /// The answer to the CONNECT.
    pub response: Response<ProxyBody>,
    /// The tunnel, unless the CONNECT was refused.
    pub tunnel: Option<Tunnel>,
}

/// An accepted HTTP CONNECT whose tunnel is not open yet.
pub struct Tunnel {
    request: Request<Incoming>,
    accepted: Accepted,
}

/// A tunnel to a target that passed every check, not opened yet.
pub struct Accepted {
    ctx: Arc<Context>,
    target: Target,
    /// The origin, already dialled, of a passthrough tunnel.
    passthrough: Option<OriginTcp>,
}

/// A tunnel whose requests the proxy serves: the client's stream (TLS terminated, or plain
/// HTTP) and the origin its requests go to.
pub struct Intercepted {
    /// The client's side, ready for HTTP.
    pub stream: Box<dyn ClientStream>,
    /// `https://host:port` or `http://host:port`.
    pub origin: String,
}

/// A stream a client speaks HTTP on.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for T {}

/// Answers a CONNECT: refused, or accepted with a tunnel to open.
pub async fn connect(ctx: Arc<Context>, request: Request<Incoming>) -> Connected {
    let refused = |error: ProxyError| Connected {
        response: error.into_response(),
        tunnel: None,
    };
    let target = match Target::of(&request) {
        Ok(target) => target,
        Err(error) => return refused(error),
    };
    let accepted = match accept(ctx, target).await {
        Ok(accepted) => accepted,
        Err(error) => return refused(error),
    };
    let response = established(if accepted.passthrough.is_some() {
        "tunnel"
    } else {
        "intercept"
    });
    Connected {
        response,
        tunnel: Some(Tunnel { request, accepted }),
    }
}

/// Accepts a tunnel to `host:port` (a SOCKS5 CONNECT's target) when every check passes.
pub async fn accept_target(
    ctx: Arc<Context>,
    host: &str,
    port: u16,
) -> Result<Accepted, ProxyError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if host.is_empty() || port == 0 {
        return Err(ProxyError::BadRequest(format!(
            "bad CONNECT target {authority}"
        )));
    }
    let target = Target {
        host: host.to_owned(),
        port,
        authority,
    };
    accept(ctx, target).await
}

/// The checks every tunnel passes before it is accepted: not to the proxy itself, not
/// blocked, an allowed host; a passthrough host is dialled first, so that the client learns
/// of a dead origin from the answer.
async fn accept(ctx: Arc<Context>, target: Target) -> Result<Accepted, ProxyError> {
    ctx.check_not_self(&target.host, target.port)?;
    if ctx.host_blocked(&target.host) {
        ctx.stats.blocked.inc();
        debug!(host = %target.host, "tunnel blocked");
        return Err(ProxyError::Blocked {
            target: target.authority.clone(),
            by: "the blocklist",
            status: http::StatusCode::FORBIDDEN,
        });
    }
    // The proxy's own page is answered inside the tunnel, whatever the allow-list says.
    if target.host != crate::ca::page::CA_HOST {
        ctx.check_allowed(&target.host)?;
    }
    let mut passthrough = None;
    if ctx.config.mitm.is_passthrough(&target.host) {
        passthrough = Some(target.dial(&ctx).await?);
    }
    Ok(Accepted {
        ctx,
        target,
        passthrough,
    })
}

impl Tunnel {
    /// Takes over the client's connection once the CONNECT's answer is out (see
    /// `Accepted::open`).
    pub async fn open(self) -> Option<Intercepted> {
        let client = upgraded(self.request).await?;
        self.accepted.open(client).await
    }
}

impl Accepted {
    /// `host:port` of the target.
    pub fn authority(&self) -> &str {
        &self.target.authority
    }

    /// Takes over the client's side of the tunnel: relays it (to a passthrough host, a server
    /// that speaks first, anything not HTTP), or hands back the stream whose requests the
    /// proxy serves.
    pub async fn open<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        self,
        client: T,
    ) -> Option<Intercepted> {
        match self.passthrough {
            Some(origin) => {
                self.target
                    .relay(&self.ctx, client, origin, "passthrough")
                    .await;
                None
            }
            None => self.target.serve(self.ctx, client).await,
        }
    }
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

/// What a tunnel's first bytes opened.
enum Opened<T> {
    /// TLS (terminated) or plain HTTP: its requests are served.
    Served(Intercepted),
    /// Neither: relayed to the origin as it is.
    NotHttp(T),
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

    async fn dial(&self, ctx: &Context) -> Result<OriginTcp, ProxyError> {
        if ctx.policy().offline() {
            // A tunnel needs the origin; offline, nothing is contacted.
            return Err(ProxyError::Offline {
                url: format!("tunnel to {}", self.authority),
            });
        }
        let route = Url::parse(&format!("https://{}/", self.authority))
            .map_or(Route::Direct, |url| ctx.route(&url));
        ctx.upstream.dial(&self.host, self.port, route).await
    }

    /// Intercepts TLS, hands back plain HTTP, relays anything else.
    async fn serve<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        self,
        ctx: Arc<Context>,
        client: T,
    ) -> Option<Intercepted> {
        if ctx.config.mitm.server_speaks_first(&self.host, self.port) {
            self.relay_to_origin(&ctx, client, "server-speaks-first")
                .await;
            return None;
        }
        // Until its first bytes are read and its TLS handshake is done, the tunnel is one of the
        // proxy's open connections: closed when descriptors run short, and at shutdown. (Then
        // the connection serving its requests, or its relay, is registered instead.)
        let registration = ctx.open_connections.register(1);
        let opened = tokio::select! {
            opened = self.read_opening(&ctx, client) => opened,
            () = registration.close_requested() => None,
            () = ctx.tasks.stopping() => None,
        };
        drop(registration);
        match opened? {
            Opened::Served(intercepted) => Some(intercepted),
            Opened::NotHttp(client) => {
                self.relay_to_origin(&ctx, client, "not-http").await;
                None
            }
        }
    }

    /// Reads the tunnel's first bytes: a TLS handshake is completed and its stream handed back
    /// to be served, as is plain HTTP; anything else is to be relayed.
    async fn read_opening<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        &self,
        ctx: &Context,
        mut client: T,
    ) -> Option<Opened<Rewind<T>>> {
        let limit = ctx.config.clients.tls_handshake_timeout;
        let mut first = Vec::with_capacity(4096);
        let kind = loop {
            let kind = classify(&first);
            if kind != FirstBytes::Unsure {
                break kind;
            }
            match timeout(limit, client.read_buf(&mut first)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(_) => {
                    ctx.stats.tunnels_silent.inc();
                    debug!(host = %self.host, port = self.port, "tunnel closed: the client sent nothing in time");
                    return None;
                }
            }
        };
        let client = Rewind::new(Bytes::from(first), client);
        match kind {
            FirstBytes::Tls => self.intercept(ctx, client).await.map(Opened::Served),
            FirstBytes::Http => {
                ctx.stats.tunnels_intercepted.inc();
                Some(Opened::Served(Intercepted {
                    stream: Box::new(client),
                    origin: format!("http://{}", self.authority),
                }))
            }
            FirstBytes::Other | FirstBytes::Unsure => Some(Opened::NotHttp(client)),
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
        origin: OriginTcp,
        why: &'static str,
    ) {
        ctx.stats.tunnels_opaque.inc();
        let spliced = relay_registered(ctx, client, origin).await;
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
        &self,
        ctx: &Context,
        client: T,
    ) -> Option<Intercepted> {
        let limit = ctx.config.clients.tls_handshake_timeout;
        let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client);
        let start = match timeout(limit, acceptor).await {
            Ok(Ok(start)) => start,
            Ok(Err(error)) => {
                debug!(error = %error, host = %self.host, "client hello unreadable");
                return None;
            }
            Err(_) => {
                debug!(host = %self.host, "client sent no TLS hello in time");
                return None;
            }
        };
        let name = start
            .client_hello()
            .server_name()
            .map_or_else(|| self.host.clone(), str::to_owned);
        let config = match ctx.ca.server_config(&name).await {
            Ok(config) => config,
            Err(error) => {
                warn!(error = %error, host = %name, "cannot mint a certificate");
                return None;
            }
        };
        let tls = match timeout(limit, start.into_stream(config)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                debug!(error = %error, host = %name, "client TLS handshake failed");
                return None;
            }
            Err(_) => {
                debug!(host = %name, "client TLS handshake timed out");
                return None;
            }
        };
        ctx.stats.tunnels_intercepted.inc();
        Some(Intercepted {
            stream: Box::new(tls),
            origin: format!("https://{}", self.authority),
        })
    }
}
