//! What an origin exchange that went wrong is called when the client is told: an answer
//! framed two ways (response splitting), and every error of the origin client sorted by its
//! deepest cause — a loop to the proxy itself, an upstream proxy that failed, TLS, a malformed
//! answer, a timeout, a refused connection.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use http::Response;
use hyper::body::Incoming;

use super::chain::ChainError;
use super::own_addrs::SelfConnect;
use crate::proxy::error::ProxyError;

/// Refuses an answer that frames its body both by `Content-Length` and by
/// `Transfer-Encoding` (RFC 9112 §6.3: a sign of response splitting): which bytes belong to it
/// cannot be trusted, so none of it is passed on or stored.
pub(super) fn check_framing(
    origin: String,
    response: Response<Incoming>,
) -> Result<Response<Incoming>, ProxyError> {
    let headers = response.headers();
    if headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH)
    {
        return Err(ProxyError::OriginFraming {
            origin,
            detail: "both Content-Length and Transfer-Encoding frame the body".to_owned(),
        });
    }
    if headers.get_all(http::header::CONTENT_LENGTH).iter().count() > 1 {
        let values: Vec<&[u8]> = headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if values.windows(2).any(|pair| pair[0] != pair[1]) {
            return Err(ProxyError::OriginFraming {
                origin,
                detail: "conflicting Content-Length values".to_owned(),
            });
        }
    }
    Ok(response)
}

/// Turns a client error into what the client is told: the deepest cause names it best.
pub(super) fn classify(
    origin: String,
    error: &hyper_util::client::legacy::Error,
    connect_timeout: Duration,
) -> ProxyError {
    let causes = causes(error);
    if let Some(refused) = causes
        .iter()
        .find_map(|cause| cause.downcast_ref::<SelfConnect>())
    {
        return ProxyError::Loop {
            target: refused.target.to_string(),
        };
    }
    // hyper reports the request body failing as a "user" error whose cause is that body's
    // own error: the client's body (a malformed chunk, a client gone mid-upload), not the
    // origin, is at fault.
    let client_body = std::iter::once(error as &(dyn StdError + 'static))
        .chain(causes.iter().copied())
        .filter_map(|cause| cause.downcast_ref::<hyper::Error>())
        .find(|e| e.is_user() && e.source().is_some_and(|s| s.is::<hyper::Error>()));
    if let Some(body) = client_body {
        let detail = body
            .source()
            .map_or_else(|| body.to_string(), ToString::to_string);
        return ProxyError::BadRequest(format!("the request body could not be read: {detail}"));
    }
    if let Some(chain) = causes
        .iter()
        .find_map(|cause| cause.downcast_ref::<ChainError>())
    {
        return ProxyError::UpstreamProxy {
            proxy: chain.proxy.clone(),
            detail: chain.detail.clone(),
        };
    }
    if let Some(tls) = causes
        .iter()
        .find_map(|cause| cause.downcast_ref::<rustls::Error>())
    {
        return ProxyError::Tls {
            origin,
            detail: tls.to_string(),
        };
    }
    if let Some(parse) = std::iter::once(error as &(dyn StdError + 'static))
        .chain(causes.iter().copied())
        .filter_map(|cause| cause.downcast_ref::<hyper::Error>())
        .find(|e| e.is_parse() || e.is_parse_too_large() || e.is_parse_status())
    {
        return ProxyError::OriginFraming {
            origin,
            detail: parse.to_string(),
        };
    }
    let timed_out = causes
        .iter()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::TimedOut);
    if timed_out {
        return ProxyError::Timeout {
            origin,
            after: connect_timeout,
        };
    }
    let detail = causes
        .last()
        .map_or_else(|| error.to_string(), |cause| cause.to_string());
    if error.is_connect() {
        ProxyError::Connect { origin, detail }
    } else {
        ProxyError::Upstream { origin, detail }
    }
}

/// Every error in the chain below `error`, looking inside the boxes and `io::Error`s that
/// connectors wrap their causes in (`io::Error::source` skips the error it wraps).
fn causes<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut found = Vec::new();
    let mut next = error.source();
    while let Some(cause) = next {
        found.push(cause);
        next = match cause
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => cause.source(),
        };
    }
    found
}
