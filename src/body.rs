//! The body type of every response the proxy sends, and constructors for small ones.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: cached bytes, a streamed origin body, or a message.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body of these bytes; no copy is made.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// An HTML page as a response (the CA page, the status page).
pub fn html_page(page: String) -> http::Response<ProxyBody> {
    let mut response = http::Response::new(full(page));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
