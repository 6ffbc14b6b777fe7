//! HTTP/1.1 upgrades (WebSockets, RFC 6455 §4): the request goes to the origin on a
//! connection of its own, with its `Upgrade`, `Connection: Upgrade` and `Sec-WebSocket-*`
//! headers; a `101` hands both connections over to a byte-for-byte relay until either side
//! closes or nothing moves for `clients.websocket_idle_secs`. Any other answer is passed back
//! as it is. Never cached.

use std::sync::Arc;

use http::header::{CONNECTION, HOST, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, info};
use url::Url;

use super::headers::{add_via, host_of, remove_hop_by_hop, CacheStatus};
use super::splice::relay_registered;
use super::upstream::Route;
use super::{Context, CountedBody};
use crate::body::ProxyBody;
use crate::cache::http::policy::NoCacheReason;
use crate::loggable;
use crate::proxy::error::ProxyError;

/// What the cache did with every upgrade request.
pub const STATUS: CacheStatus = CacheStatus::Bypass(NoCacheReason::Upgrade);

/// Whether a request asks to upgrade its connection (`Connection: upgrade` and `Upgrade`) to
/// a protocol the proxy relays. `h2c` is not one: that upgrade is dropped as hop-by-hop, and
/// the request is served as HTTP/1.1 (RFC 9113 §3.1 deprecates it).
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    let relayed = headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|protocol| {
            !protocol.trim().is_empty() && !protocol.trim().eq_ignore_ascii_case("h2c")
        });
    request.version() <= http::Version::HTTP_11
        && relayed
        && has_token(headers, CONNECTION, "upgrade")
}

/// Sends an upgrade request to the origin of `url` and, on a `101`, relays the two upgraded
/// connections in the background.
pub async fn relay(
    ctx: Arc<Context>,
    mut request: Request<Incoming>,
    url: &Url,
) -> (Response<ProxyBody>, CacheStatus) {
    let refused = |error: ProxyError| {
        let status = error.cache_status();
        (error.into_response(), status)
    };
    if ctx.policy().offline() {
        return refused(ProxyError::Offline {
            url: loggable::url(url.as_str()).into_owned(),
        });
    }
    let client_upgrade = hyper::upgrade::on(&mut request);
    let client_version = request.version();
    let outgoing = match origin_request(request, url) {
        Ok(outgoing) => outgoing,
        Err(error) => return refused(error),
    };
    let mut response = match send(&ctx, outgoing, url).await {
        Ok(response) => response,
        Err(error) => {
            ctx.stats.upstream_errors.inc();
            tracing::warn!(error = %error, url = %loggable::url(url.as_str()), "upgrade request failed");
            return refused(error);
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let chained = matches!(ctx.route(url), Route::Via(_));
        let body = CountedBody::new(body, ctx.stats.clone(), chained)
            .map_err(Into::into)
            .boxed();
        return (Response::from_parts(parts, body), STATUS);
    }
    let origin_upgrade = hyper::upgrade::on(&mut response);
    let (parts, _) = response.into_parts();
    let mut answer = Response::new(crate::body::empty());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *answer.headers_mut() = switching_headers(parts.headers);
    let (socket_ctx, socket_url) = (ctx.clone(), url.to_string());
    ctx.tasks.spawn(async move {
        let socket = Socket {
            url: socket_url,
            client_version,
        };
        run_socket(socket_ctx, socket, client_upgrade, origin_upgrade).await;
    });
    (answer, STATUS)
}

/// The request for the origin: origin-form target, `Host` from the URL, end-to-end headers
/// plus the upgrade it asks for.
fn origin_request(request: Request<Incoming>, url: &Url) -> Result<Request<Incoming>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let upgrade: Vec<HeaderValue> = parts.headers.get_all(UPGRADE).iter().cloned().collect();
    remove_hop_by_hop(&mut parts.headers);
    for value in upgrade {
        parts.headers.append(UPGRADE, value);
    }
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    let host = host_of(url).ok_or_else(|| ProxyError::BadRequest("URL has no host".to_owned()))?;
    parts.headers.insert(HOST, host);
    add_via(&mut parts.headers, parts.version);
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    parts.uri = target
        .parse()
        .map_err(|e| ProxyError::BadRequest(format!("invalid URL: {e}")))?;
    parts.version = http::Version::HTTP_11;
    Ok(Request::from_parts(parts, body))
}

/// Sends the request on a connection of its own (direct or through the upstream proxy) and
/// waits for the answer's head.
async fn send(
    ctx: &Context,
    request: Request<Incoming>,
    url: &Url,
) -> Result<Response<Incoming>, ProxyError> {
    let host = url
        .host_str()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let origin = format!("{host}:{port}");
    let tls = url.scheme() == "https";
    let stream = ctx
        .upstream
        .dial_http1(host, port, tls, ctx.route(url))
        .await?;
    let failed = |detail: String| ProxyError::Upstream {
        origin: origin.clone(),
        detail,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            debug!(error = %error, "origin connection of an upgrade ended with an error");
        }
    });
    let limit = ctx.upstream.response_timeout();
    match tokio::time::timeout(limit, sender.send_request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(failed(error.to_string())),
        Err(_) => Err(ProxyError::Timeout {
            origin,
            after: limit,
        }),
    }
}

/// The origin's `101` headers for the client: what it switched to, and its handshake answer.
fn switching_headers(mut headers: HeaderMap) -> HeaderMap {
    let upgrade: Vec<HeaderValue> = headers.get_all(UPGRADE).iter().cloned().collect();
    remove_hop_by_hop(&mut headers);
    for value in upgrade {
        headers.append(UPGRADE, value);
    }
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers
}

/// What the log line of a socket names.
struct Socket {
    url: String,
    /// The protocol the client asked for the upgrade in.
    client_version: http::Version,
}

/// Waits for both sides to switch, then relays until the socket ends; one log line.
async fn run_socket(ctx: Arc<Context>, socket: Socket, client: OnUpgrade, origin: OnUpgrade) {
    let url = &socket.url;
    let (client, origin) = match tokio::try_join!(client, origin) {
        Ok(both) => both,
        Err(error) => {
            debug!(error = %error, url = %url, "upgrade did not complete");
            return;
        }
    };
    let stats = &ctx.stats;
    stats.websockets_opened.inc();
    stats.websockets_open.inc();
    let spliced = relay_registered(&ctx, TokioIo::new(client), TokioIo::new(origin)).await;
    stats.websockets_open.dec();
    stats.websocket_bytes_up.add(spliced.up);
    stats.websocket_bytes_down.add(spliced.down);
    info!(
        url = %loggable::url(url.as_str()),
        status = 101,
        client = ?socket.client_version,
        secs = spliced.open.as_secs_f64(),
        bytes_up = spliced.up,
        bytes_down = spliced.down,
        end = spliced.end.as_str(),
        "websocket closed"
    );
}

/// Whether a comma-separated header has `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_recognised() {
        let request = |connection: Option<&'static str>, upgrade: Option<&'static str>| {
            let mut builder = Request::builder();
            if let Some(value) = connection {
                builder = builder.header(CONNECTION, value);
            }
            if let Some(value) = upgrade {
                builder = builder.header(UPGRADE, value);
            }
            builder.body(()).expect("request")
        };
        let cases = [
            (Some("Upgrade"), Some("websocket"), true),
            (Some("keep-alive, Upgrade"), Some("websocket"), true),
            (Some("keep-alive"), Some("websocket"), false),
            (Some("upgrade"), None, false),
            (None, Some("h2c"), false),
            (Some("Upgrade, HTTP2-Settings"), Some("h2c"), false),
        ];
        for (connection, upgrade, want) in cases {
            assert_eq!(
                is_upgrade(&request(connection, upgrade)),
                want,
                "{connection:?} {upgrade:?}"
            );
        }
    }

    #[test]
    fn switching_headers_keep_the_handshake() {
        let mut headers = HeaderMap::new();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            "sec-websocket-accept",
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        let kept = switching_headers(headers);
        let mut names: Vec<&str> = kept.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["connection", "sec-websocket-accept", "upgrade"]);
    }
}
