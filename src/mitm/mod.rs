//! CONNECT: answer 200, take over the connection, and classify its first bytes: a TLS
//! ClientHello is intercepted (terminated with a leaf certificate from `ca`, its requests
//! served by the same `ProxyService`), anything else is tunnelled as it is. Hosts listed in
//! `passthrough` are always tunnelled.

pub mod ca;
pub mod rewind;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, warn};

use crate::error::ProxyError;
use crate::proxy::body::{empty, ProxyBody};
use crate::proxy::headers::{CACHE_STATUS, PROXY_NAME};
use crate::proxy::upstream::Route;
use crate::proxy::{Context, ProxyService};
use rewind::Rewind;
use url::Url;

/// A client that sends nothing this long after CONNECT is assumed to wait for the server to
/// speak first, and is tunnelled.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(3);
/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;

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
        if let Err(error) = ctx.config.upstream.check_allowed(&target.host) {
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
                pipe(client, origin).await;
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

    /// Intercepts TLS, tunnels anything else.
    async fn serve<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        self,
        ctx: Arc<Context>,
        mut client: T,
    ) {
        let mut first = vec![0u8; 4096];
        let read = match timeout(FIRST_BYTES_WAIT, client.read(&mut first)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) => 0,
        };
        first.truncate(read);
        let is_tls = first.first() == Some(&TLS_HANDSHAKE);
        let client = Rewind::new(Bytes::from(first), client);
        if is_tls {
            self.intercept(ctx, client).await;
        } else {
            match self.dial(&ctx).await {
                Ok(origin) => pipe(client, origin).await,
                Err(error) => debug!(error = %error, "opaque tunnel failed"),
            }
        }
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
        let service = ProxyService::intercepting(ctx.clone(), &self.authority);
        ctx.connections.serve(tls, service).await;
    }
}

async fn pipe<C: AsyncRead + AsyncWrite + Unpin>(mut client: C, mut origin: TcpStream) {
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut origin).await {
        debug!(error = %error, "tunnel closed with an error");
    }
}
