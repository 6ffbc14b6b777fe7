//! Errors a request can meet, and the one place they become responses (400, 500, 502, 504) with a
//! short plain-text body saying what failed.

use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::body::{full, ProxyBody};
use crate::proxy::headers::{CacheStatus, CACHE_STATUS};

/// Why the proxy could not answer a request with an origin's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client's request cannot be proxied.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The origin's host is not in `upstream.allow_hosts`.
    #[error("{host} is not in upstream.allow_hosts; the proxy does not contact it")]
    HostNotAllowed {
        /// The refused host.
        host: String,
    },
    /// A block rule or the blocklist answers it, contacting nothing.
    #[error("{target} is blocked by {by}")]
    Blocked {
        /// The URL or host.
        target: String,
        /// `a block rule` or `the blocklist`.
        by: &'static str,
        /// The status to answer with.
        status: StatusCode,
    },
    /// The request's target is the proxy itself.
    #[error("{target} is this proxy itself; the request would loop")]
    Loop {
        /// `host:port`.
        target: String,
    },
    /// The proxy runs offline and does not hold the URL.
    #[error("offline: {url} is not in the cache")]
    Offline {
        /// The URL asked for.
        url: String,
    },
    /// The request asked for a stored answer only (`Cache-Control: only-if-cached`) and none
    /// fresh is held.
    #[error("{url} is not in the cache fresh, and the request takes only a stored answer (only-if-cached)")]
    NotCached {
        /// The URL asked for.
        url: String,
    },
    /// No TCP connection to the origin could be made.
    #[error("cannot connect to {origin}: {detail}")]
    Connect {
        /// `host:port`.
        origin: String,
        /// Why (refused, no route, DNS...).
        detail: String,
    },
    /// The upstream proxy refused, failed or did not answer.
    #[error("upstream proxy {proxy}: {detail}")]
    UpstreamProxy {
        /// The proxy, without its password.
        proxy: String,
        /// What went wrong.
        detail: String,
    },
    /// The TLS handshake with the origin failed (certificate, protocol).

    #[error("TLS handshake with {origin} failed: {detail}")]
    Tls {
        /// `host:port`.
        origin: String,
        /// The TLS error.
        detail: String,
    },
    /// The origin did not answer in time.
    #[error("{origin} did not answer within {}s", .after.as_secs())]
    Timeout {
        /// `host:port`.
        origin: String,
        /// The limit.
        after: Duration,
    },
    /// The origin's answer is not valid HTTP, or frames its body in conflicting ways.
    #[error("{origin} sent an invalid response: {detail}")]
    OriginFraming {
        /// `host:port`.
        origin: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A cached entry turned out damaged as it was being answered (its stored frame does not
    /// decode to its body); it is dropped, and the next request fetches it again.
    #[error("the cached copy of {url} is damaged; it was dropped, ask again")]
    DamagedEntry {
        /// The URL asked for.
        url: String,
    },
    /// The origin connection failed otherwise.
    #[error("request to {origin} failed: {detail}")]
    Upstream {
        /// `host:port`.
        origin: String,
        /// What happened.
        detail: String,
    },
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HostNotAllowed { .. } => StatusCode::FORBIDDEN,
            ProxyError::Blocked { status, .. } => *status,
            ProxyError::Loop { .. } => StatusCode::LOOP_DETECTED,
            ProxyError::DamagedEntry { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Timeout { .. }
            | ProxyError::Offline { .. }
            | ProxyError::NotCached { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Connect { .. }
            | ProxyError::Tls { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::OriginFraming { .. }
            | ProxyError::UpstreamProxy { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short name for headers, logs and stats.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::HostNotAllowed { .. } => "host-not-allowed",
            ProxyError::Blocked { .. } => "blocked",
            ProxyError::Loop { .. } => "loop",
            ProxyError::Offline { .. } => "offline",
            ProxyError::NotCached { .. } => "only-if-cached",
            ProxyError::DamagedEntry { .. } => "cache-damaged",
            ProxyError::Connect { .. } => "upstream-connect",
            ProxyError::Tls { .. } => "upstream-tls",
            ProxyError::Timeout { .. } => "upstream-timeout",
            ProxyError::Upstream { .. } => "upstream-error",
            ProxyError::OriginFraming { .. } => "upstream-invalid",
            ProxyError::UpstreamProxy { .. } => "upstream-proxy",
        }
    }

    /// What the cache did: refused the request, or met a failing origin.
    pub fn cache_status(&self) -> CacheStatus {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HostNotAllowed { .. }
            | ProxyError::Blocked { .. }
            | ProxyError::Loop { .. } => CacheStatus::Refused(self.kind()),
            _ => CacheStatus::Error(self.kind()),
        }
    }

    /// The response for this error.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let cache_status = self.cache_status().header_value();
        let close = matches!(self, ProxyError::OriginFraming { .. });
        // 204 and 304 carry no body.
        let text = if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
            String::new()
        } else {
            format!("asset-proxy: {self}\n")
        };
        let mut response = Response::new(full(text));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(value) = HeaderValue::from_str(&cache_status) {
            headers.insert(CACHE_STATUS, value);
        }
        if close {
            // Whatever else the origin sent on that connection is not to be trusted.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
