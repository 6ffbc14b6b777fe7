//! The admin API, on its own listener (127.0.0.1 by default): stats, Prometheus metrics,
//! assets, entries, purge, the CA certificate and how to trust it, and a live status page.
//! With a token configured every data endpoint wants `Authorization: Bearer <token>`; without
//! one, only loopback clients are served.

mod api;
pub mod client;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::body::{full, ProxyBody};
use crate::listener::Connections;
use crate::proxy::Context;

/// Largest request body the admin API reads (a purge selector).
const MAX_BODY: usize = 64 * 1024;

/// Serves the admin API on `listener` until the future is dropped. Its connections live by the
/// same deadlines as the proxy's.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, connections: Connections) {
    let local = listener.local_addr().ok();
    connections
        .accept(listener, |stream, peer| {
            let ctx = ctx.clone();
            let serving = connections.serve(stream, move |request| {
                let ctx = ctx.clone();
                async move { handle(&ctx, peer, local, request).await }
            });
            connections.spawn_client(peer, serving);
        })
        .await;
}

/// Serves the admin API on one connection given as a byte stream, as if from a loopback
/// client to a listener on `local`. For in-process drivers such as the fuzzer.
pub async fn serve_stream<I>(ctx: Arc<Context>, connections: Connections, io: I, local: SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = SocketAddr::from(([127, 0, 0, 1], 1));
    connections
        .serve(io, move |request| {
            let ctx = ctx.clone();
            async move { handle(&ctx, peer, Some(local), request).await }
        })
        .await;
}

async fn handle(
    ctx: &Context,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let token = ctx.config.admin.token.as_deref();
    if token.is_none() && !peer.ip().is_loopback() {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API serves loopback clients only, unless --admin-token is set",
        );
    }
    let names = AdminNames {
        local,
        configured: &ctx.config.admin.hosts,
    };
    if !request_host(&request).is_some_and(|host| names.names(host)) {
        // A web page may resolve its own name to 127.0.0.1 (DNS rebinding): the admin API
        // answers only requests that are addressed to it.
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "the admin API answers only requests for its own host (127.0.0.1, localhost, [::1], its address, admin.hosts)",
        );
    }
    let path = request.uri().path().to_owned();
    let public = matches!(path.as_str(), "/" | "/ca" | "/ca.pem");
    if !public && !authorized(token, request.headers().get(AUTHORIZATION)) {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if let Err((status, why)) = same_site_write(&request, &names) {
            return error(status, why);
        }
    }
    let query = request.uri().query().unwrap_or("").to_owned();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/") => pages::status_page(),
        (Method::GET, "/ca" | "/ca.pem") => crate::ca::page::response(&ctx.ca, &path),
        (Method::GET, "/stats") => match api::namespace_in(&query) {
            Ok(None) => json(&api::stats(ctx).await),
            Ok(Some(name)) => json(&api::namespace_stats(ctx, &name).await),
            Err(message) => error(StatusCode::BAD_REQUEST, &message),
        },
        (Method::GET, "/activity") => json(&api::activity(ctx)),
        (Method::GET, "/metrics") => text(
            api::metrics(ctx).await,
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (Method::GET, "/assets") => {
            json(&serde_json::json!({ "assets": ctx.cache.assets().await }))
        }
        (Method::GET, "/entries") => match api::entries(ctx, &query).await {
            Ok(entries) => json(&entries),
            Err(message) => error(StatusCode::BAD_REQUEST, &message),
        },
        (Method::POST, "/purge") => match read_json(request).await.and_then(api::purge_selection) {
            Ok((what, namespace)) => json(&ctx.cache.purge(what, namespace).await),
            Err(message) => error(StatusCode::BAD_REQUEST, &message),
        },
        (
            _,
            "/" | "/ca" | "/ca.pem" | "/stats" | "/activity" | "/metrics" | "/assets" | "/entries"
            | "/purge",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
        _ => error(StatusCode::NOT_FOUND, &format!("no admin endpoint {path}")),
    }
}

/// Constant-time check of a bearer token (the scheme's name in any case, RFC 6750); any
/// request passes when no token is configured.
fn authorized(token: Option<&str>, header: Option<&HeaderValue>) -> bool {
    let Some(token) = token else { return true };
    let given = header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, credentials)| credentials);
    crate::auth::same_secret(given.trim().as_bytes(), token.as_bytes())
}

/// The names the admin API answers to.
struct AdminNames<'a> {
    /// Where it listens.
    local: Option<SocketAddr>,
    /// `admin.hosts`.
    configured: &'a [String],
}

impl AdminNames<'_> {
    /// Whether `host` (a `Host` value, with or without a port) names the admin API.
    fn names(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        let own_ip = self.local.map(|addr| match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        });
        ["localhost", "127.0.0.1", "[::1]"].contains(&name.as_str())
            || own_ip.as_deref() == Some(name.as_str())
            || self
                .configured
                .iter()
                .any(|configured| configured.eq_ignore_ascii_case(&name))
    }

    /// Whether an `Origin` is the admin API's own: `http`, a name of it, its port.
    fn is_own_origin(&self, origin: &str) -> bool {
        let Some(rest) = origin.strip_prefix("http://") else {
            return false;
        };
        let port = self.local.map(|addr| addr.port());
        let written_port = rest
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        self.names(rest) && written_port == port
    }
}

/// The host a request is addressed to: the authority of an HTTP/2 request, else `Host`.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(HOST)?.to_str().ok())
}

/// `host` without its port (`[::1]:8081` -> `[::1]`, `localhost:8081` -> `localhost`).
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Refuses a state-changing request a web page could send: it must be JSON (a page cannot
/// send that cross-site without the browser asking first), and a present `Origin` must be
/// the admin API's own.
fn same_site_write<B>(
    request: &Request<B>,
    names: &AdminNames<'_>,
) -> Result<(), (StatusCode, &'static str)> {
    let json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "changes want Content-Type: application/json",
        ));
    }
    let origin = request
        .headers()
        .get(ORIGIN)
        .map(|v| v.to_str().unwrap_or(""));
    if origin.is_some_and(|origin| !names.is_own_origin(origin)) {
        return Err((
            StatusCode::FORBIDDEN,
            "changes are refused from another site's page (Origin)",
        ));
    }
    Ok(())
}

async fn read_json(request: Request<Incoming>) -> Result<serde_json::Value, String> {
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the request body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("malformed JSON: {e}"))
}

fn json(value: &impl serde::Serialize) -> Response<ProxyBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    text_bytes(Bytes::from(body), "application/json")
}

fn text(body: String, content_type: &'static str) -> Response<ProxyBody> {
    text_bytes(Bytes::from(body), content_type)
}

fn text_bytes(body: Bytes, content_type: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = json(&serde_json::json!({ "error": message }));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked() {
        let header = |v: &'static str| HeaderValue::from_static(v);
        assert!(authorized(None, None));
        assert!(authorized(Some("s3cret"), Some(&header("Bearer s3cret"))));
        assert!(!authorized(Some("s3cret"), Some(&header("Bearer s3cre"))));
        assert!(!authorized(Some("s3cret"), Some(&header("Basic s3cret"))));
        assert!(!authorized(Some("s3cret"), None));
        assert!(authorized(Some("s3cret"), Some(&header("bearer s3cret"))));
        assert!(authorized(Some("s3cret"), Some(&header("BEARER s3cret"))));
    }

    #[test]
    fn only_the_admins_own_names_and_origin_are_answered() {
        let local: SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        let configured = ["proxy.internal".to_owned()];
        let names = AdminNames {
            local: Some(local),
            configured: &configured,
        };
        for host in [
            "127.0.0.1:8081",
            "localhost",
            "LOCALHOST:8081",
            "[::1]:8081",
            "proxy.internal",
        ] {
            assert!(names.names(host), "{host}");
        }
        for host in [
            "evil.test",
            "evil.test:8081",
            "127.0.0.1.nip.io:8081",
            "0.0.0.0:8081",
            "",
        ] {
            assert!(!names.names(host), "{host}");
        }
        assert!(names.is_own_origin("http://127.0.0.1:8081"));
        assert!(names.is_own_origin("http://localhost:8081"));
        for origin in [
            "http://evil.test",
            "http://127.0.0.1:8080",
            "null",
            "https://localhost:8081",
        ] {
            assert!(!names.is_own_origin(origin), "{origin}");
        }
    }
}
