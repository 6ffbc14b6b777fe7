//! The admin API's page: the live status page (static: it fetches its figures itself).

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};

use crate::body::{full, ProxyBody};

const STATUS_PAGE: &str = include_str!("status.html");
/// The live status page (static: it fetches its figures itself).
pub fn status_page() -> Response<ProxyBody> {
    html(STATUS_PAGE.to_owned())
}

fn html(page: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(page)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
