//! SOCKS5 clients on the proxy port (RFC 1928), told apart from HTTP by their first byte
//! (5): browsers that can only speak SOCKS (`--proxy-server=socks5://…`) and SOCKS-only tools.
//! No authentication when the proxy asks for none; username/password (RFC 1929) when proxy
//! credentials are configured. A CONNECT is accepted by the same checks as an HTTP CONNECT and
//! its tunnel is handled the same way: TLS intercepted and cached, plain HTTP served, anything
//! else relayed. Other commands (BIND, UDP ASSOCIATE) are refused with "command not supported".

use std::net::SocketAddr;
use std::sync::Arc;

use fast_socks5::server::{Socks5ServerProtocol, SocksServerError};
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, Instrument};

use super::front::serve_intercepted;
use super::Connections;
use crate::auth::same_secret;
use crate::proxy::error::ProxyError;
use crate::proxy::Context;

/// The first byte a SOCKS5 client sends.
pub const SOCKS5_VERSION: u8 = 5;

/// Why a SOCKS5 client was not served.
#[derive(Debug, thiserror::Error)]
pub enum SocksRefusal {
    /// The handshake was malformed, or the client went away.
    #[error("SOCKS5 handshake: {0}")]
    Handshake(#[from] SocksServerError),
    /// The client did not finish its handshake in time.
    #[error("SOCKS5 handshake: not finished within the header timeout")]
    Timeout,
    /// The command is not CONNECT.
    #[error("SOCKS5 command {0:?} is not supported")]
    Command(Socks5Command),
    /// The proxy requires a namespace (`clients.require_namespace`), which SOCKS5 cannot name.
    #[error("SOCKS5 CONNECT refused: this proxy requires a namespace, which SOCKS5 clients cannot name; use it as an HTTP proxy")]
    NoNamespace,
    /// The target was refused, as an HTTP CONNECT to it would be.
    #[error("SOCKS5 CONNECT refused: {0}")]
    Refused(ProxyError),
}

/// Serves one SOCKS5 client (from `peer`, when it came over a socket) to its end: handshake,
/// CONNECT, then its tunnel.
pub async fn serve<T>(
    ctx: Arc<Context>,
    connections: Connections,
    client: T,
    peer: Option<SocketAddr>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limit = ctx.config.clients.header_timeout;
    let accepted = match tokio::time::timeout(limit, handshake(ctx.clone(), client)).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(refusal)) => {
            ctx.stats.socks_refused.inc();
            debug!(error = %refusal, "SOCKS5 client not served");
            return;
        }
        Err(_) => {
            ctx.stats.socks_refused.inc();
            debug!(error = %SocksRefusal::Timeout, "SOCKS5 client not served");
            return;
        }
    };
    let (stream, accepted) = accepted;
    ctx.stats.socks_tunnels.inc();
    let serving = connections.clone();
    let tunnel = async move {
        if let Some(intercepted) = accepted.open(stream).await {
            serve_intercepted(ctx, &serving, intercepted, None, peer).await;
        }
    };
    tunnel.in_current_span().await;
}

/// The handshake up to the CONNECT's success reply: the client's stream, and the tunnel to
/// open on it.
async fn handshake<T>(
    ctx: Arc<Context>,
    client: T,
) -> Result<(T, crate::mitm::Accepted), SocksRefusal>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let proto = match &ctx.config.clients.credentials {
        None => Socks5ServerProtocol::accept_no_auth(client).await?,
        Some(expected) => {
            let check = |user: String, password: String| {
                // Both compared whole, in time that depends on neither.
                let user_ok = same_secret(user.as_bytes(), expected.username.as_bytes());
                let password_ok = same_secret(password.as_bytes(), expected.password.as_bytes());
                user_ok & password_ok
            };
            Socks5ServerProtocol::accept_password_auth(client, check)
                .await?
                .0
        }
    };
    let (proto, command, target) = proto.read_command().await?;
    if command != Socks5Command::TCPConnect {
        proto.reply_error(&ReplyError::CommandNotSupported).await?;
        return Err(SocksRefusal::Command(command));
    }
    if ctx.config.clients.require_namespace {
        proto.reply_error(&ReplyError::ConnectionNotAllowed).await?;
        return Err(SocksRefusal::NoNamespace);
    }
    let (host, port) = match &target {
        TargetAddr::Ip(addr) => (addr.ip().to_string(), addr.port()),
        TargetAddr::Domain(name, port) => (name.clone(), *port),
    };
    match crate::mitm::accept_target(ctx, &host, port).await {
        Ok(accepted) => {
            debug!(target = accepted.authority(), "SOCKS5 CONNECT");
            let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
            let stream = proto.reply_success(unspecified).await?;
            Ok((stream, accepted))
        }
        Err(error) => {
            proto.reply_error(&reply_for(&error)).await?;
            Err(SocksRefusal::Refused(error))
        }
    }
}

/// The SOCKS5 reply for a refused target.
fn reply_for(error: &ProxyError) -> ReplyError {
    match error {
        ProxyError::HostNotAllowed { .. }
        | ProxyError::Blocked { .. }
        | ProxyError::Loop { .. } => ReplyError::ConnectionNotAllowed,
        ProxyError::Offline { .. } => ReplyError::NetworkUnreachable,
        ProxyError::Connect { .. } => ReplyError::HostUnreachable,
        ProxyError::Timeout { .. } => ReplyError::ConnectionTimeout,
        _ => ReplyError::GeneralFailure,
    }
}
