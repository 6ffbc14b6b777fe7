//! The admin API, on its own listener (127.0.0.1 by default): stats, Prometheus metrics,
//! assets, entries, purge, the CA certificate and how to trust it, and a live status page.
//! With a token configured every data endpoint wants `Authorization: Bearer <token>`; without
//! one, only loopback clients are served.

mod api;
pub mod client;
mod pages;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::proxy::body::{full, ProxyBody};
use crate::proxy::Context;

pub use pages::{ca_response, CA_HOST};

/// Largest request body the admin API reads (a purge selector).
const MAX_BODY: usize = 64 * 1024;

/// Serves the admin API on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(error = %error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        ctx.connections.clone().spawn(async move {
            let service = service_fn(move |request| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, peer, request).await) }
            });
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %error, "admin connection ended with an error");
            }
        });
    }
}

async fn handle(
    ctx: &Context,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let token = ctx.config.admin.token.as_deref();
    if token.is_none() && !peer.ip().is_loopback() {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API serves loopback clients only, unless --admin-token is set",
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
    let query = request.uri().query().unwrap_or("").to_owned();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/") => pages::status_page(),
        (Method::GET, "/ca" | "/ca.pem") => ca_response(ctx, &path),
        (Method::GET, "/stats") => json(&api::stats(ctx).await),
        (Method::GET, "/activity") => json(&api::activity(ctx)),
        (Method::GET, "/metrics") => text(api::metrics(ctx).await, "text/plain; version=0.0.4; charset=utf-8"),
        (Method::GET, "/assets") => json(&serde_json::json!({ "assets": ctx.cache.assets().await })),
        (Method::GET, "/entries") => json(&api::entries(ctx, &query).await),
        (Method::POST, "/purge") => match read_json(request).await {
            Ok(body) => match serde_json::from_value(body) {
                Ok(what) => json(&ctx.cache.purge(what).await),
                Err(e) => error(
                    StatusCode::BAD_REQUEST,
                    &format!("purge wants one of {{\"url\"}}, {{\"prefix\"}}, {{\"host\"}}, {{\"asset\"}}, {{\"all\": true}}: {e}"),
                ),
            },
            Err(message) => error(StatusCode::BAD_REQUEST, &message),
        },
        (_, "/" | "/ca" | "/ca.pem" | "/stats" | "/activity" | "/metrics" | "/assets" | "/entries" | "/purge") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        _ => error(StatusCode::NOT_FOUND, &format!("no admin endpoint {path}")),
    }
}

/// Constant-time check of a bearer token; any request passes when no token is configured.
fn authorized(token: Option<&str>, header: Option<&HeaderValue>) -> bool {
    let Some(token) = token else { return true };
    let given = header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    crate::auth::same_secret(given.trim().as_bytes(), token.as_bytes())
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
    }
}
