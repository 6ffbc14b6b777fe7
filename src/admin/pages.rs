//! The admin API's pages: the live status page, and the CA certificate with instructions on
//! trusting it (also answered through the proxy port at `http://asset-proxy.local/`).

use bytes::Bytes;
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{HeaderValue, Response};

use crate::proxy::body::{full, ProxyBody};
use crate::proxy::Context;

const STATUS_PAGE: &str = include_str!("status.html");
const CA_PAGE: &str = include_str!("ca.html");

/// The host name that, through the proxy port, answers the CA page instead of an origin.
pub const CA_HOST: &str = "asset-proxy.local";

/// The live status page (static: it fetches its figures itself).
pub fn status_page() -> Response<ProxyBody> {
    html(STATUS_PAGE.to_owned())
}

/// `/ca.pem`: the certificate; anything else: the page explaining how to trust it.
pub fn ca_response(ctx: &Context, path: &str) -> Response<ProxyBody> {
    if path == "/ca.pem" {
        let mut response = Response::new(full(Bytes::from(ctx.ca.cert_pem().to_owned())));
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-pem-file"),
        );
        headers.insert(
            CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"asset-proxy-ca.pem\""),
        );
        return response;
    }
    let page = CA_PAGE.replace(
        "{{CA_PATH}}",
        &html_escape(&ctx.ca.cert_path().display().to_string()),
    );
    html(page)
}

fn html(page: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(page)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
