//! The CA certificate, and the page on trusting it in browsers and clients: served by the
//! admin API and, through the proxy port, at `http://asset-proxy.local/`.

use bytes::Bytes;
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{HeaderValue, Response};

use super::CertAuthority;
use crate::body::{full, html_page, ProxyBody};

const CA_PAGE: &str = include_str!("page.html");

/// The host name that, through the proxy port, answers the CA page instead of an origin.
pub const CA_HOST: &str = "asset-proxy.local";

/// `/ca.pem`: the certificate; anything else: the page explaining how to trust it.
pub fn response(ca: &CertAuthority, path: &str) -> Response<ProxyBody> {
    if path == "/ca.pem" {
        let mut response = Response::new(full(Bytes::from(ca.cert_pem().to_owned())));
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
        &html_escape(&ca.cert_path().display().to_string()),
    );
    html_page(page)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
