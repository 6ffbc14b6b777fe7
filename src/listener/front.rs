//! The front of a client connection: who may use the proxy and in which namespace, then
//! CONNECTs to `mitm` (their intercepted tunnels served back through `Connections`, in the
//! CONNECT's namespace) and every other request to `proxy`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::{debug_span, Instrument};

use super::Connections;
use crate::auth::ProxyAuth;
use crate::body::ProxyBody;
use crate::cache::http::namespace;
use crate::mitm::Intercepted;
use crate::proxy::error::ProxyError;
use crate::proxy::{Context, ProxyService};

/// Answers one request a client (from `peer`, when it came over a socket) sent on its own
/// connection to the proxy.
pub async fn answer(
    ctx: Arc<Context>,
    connections: Connections,
    peer: Option<SocketAddr>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    if !ctx.auth.allows(request.headers()) {
        return ProxyAuth::challenge();
    }
    let connect = request.method() == Method::CONNECT;
    let require = ctx.config.clients.require_namespace;
    // A plain request's namespace is settled (and checked) where it is answered; here only a
    // tunnel's, which holds for every request in it, and one the proxy requires.
    if connect || require {
        let namespace = match namespace::named_by(request.headers(), ctx.auth.is_open()) {
            Ok(namespace) => namespace,
            Err(reason) => return ProxyError::BadRequest(reason).into_response(),
        };
        if namespace.is_none() && require {
            return ProxyAuth::namespace_challenge();
        }
        if connect {
            return Box::pin(open_tunnel(ctx, connections, peer, request, namespace)).await;
        }
    }
    ProxyService::new(ctx, peer).answer(request).await
}

/// Answers a CONNECT, and serves the tunnel it opens in the background.
async fn open_tunnel(
    ctx: Arc<Context>,
    connections: Connections,
    peer: Option<SocketAddr>,
    request: Request<Incoming>,
    namespace: Option<String>,
) -> Response<ProxyBody> {
    let connected = crate::mitm::connect(ctx.clone(), request).await;
    if let Some(tunnel) = connected.tunnel {
        let serving = connections.clone();
        let serve_tunnel = async move {
            if let Some(intercepted) = tunnel.open().await {
                serve_intercepted(ctx, &serving, intercepted, namespace, peer).await;
            }
        };
        connections.spawn(serve_tunnel.in_current_span());
    }
    connected.response
}

/// Serves the requests of an intercepted tunnel (an HTTP or SOCKS5 CONNECT's, from the
/// client at `peer`), in its span and namespace.
pub async fn serve_intercepted(
    ctx: Arc<Context>,
    connections: &Connections,
    intercepted: Intercepted,
    namespace: Option<String>,
    peer: Option<SocketAddr>,
) {
    let span = debug_span!("tunnel", origin = %intercepted.origin);
    let service = ProxyService::in_tunnel(ctx, &intercepted.origin, namespace, peer);
    let serving = connections.serve(intercepted.stream, service.handler());
    serving.instrument(span).await;
}

/// The handler of a client connection (from `peer`, when it came over a socket): `answer`
/// for each request.
pub fn handler(
    ctx: Arc<Context>,
    connections: Connections,
    peer: Option<SocketAddr>,
) -> impl Fn(
    Request<Incoming>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<ProxyBody>> + Send>>
       + Send
       + Sync
       + 'static {
    move |request| Box::pin(answer(ctx.clone(), connections.clone(), peer, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, B, C, D, F>(_: impl Fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_requests_future_stays_small_to_move() {
        // Built and moved into its box for every request, hits included: the paths a hit
        // does not take (fills, forwarding, CONNECT, upgrades) are boxed where they start.
        let size = returned_size(answer);
        assert!(size <= 6 * 1024, "{size} bytes");
    }
}
